"""What a peer without the bearer token can make cnp-server hold: nothing like the size of its
requests. The attack is the one a review found: open many streams, send most of a large Map
request on each and withhold its last byte, so that gRPC keeps the rest in memory for as long
as the peer likes.

- Over TLS with a token, the token is checked when a call's headers arrive, before its request
  is read (bearer_token_processor.h): every stream is refused UNAUTHENTICATED and the server's
  peak memory stays far below what the streams tried to send.
- On a listener where that check does not apply (plaintext loopback with a token: the token is
  checked where the call starts, after its request), --max-grpc-memory bounds what gRPC holds:
  the streams are cut off (RESOURCE_EXHAUSTED) once it is used up, and the peak stays near it.

In both, a call with the token is then served. The streams are written with python3-h2, which,
unlike a gRPC client, can send part of a message. The server's peak (VmHWM) is read from /proc."""

import os
import select
import socket
import ssl
import subprocess
import sys
import time
import unittest
import zlib

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

import cnp_testing

SERVER = WORKER = FUNCTIONS = None
TOKEN = "grpc-memory-test-token-5e1"
MIB = 1 << 20


class Attack:
    """`streams` Map calls on one HTTP/2 connection, each announcing a message of `size` bytes
    and sending all of it but the last byte, as fast as the server's flow control lets it.
    run() returns once every stream has sent all it will send or was ended by the server, or
    when the server has let nothing through for `stall` seconds (it holds what it has)."""

    def __init__(self, port, streams, size, tls_ca=None):
        raw = socket.create_connection(("127.0.0.1", port))
        if tls_ca is not None:
            context = ssl.create_default_context(cafile=tls_ca)
            context.set_alpn_protocols(["h2"])
            raw = context.wrap_socket(raw, server_hostname="localhost")
        self.sock = raw
        self.scheme = "https" if tls_ca is not None else "http"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.size = size
        self.todo = {}     # stream id -> bytes still to send (the withheld byte excluded)
        self.ended = {}    # stream id -> grpc-status, or "reset <code>"
        for _ in range(streams):
            stream = self.conn.get_next_available_stream_id()
            self.conn.send_headers(stream, [
                (":method", "POST"), (":scheme", self.scheme), (":path", "/cnp.v1.Functions/Map"),
                (":authority", "localhost"), ("content-type", "application/grpc"),
                ("te", "trailers")])
            # The gRPC message prefix: not compressed, `size` bytes long.
            self.conn.send_data(stream, b"\0" + size.to_bytes(4, "big"))
            self.todo[stream] = size - 1
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        chunk = b"\0" * 16384
        for stream, left in list(self.todo.items()):
            while left > 0:
                n = min(left, len(chunk), self.conn.local_flow_control_window(stream),
                        self.conn.max_outbound_frame_size)
                if n <= 0:
                    break
                self.conn.send_data(stream, chunk[:n])
                left -= n
                self.flush()
            self.todo[stream] = left

    def handle(self, data):
        for event in self.conn.receive_data(data):
            stream = getattr(event, "stream_id", None)
            if isinstance(event, h2.events.StreamReset):
                self.ended.setdefault(stream, f"reset {event.error_code}")
            elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                status = dict(event.headers).get(b"grpc-status")
                if status is not None:
                    self.ended.setdefault(stream, int(status))
            if stream in self.ended:
                self.todo.pop(stream, None)
        self.flush()

    def sending(self):
        return any(left > 0 for left in self.todo.values())

    def run(self, stall=5.0):
        while self.sending():
            self.pump()
            readable, _, _ = select.select([self.sock], [], [], stall)
            if not readable:
                break  # the server lets no more through: it holds what it took
            data = self.sock.recv(1 << 20)
            if not data:
                break
            self.handle(data)
        return self

    def sent(self):
        return sum(self.size - 1 - left for left in self.todo.values())

    def close(self):
        self.sock.close()


class Server(cnp_testing.LoggedServer):
    def __init__(self, directory, extra):
        super().__init__(
            [SERVER, f"--worker-binary={WORKER}", f"--python-path={FUNCTIONS}", "--workers=1",
             "--listen=127.0.0.1:0", f"--auth-token-file={directory}/token"] + extra, directory)


def compressed_streams(port, streams, size):
    """`streams` whole Map requests of `size` bytes on one plaintext HTTP/2 connection, each sent
    gzip-compressed (a few KiB on the wire), without the token: {stream id: grpc-status}, the
    status a stream ended with, once all have ended or the server has been silent for 60 s."""
    message = gzip_message(map_request_of(size))
    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    # Room for each whole compressed request at once: only the server can hold one back.
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    ended = {}
    ids = []
    for _ in range(streams):
        stream = conn.get_next_available_stream_id()
        ids.append(stream)
        conn.send_headers(stream, [
            (":method", "POST"), (":scheme", "http"), (":path", "/cnp.v1.Functions/Map"),
            (":authority", "localhost"), ("content-type", "application/grpc"),
            ("te", "trailers"), ("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")])
    sock.sendall(conn.data_to_send())
    pending = {stream: b"\1" + len(message).to_bytes(4, "big") + message for stream in ids}
    try:
        while len(ended) < streams:
            for stream, left in list(pending.items()):
                if stream in ended:
                    pending.pop(stream)
                    continue
                n = min(len(left), conn.local_flow_control_window(stream),
                        conn.max_outbound_frame_size)
                if n > 0:
                    conn.send_data(stream, left[:n], end_stream=(n == len(left)))
                    pending[stream] = left[n:]
                    if not pending[stream]:
                        pending.pop(stream)
            sock.sendall(conn.data_to_send())
            readable, _, _ = select.select([sock], [], [], 60)
            if not readable:
                break
            data = sock.recv(1 << 20)
            if not data:
                break
            for event in conn.receive_data(data):
                stream = getattr(event, "stream_id", None)
                if isinstance(event, h2.events.StreamReset):
                    ended.setdefault(stream, f"reset {event.error_code}")
                elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    status = dict(event.headers).get(b"grpc-status")
                    if status is not None:
                        ended.setdefault(stream, int(status))
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return ended


def gzip_message(data):
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def map_request_of(size):
    """A MapRequest of about `size` bytes: one document of spaces before its `{}`."""
    function, doc = b"svc_fns.doubled", b" " * size + b"{}"
    length, n = b"", len(doc)
    while n >= 0x80:
        length += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    length += bytes([n])
    return b"\x0a" + bytes([len(function)]) + function + b"\x12" + length + doc


def map_request():
    """MapRequest{functions: "svc_fns.doubled", docs: '{"_id":"a","n":21}'} in its wire form."""
    function, doc = b"svc_fns.doubled", b'{"_id":"a","n":21}'
    return b"\x0a" + bytes([len(function)]) + function + b"\x12" + bytes([len(doc)]) + doc


def call_with_token(port, tls_ca=None):
    target = f"127.0.0.1:{port}"
    if tls_ca is None:
        channel = grpc.insecure_channel(target)
    else:
        with open(tls_ca, "rb") as ca:
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca.read()),
                                          options=[("grpc.ssl_target_name_override", "localhost")])
    with channel:
        call = channel.unary_unary("/cnp.v1.Functions/Map")
        return call(map_request(), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30)


class GrpcMemoryTest(unittest.TestCase):
    STREAMS = 12
    SIZE = 15 * MIB  # each under --max-call-bytes below: only the token may refuse it

    def setUp(self):
        self.dir = cnp_testing.short_temp_dir()
        token = os.path.join(self.dir, "token")
        with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(TOKEN + "\n")

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.dir], check=False)

    def attack(self, server, tls_ca=None):
        before = cnp_testing.process_memory(server.process.pid, "VmHWM")
        attack = Attack(server.port, self.STREAMS, self.SIZE, tls_ca).run()
        grown = cnp_testing.process_memory(server.process.pid, "VmHWM") - before
        total = self.STREAMS * self.SIZE
        print(f"{self.STREAMS} streams of {self.SIZE >> 20} MiB ({total >> 20} MiB): "
              f"{attack.sent() >> 20} MiB sent on streams still open, ended: "
              f"{sorted(set(map(str, attack.ended.values())))}, server peak grew "
              f"{grown >> 20} MiB", file=sys.stderr)
        return attack, grown, total

    def test_tls_refuses_tokenless_streams_before_reading_their_requests(self):
        cert, key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        os.chmod(key, 0o600)
        server = Server(self.dir, [f"--tls-cert={cert}", f"--tls-key={key}",
                                   "--max-call-bytes=16777216"])
        try:
            attack, grown, total = self.attack(server, tls_ca=cert)
            try:
                # Each stream refused at its headers: nothing of it was kept.
                self.assertEqual(attack.ended, {s: 16 for s in attack.ended}, server.log())
                self.assertEqual(len(attack.ended), self.STREAMS)
                self.assertLess(grown, total // 4)
                # One access-log line for the streams refused together, not one each.
                refused = ('refused peer=tls call=Map code=UNAUTHENTICATED '
                           'checked="before the request was read" reason="no bearer token" '
                           'calls=1')
                self.assertIn(refused, server.log())
                self.assertEqual(server.log().count('refused peer=tls call=Map'), 1, server.log())
                reply = call_with_token(server.port, tls_ca=cert)
                self.assertIn(b'[[["a",42]]]', reply)
            finally:
                attack.close()
        finally:
            server.stop()

    def test_max_grpc_memory_bounds_what_tokenless_streams_hold(self):
        quota = 32 * MIB
        server = Server(self.dir, ["--max-call-bytes=16777216", f"--max-grpc-memory={quota}"])
        try:
            attack, grown, total = self.attack(server)
            try:
                # 181 MiB without the quota. With it, gRPC cuts streams off once its reclaimers
                # run, which is after an allocation has passed the quota: the peak passes it,
                # by how much depends on the timing (+35 to +70 MiB over 20 runs on a 2-core
                # machine, +40 to +47 on another), but stays under half of what was sent.
                self.assertLess(grown, total // 2)
                # The streams were cut off, not left holding their bytes.
                self.assertGreater(len(attack.ended), 0)
                reply = call_with_token(server.port)
                self.assertIn(b'[[["a",42]]]', reply)
            finally:
                attack.close()
        finally:
            server.stop()

    def test_compressed_requests_are_refused_unexpanded(self):
        # A gzip message of 15 MiB is 15 KiB on the wire, and --max-grpc-memory counts what
        # arrives, not what it expands to: 12 of them held 180 MiB past a 32 MiB quota, before
        # the token was checked. The server takes identity messages only.
        quota = 32 * MIB
        server = Server(self.dir, ["--max-call-bytes=16777216", f"--max-grpc-memory={quota}"])
        try:
            before = cnp_testing.process_memory(server.process.pid, "VmHWM")
            ended = compressed_streams(server.port, self.STREAMS, self.SIZE)
            grown = cnp_testing.process_memory(server.process.pid, "VmHWM") - before
            print(f"{self.STREAMS} gzip streams of {self.SIZE >> 20} MiB: ended "
                  f"{sorted(set(map(str, ended.values())))}, server peak grew {grown >> 20} MiB",
                  file=sys.stderr)
            self.assertEqual(len(ended), self.STREAMS, server.log())
            # UNIMPLEMENTED: gRPC's answer to a message in an encoding the server does not take.
            self.assertEqual(set(ended.values()), {12}, server.log())
            self.assertLess(grown, 16 * MIB)
            reply = call_with_token(server.port)
            self.assertIn(b'[[["a",42]]]', reply)
        finally:
            server.stop()


if __name__ == "__main__":
    SERVER, WORKER, FUNCTIONS = (os.path.abspath(p) for p in sys.argv[1:4])
    if os.path.isfile(FUNCTIONS):  # a module of the directory that holds the functions
        FUNCTIONS = os.path.dirname(FUNCTIONS)
    unittest.main(argv=sys.argv[:1])
