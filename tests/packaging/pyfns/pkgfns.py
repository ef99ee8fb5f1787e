"""Functions for the packaging tests: a quick one, and one that waits for the test."""


def by_n(doc):
    yield doc["n"], doc["_id"]


def notify_socket(doc):
    """What the worker's environment says of systemd's notify socket."""
    import os
    yield os.environ.get("NOTIFY_SOCKET", "unset"), doc["_id"]


def waits(doc):
    """Opens doc["ready"] for writing (the test's open for reading returns: the call has reached
    the worker), then blocks until the test writes to doc["release"]."""
    open(doc["ready"], "w").close()
    with open(doc["release"]) as f:
        f.read()
    yield "released", doc["_id"]
