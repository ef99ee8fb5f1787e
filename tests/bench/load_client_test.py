"""load_client (load_bench's load) is bounded in time even when the server never answers: each
Session stream has a deadline (--duration_ms plus --stream_margin_ms), so a hung stream ends the
run with errors instead of hanging load_bench --soak forever. The server here is a stand-in
written with Python's gRPC that reads a Session's lines and never answers one."""

import json
import os
import shutil
import subprocess
import sys
import threading
import unittest
from concurrent import futures

import grpc

import cnp_testing

LOAD_CLIENT = None


class SilentSessionService:
    def __init__(self, directory):
        self.done = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("cnp.v1.Functions", {
            "Session": grpc.stream_stream_rpc_method_handler(self.session),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.target = "unix:" + os.path.join(directory, "silent.sock")
        self.server.add_insecure_port(self.target)
        self.server.start()

    def session(self, requests, context):
        for _ in requests:
            pass  # read every line, answer none; returns when the client gives up
        return iter(())

    def stop(self):
        self.server.stop(None)


class LoadClientTest(unittest.TestCase):
    def test_a_session_server_that_never_answers_does_not_hang_the_run(self):
        directory = cnp_testing.short_temp_dir("cnp-load-client-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        service = SilentSessionService(directory)
        self.addCleanup(service.stop)
        out = subprocess.run(
            [LOAD_CLIENT, "--target=" + service.target, "--kind=session", "--clients=2",
             "--duration_ms=200", "--stream_margin_ms=1000"],
            capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        result = json.loads(out.stdout)
        self.assertEqual(result["calls"], 0, result)
        self.assertGreater(result["errors"], 0, result)


if __name__ == "__main__":
    LOAD_CLIENT = os.path.abspath(sys.argv.pop(1))
    unittest.main()
