"""A stand-in for the cnp-worker process (the session pool tests use it): answers every task on
fd 3 with a Reply whose resolve is set (what a pool's start-up handshake waits for), with no
Python start-up cost to make the tests slow.

With --announce-bytes=N it answers every task but the handshake (a Resolve of nothing) as a
worker that ignores its task's answer limit would: a frame header announcing N bytes, then
bytes until the server stops reading (it is killed then).

Every reply echoes its task's sequence number (worker.proto: Task.sequence, Reply.sequence), as
cnp-worker's do; with --stale-replies each reply but the handshake's echoes the task before's
instead, as a late reply (a forked child's, say) would. With --refuse-sessions it answers a
DirectSession task with a Failure BAD_INPUT, as a worker that cannot serve one does before it
touches the pipes. With --grow-on-sigusr1-mib=N it maps N MiB more each time it gets SIGUSR1
(memory a library took and kept, for the pool's memory watch). With --log-lines=N it sends N
interim log lines (Reply.task_log, "line 0", ...) before each reply but the handshake's, all in
one write with the reply, as a worker whose function logged quickly would."""

import mmap
import os
import signal
import struct
import sys

# Beside this file, which a test that runs the stand-in lists in its data too; found from here
# also when the stand-in is run through runpy or copied elsewhere with it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from session_wire import read_varint, varint  # noqa: E402

TASK_RESOLVE, TASK_DIRECT_SESSION, TASK_SEQUENCE = 5, 8, 12
REPLY_FAILURE, REPLY_SEQUENCE, REPLY_TASK_LOG = 7, 16, 17
FAILURE_BAD_INPUT = 5


def top_level_fields(data):
    """{field number: last value} of a serialized message: an int for a varint, bytes for a
    length-delimited field (the only wire types a Task's top level has)."""
    fields, at = {}, 0
    while at < len(data):
        key, at = read_varint(data, at)
        if key & 7 == 0:
            fields[key >> 3], at = read_varint(data, at)
        else:
            length, at = read_varint(data, at)
            fields[key >> 3], at = data[at:at + length], at + length
    return fields


def read_exactly(fd, n):
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data


def main():
    announce = None
    stale = False
    refuse_sessions = False
    log_lines = 0
    for arg in sys.argv[1:]:
        if arg.startswith("--announce-bytes="):
            announce = int(arg.split("=", 1)[1])
        elif arg == "--stale-replies":
            stale = True
        elif arg == "--refuse-sessions":
            refuse_sessions = True
        elif arg.startswith("--log-lines="):
            log_lines = int(arg.split("=", 1)[1])
        elif arg.startswith("--grow-on-sigusr1-mib="):
            mib = int(arg.split("=", 1)[1])
            kept = []
            signal.signal(signal.SIGUSR1, lambda *_: kept.append(mmap.mmap(-1, mib << 20)))
    while True:
        (length,) = struct.unpack("<I", read_exactly(3, 4))
        task = top_level_fields(read_exactly(3, length))
        handshake = task.keys() <= {TASK_RESOLVE, TASK_SEQUENCE} and task.get(TASK_RESOLVE) == b""
        if announce is not None and not handshake:
            os.write(3, struct.pack("<I", announce))
            chunk = b"\0" * (1 << 20)
            for _ in range(announce // len(chunk) + 1):
                os.write(3, chunk)  # blocks once the server stops reading
            continue
        sequence = task.get(TASK_SEQUENCE, 0)
        if stale and not handshake:
            sequence -= 1
        if refuse_sessions and TASK_DIRECT_SESSION in task:
            # Reply{failure: {code: BAD_INPUT, message}}: fields 1 (varint) and 2 (bytes).
            message = b"this stand-in serves no direct session"
            failure = (varint(1 << 3) + varint(FAILURE_BAD_INPUT) + varint(2 << 3 | 2) +
                       varint(len(message)) + message)
            kind = varint(REPLY_FAILURE << 3 | 2) + varint(len(failure)) + failure
        else:
            # Reply{resolve: {}}: field 5, length-delimited, empty.
            kind = b"\x2a\x00"
        frames = b""
        for i in range(0 if handshake else log_lines):
            # Reply{task_log: {message: "line i"}, sequence}.
            message = b"line %d" % i
            task_log = varint(1 << 3 | 2) + varint(len(message)) + message
            interim = (varint(REPLY_TASK_LOG << 3 | 2) + varint(len(task_log)) + task_log +
                       varint(REPLY_SEQUENCE << 3) + varint(sequence))
            frames += struct.pack("<I", len(interim)) + interim
        reply = kind + varint(REPLY_SEQUENCE << 3) + varint(sequence)
        os.write(3, frames + struct.pack("<I", len(reply)) + reply)


if __name__ == "__main__":
    main()
