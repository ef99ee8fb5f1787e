"""gRPC reflection is the one service gRPC runs with a thread per stream, and it answered
anyone: a security review held 2,000 idle reflection streams without the token and the server
ran 2,016 threads, near the host's PID limit. Now it is off unless --reflection asks for it;
when on it needs the token where there is one, and gRPC runs it on 4 threads at most (streams
past them are refused RESOURCE_EXHAUSTED). The server's threads are read from /proc."""

import os
import queue
import subprocess
import sys
import unittest

import grpc

import cnp_testing

SERVER = WORKER = FUNCTIONS = None
TOKEN = "reflection-test-token-7c2"
METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
LIST_SERVICES = b"\x3a\x00"  # ServerReflectionRequest{list_services: ""}
MAX_REFLECTION_THREADS = 4   # kMaxReflectionThreads, service/rpc/rpc_server.h


def threads(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads")


class Stream:
    """A reflection stream that sends one request, reads its answer, and stays open until
    close()."""

    def __init__(self, channel, token):
        self.requests = queue.Queue()
        self.requests.put(LIST_SERVICES)
        call = channel.stream_stream(METHOD, request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
        metadata = [("authorization", f"Bearer {token}")] if token else None
        self.responses = call(iter(self.requests.get, None), metadata=metadata, timeout=60)

    def first(self):
        """The first answer's bytes, or the status code the stream ended with."""
        try:
            return next(self.responses)
        except grpc.RpcError as error:
            return error.code()

    def close(self):
        self.requests.put(None)
        self.responses.cancel()


class ReflectionTest(unittest.TestCase):
    def setUp(self):
        self.dir = cnp_testing.short_temp_dir()
        with open(os.open(os.path.join(self.dir, "token"), os.O_WRONLY | os.O_CREAT, 0o600),
                  "w") as f:
            f.write(TOKEN + "\n")
        self.process = None

    def tearDown(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        subprocess.run(["rm", "-rf", self.dir], check=False)

    def start(self, extra):
        log_path = os.path.join(self.dir, "server.log")
        with open(log_path, "w") as log:
            self.process, ready = cnp_testing.start_server(
                [SERVER, f"--worker-binary={WORKER}", f"--python-path={FUNCTIONS}",
                 "--workers=1", "--listen=127.0.0.1:0",
                 f"--auth-token-file={self.dir}/token"] + extra,
                stdout=log, stderr=subprocess.STDOUT)
        self.assertTrue(ready)
        return grpc.insecure_channel(f"127.0.0.1:{cnp_testing.listening_port(log_path)}")

    def test_reflection_is_off_by_default(self):
        with self.start([]) as channel:
            stream = Stream(channel, TOKEN)
            self.assertEqual(stream.first(), grpc.StatusCode.UNIMPLEMENTED)
            stream.close()

    def test_reflection_needs_the_token(self):
        with self.start(["--reflection"]) as channel:
            tokenless = Stream(channel, None)
            self.assertEqual(tokenless.first(), grpc.StatusCode.UNAUTHENTICATED)
            tokenless.close()
            wrong = Stream(channel, "not-the-token")
            self.assertEqual(wrong.first(), grpc.StatusCode.UNAUTHENTICATED)
            wrong.close()
            with_token = Stream(channel, TOKEN)
            self.assertIn(b"cnp.v1.Functions", with_token.first())
            with_token.close()

    def test_reflection_streams_hold_a_few_threads_at_most(self):
        streams = 12
        with self.start(["--reflection"]) as channel:
            before = threads(self.process.pid)
            held = [Stream(channel, TOKEN) for _ in range(streams)]
            try:
                answers = [stream.first() for stream in held]
                during = threads(self.process.pid)
                served = [a for a in answers if isinstance(a, bytes)]
                refused = [a for a in answers if not isinstance(a, bytes)]
                print(f"{streams} streams held: {len(served)} served, refused {set(refused)}, "
                      f"server threads {before} -> {during}", file=sys.stderr)
                self.assertGreater(len(served), 0)
                self.assertLessEqual(len(served), MAX_REFLECTION_THREADS)
                self.assertEqual(set(refused), {grpc.StatusCode.RESOURCE_EXHAUSTED})
                self.assertLessEqual(during - before, MAX_REFLECTION_THREADS)
            finally:
                for stream in held:
                    stream.close()


if __name__ == "__main__":
    SERVER, WORKER, FUNCTIONS = (os.path.abspath(p) for p in sys.argv[1:4])
    if os.path.isfile(FUNCTIONS):
        FUNCTIONS = os.path.dirname(FUNCTIONS)
    unittest.main(argv=sys.argv[:1])
