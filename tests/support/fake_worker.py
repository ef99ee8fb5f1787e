"""A stand-in for the cnp-worker process (the session pool tests use it): answers every task on
fd 3 with a Reply whose resolve is set (what a pool's start-up handshake waits for), with no
Python start-up cost to make the tests slow.

With --announce-bytes=N it answers every task but the handshake (a Resolve of nothing) as a
worker that ignores its task's answer limit would: a frame header announcing N bytes, then
bytes until the server stops reading (it is killed then)."""

import os
import struct
import sys

HANDSHAKE = b"\x2a\x00"  # Task{resolve: {}}


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
    for arg in sys.argv[1:]:
        if arg.startswith("--announce-bytes="):
            announce = int(arg.split("=", 1)[1])
    reply = b"\x2a\x00"  # Reply{resolve: {}}: field 5, length-delimited, empty
    while True:
        (length,) = struct.unpack("<I", read_exactly(3, 4))
        task = read_exactly(3, length)
        if announce is not None and task != HANDSHAKE:
            os.write(3, struct.pack("<I", announce))
            chunk = b"\0" * (1 << 20)
            for _ in range(announce // len(chunk) + 1):
                os.write(3, chunk)  # blocks once the server stops reading
            continue
        os.write(3, struct.pack("<I", len(reply)) + reply)


if __name__ == "__main__":
    main()
