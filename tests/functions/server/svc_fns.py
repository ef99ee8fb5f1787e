"""Named functions for the service tests: ordinary ones, and ones that misbehave on purpose."""
import ctypes
import os
import select
import subprocess

from couch_named_python import Forbidden, Unauthorized, get_row, log, send, version
from os import system  # re-exported: must never be callable through this module

__all__ = ["system"]


@version(7)
def by_town(doc):
    if "town" in doc:
        yield doc["town"], doc.get("n")


def doubled(doc):
    log("doubling %s" % doc["_id"])
    return [(doc["_id"], doc["n"] * 2)]


def picky(doc):
    if doc["n"] % 3 == 0:
        raise ValueError("no multiples of three: %d" % doc["n"])
    yield doc["n"], None


def total(keys, values, rereduce):
    return sum(values)


def broken_reduce(keys, values, rereduce):
    raise RuntimeError("reduce is broken")


@version(3)
def guard(new, old, userctx, secobj):
    if new.get("reject") == "forbidden":
        raise Forbidden("not this one")
    if new.get("reject") == "unauthorized":
        raise Unauthorized("who are you")
    if new.get("reject") == "error":
        raise KeyError("oops")


def exits(doc):
    os._exit(3)


def segfaults(doc):
    ctypes.string_at(0)


def spins(doc):
    while True:
        pass


def hoards(doc):
    hoard = bytearray(4 << 30)
    yield len(hoard), None


# What a C library that leaks does: memory taken outside Python and kept, up to what the
# worker's cap leaves (malloc returns NULL then, and no MemoryError is raised).
_kept_outside_python = []


def fills_outside_python(doc):
    malloc = ctypes.CDLL(None).malloc
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    taken = 0
    while taken < (4 << 30):
        block = malloc(4 << 20)
        if not block:
            break
        ctypes.memset(block, 1, 4 << 20)  # resident, as a library's data is
        _kept_outside_python.append(block)
        taken += 4 << 20
    yield "taken_mib", taken >> 20


def writes_raw(doc):
    """Writes past Python's print: to the worker's descriptors, and from a subprocess."""
    os.write(1, ("raw out %s\n" % doc["_id"]).encode())
    os.write(2, b"raw err \x1b[31mred\n")
    subprocess.run(["echo", '{"level":"ERROR","msg":"forged %s"}' % doc["_id"]], check=True)
    yield doc["_id"], 1


def writes_long_raw(doc):
    """One line of doc["bytes"] bytes to the worker's stdout, then a short one."""
    os.write(1, b"y" * doc["bytes"] + b"\n")
    os.write(1, b"end of the long line\n")
    yield doc["_id"], 1


def takes_32_mib(doc):
    yield doc["_id"], len(bytearray(32 << 20))


def size_of(doc):
    yield doc["_id"], len(doc["blob"])


def widens(doc):
    """One row whose value is doc["width"] bytes: an answer many times its request."""
    yield doc["_id"], "x" * doc["width"]


def starts_a_child(doc):
    """Starts a process that holds the FIFO doc["held"] open for writing while it lives (the
    test's reader sees the hang-up when it ends), then waits as waits() does."""
    with open(doc["held"], "w") as held:
        subprocess.Popen(["sleep", "600"], stdout=held)
    yield from waits(doc)


def ignores_server_gone_and_starts_a_child(doc):
    """starts_a_child, having first set the signal the kernel sends a worker whose server died
    (SIGUSR2) to be ignored, as a library might take it over."""
    import signal
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    yield from starts_a_child(doc)


def starts_a_child_and_dies(doc):
    """Starts a process that holds the FIFO doc["held"] open while it lives, then kills its
    own worker, as a crash would."""
    with open(doc["held"], "w") as held:
        subprocess.Popen(["sleep", "600"], stdout=held)
    os.kill(os.getpid(), 9)
    yield "never", None


def waits(doc):
    """Opens doc["ready"] for writing (the test's open for reading returns: the call has reached
    the worker), then blocks until the test opens doc["release"] for writing and closes it.

    The release FIFO is opened for reading first, without blocking, so that from the moment
    "ready" opens the worker is a reader of it: a test's non-blocking open of "release" for
    writing then succeeds while the worker lives (ENXIO only if it died), with no window in
    which the function has not reached its open yet. select() returns once a writer has come
    and gone (Linux reports the hang-up only after a writer has opened the FIFO)."""
    release = os.open(doc["release"], os.O_RDONLY | os.O_NONBLOCK)
    try:
        open(doc["ready"], "w").close()
        select.select([release], [], [])
    finally:
        os.close(release)
    yield "released", doc["_id"]


def pid(doc):
    yield "pid", os.getpid()


def process_group(doc):
    """Whether the worker leads a process group of its own, and whether a process it starts
    would inherit SIGTERM, SIGINT or SIGQUIT ignored (a handler is reset by exec, SIG_IGN is
    not)."""
    import signal
    yield "own_group", os.getpgrp() == os.getpid()
    for name in ("SIGTERM", "SIGINT", "SIGQUIT"):
        ignored = signal.getsignal(getattr(signal, name)) == signal.SIG_IGN
        yield name, "ignored" if ignored else "not ignored"


def listed(head, req):
    """A list function: "head", each row's id, then "tail"."""
    send("head")
    while (row := get_row()) is not None:
        send(row["id"])
    return "tail"


def echo(doc):
    """The whole document back as the value: many names of it answer many times the request."""
    yield doc["_id"], doc


def prints(doc):
    """Prints as a function being debugged does: to stdout, to stderr, and a warning."""
    import sys
    import warnings
    print("printed", doc["_id"])
    print("to stderr", doc["_id"], file=sys.stderr)
    warnings.warn("careful with " + doc["_id"])
    yield doc["_id"], 1


def writes_bytes(doc):
    """Writes to sys.stdout.buffer and sys.stderr.buffer as code written for a plain stderr
    does, a byte that is not UTF-8 among them, and says what the streams answer."""
    import sys
    sys.stdout.buffer.write(("bytes out %s\n" % doc["_id"]).encode())
    sys.stderr.buffer.write(b"bytes err \xff " + doc["_id"].encode() + b"\n")
    sys.stderr.buffer.flush()
    yield doc["_id"], {
        "fileno": [sys.stdout.fileno(), sys.stderr.fileno(), sys.stderr.buffer.fileno()],
        "isatty": sys.stderr.isatty(),
        "encoding": sys.stderr.encoding,
        "errors": sys.stderr.errors,
    }
