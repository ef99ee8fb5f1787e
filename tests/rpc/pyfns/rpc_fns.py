"""Functions for the RPC cancellation tests: slow ones that say when they start."""
import time

from couch_named_python import Forbidden


def _started(doc):
    # The test reads the other end of this FIFO: one byte says the function is running.
    path = doc.get("signal") if isinstance(doc, dict) else None
    if path:
        with open(path, "w") as fifo:
            fifo.write("x")


def slow_map(doc):
    _started(doc)
    time.sleep(0.01)
    yield doc["_id"], 1


def slow_validate(new, old, userctx, secobj):
    _started(new)
    time.sleep(600)


def quick_validate(new, old, userctx, secobj):
    if "town" not in new:
        raise Forbidden("no town")
