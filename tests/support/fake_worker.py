"""A stand-in for the cnp-worker process (the session pool tests use it): answers every task on
fd 3 with a Reply whose resolve is set (what a pool's start-up handshake waits for), with no
Python start-up cost to make the tests slow."""

import os
import struct


def read_exactly(fd, n):
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data


def main():
    reply = b"\x2a\x00"  # Reply{resolve: {}}: field 5, length-delimited, empty
    while True:
        (length,) = struct.unpack("<I", read_exactly(3, 4))
        read_exactly(3, length)
        os.write(3, struct.pack("<I", len(reply)) + reply)


if __name__ == "__main__":
    main()
