"""Functions for the scale-out test and the load benchmark. Each says which replica ran it (the
module replica_name, which each replica finds on a --python-path of its own), so the test can
tell who answered a call; and a document carrying "park" stops, on replica r1 only, in the
first call of its kind there: that call is then in flight on r1 for as long as the test likes."""
import os
import threading
import time

from couch_named_python import Forbidden, log

try:
    from replica_name import NAME as REPLICA
except ImportError:  # the load benchmark's single replica
    REPLICA = "r0"


def _park_if_asked(doc):
    """On r1, the first document of each park kind writes its id to <park>/<kind>.fifo (the test
    reads it: the call is in this worker) and never returns; the replica is killed under it."""
    park = doc.get("park")
    if not park or REPLICA != "r1":
        return
    kind = doc["park_kind"]
    try:
        os.close(os.open(os.path.join(park, kind + ".token"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return  # one call of this kind is already parked here
    with open(os.path.join(park, kind + ".fifo"), "w") as fifo:
        fifo.write(doc["_id"] + "\n")
    threading.Event().wait()


def triple(doc):
    """Map: key 3n+1, value [replica, id]."""
    _park_if_asked(doc)
    yield doc["n"] * 3 + 1, [REPLICA, doc["_id"]]


def slow_triple(doc):
    """Map: triple, after `seconds` of work (a long command: the replica writes nothing about it
    to its stream meanwhile but heartbeats)."""
    time.sleep(doc.get("seconds", 0))
    yield from triple(doc)


def check(new_doc, old_doc, user_ctx, sec_obj):
    """Validate: a multiple of 5 is forbidden; the replica is in the log line."""
    _park_if_asked(new_doc)
    log("served by " + REPLICA)
    if new_doc["n"] % 5 == 0:
        raise Forbidden("n=%d is a multiple of 5" % new_doc["n"])


def crashes(doc):
    """Map: the worker exits at once, as a request that crashes workers would make it."""
    os._exit(3)
