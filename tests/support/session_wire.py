"""The few bytes of cnp.v1's Session messages that fake Session services in Python tests need,
encoded by hand (the tests have no generated Python code for cnp's protos)."""


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data, i):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def session_input_line(message):
    """The `line` (field 1, bytes) of a cnp.v1.SessionInput."""
    i = 0
    line = b""
    while i < len(message):
        tag, i = read_varint(message, i)
        length, i = read_varint(message, i)
        if tag == (1 << 3 | 2):
            line = message[i:i + length]
        i += length
    return line


def session_output(lines, accepted=False, partial=False, heartbeat_ms=0, answer_bytes=0):
    """A cnp.v1.SessionOutput: `lines` (field 1, repeated bytes), `accepted` (field 3, bool),
    `partial` (4, bool), `heartbeat_ms` (5, int32), `answer_bytes` (6, int64)."""
    out = b"".join(b"\x0a" + varint(len(l)) + l for l in lines)
    out += b"\x18\x01" if accepted else b""
    out += b"\x20\x01" if partial else b""
    out += b"\x28" + varint(heartbeat_ms) if heartbeat_ms else b""
    return out + (b"\x30" + varint(answer_bytes) if answer_bytes else b"")


def session_input(line):
    """A cnp.v1.SessionInput carrying `line` (bytes)."""
    return b"\x0a" + varint(len(line)) + line


def parse_session_output(message):
    """A cnp.v1.SessionOutput as a dict: lines (list of bytes), exit, accepted, partial (bools),
    heartbeat_ms and answer_bytes (ints), absent fields at their defaults; and bytes, the size
    of its encoding."""
    out = {"lines": [], "exit": False, "accepted": False, "partial": False, "heartbeat_ms": 0,
           "answer_bytes": 0, "bytes": len(message)}
    flags = {2: "exit", 3: "accepted", 4: "partial"}
    i = 0
    while i < len(message):
        tag, i = read_varint(message, i)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 2:
            length, i = read_varint(message, i)
            if field == 1:
                out["lines"].append(message[i:i + length])
            i += length
        elif wire_type == 0:
            value, i = read_varint(message, i)
            if field in flags:
                out[flags[field]] = bool(value)
            elif field == 5:
                out["heartbeat_ms"] = value
            elif field == 6:
                out["answer_bytes"] = value
        else:
            raise ValueError("unexpected wire type %d in a SessionOutput" % wire_type)
    return out
