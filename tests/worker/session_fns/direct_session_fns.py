"""Functions for the direct-session tests: ones that never finish, and one whose @version the
test rewrites on disk."""
import time

from couch_named_python import version


def spins(doc):
    """An endless Python loop: only the watchdog can end it."""
    while True:
        pass


def sleeps_in_c(doc):
    """Stuck in C (the GIL released): only the watchdog can end it."""
    time.sleep(3600)
    yield doc["_id"], None


def naps(doc):
    """Finishes well within a one-second timeout."""
    time.sleep(0.05)
    yield doc["_id"], "rested"
