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


def list_slow_to_end(head, req):
    """A list that, after its last row, waits for the file req["release"] (a minute at most)
    before it returns its tail: a function that takes its time to end."""
    import os

    from couch_named_python import get_row, send
    while (row := get_row()):
        send(str(row["key"]))
    deadline = time.monotonic() + 60
    while not os.path.exists(req["release"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "tail"


def fork_exits(doc):
    """Forks; the child calls sys.exit(0), which reaches the worker as a function's exception."""
    import os
    import sys
    if os.fork() == 0:
        sys.exit(0)
    yield doc["_id"], "parent"


def fork_returns(doc):
    """Forks; parent and child both go on and return a row."""
    import os
    os.fork()
    return [[doc["_id"], "row"]]


def fork_lingers(doc):
    """Forks; the child never returns to the worker: it writes its pid to doc["pid_file"] and
    sleeps (a daemon a function started), until the test kills it."""
    import os
    import time
    if os.fork() == 0:
        with open(doc["pid_file"] + ".tmp", "w") as out:
            out.write(str(os.getpid()))
        os.rename(doc["pid_file"] + ".tmp", doc["pid_file"])
        time.sleep(120)
        os._exit(0)
    yield doc["_id"], "parent"


def multiprocessing_pool(doc):
    """multiprocessing's fork children end with os._exit() and never return to the worker."""
    import multiprocessing
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        squares = pool.map(abs, [-doc["n"], -2 * doc["n"]])
    finally:
        pool.close()
        pool.join()
    yield doc["_id"], squares


def child_descriptors(doc):
    """The descriptors a child started with os.system() holds (beyond its stdio)."""
    import subprocess
    listing = subprocess.run(["sh", "-c", "ls /proc/$$/fd"], capture_output=True, text=True,
                             close_fds=False, check=True).stdout.split()
    yield doc["_id"], sorted(int(fd) for fd in listing if int(fd) > 2)


def list_forks(head, req):
    """Forks inside a list; parent and child both go on to read rows."""
    import os
    from couch_named_python import get_row, send
    os.fork()
    while (row := get_row()):
        send(f"{row['key']}\n")
    return "END\n"
