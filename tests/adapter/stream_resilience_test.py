"""The stream path against services that fail in ways a plain restart does not show: a proxy
that accepts every stream and fails it at once (its upstream down). The services are stand-ins
written with Python's gRPC, which count the streams they were sent and can be told how to
misbehave."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import unittest
from concurrent import futures

import grpc

import cnp_testing
from session_wire import session_input_line, session_output

ADAPTER = None


class ScriptedSessionService:
    """A Session service on a unix socket: reset forgets the functions, add_fun is answered
    `true` (accepted), map_doc one row [function, doc id] per function. `fail_streams` aborts
    every stream as a proxy whose upstream is down does."""

    def __init__(self, directory):
        self.lock = threading.Lock()
        self.stream_count = 0
        self.fail_streams = False
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler("cnp.v1.Functions", {
            "Session": grpc.stream_stream_rpc_method_handler(self.session),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.target = "unix:" + os.path.join(directory, "scripted.sock")
        self.server.add_insecure_port(self.target)
        self.server.start()

    def streams(self):
        with self.lock:
            return self.stream_count

    def session(self, requests, context):
        with self.lock:
            self.stream_count += 1
        if self.fail_streams:
            context.abort(grpc.StatusCode.UNAVAILABLE, "upstream connect error (502 Bad Gateway)")
        functions = []
        for request in requests:
            command = json.loads(session_input_line(request))
            if command[0] == "reset":
                functions = []
            elif command[0] == "add_fun":
                functions.append(command[1])
                yield session_output([b"true"], accepted=True)
            elif command[0] == "map_doc":
                rows = [[[f, command[1]["_id"]]] for f in functions]
                yield session_output([json.dumps(rows).encode()])
            else:
                yield session_output([b'["error","unknown","not scripted"]'])

    def stop(self):
        self.server.stop(None)


class StreamResilienceTest(unittest.TestCase):
    def setUp(self):
        self.dir = cnp_testing.short_temp_dir("cnp-resilience-")
        self.service = ScriptedSessionService(self.dir)
        self.adapter = None

    def tearDown(self):
        if self.adapter is not None:
            if self.adapter.poll() is None:
                self.adapter.kill()
            self.adapter.wait()
            for pipe in (self.adapter.stdin, self.adapter.stdout, self.adapter.stderr):
                pipe.close()
        self.service.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start_adapter(self, target, *extra):
        self.adapter = subprocess.Popen(
            [ADAPTER, f"--target={target}", "--session=stream", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def reply(self, command):
        self.adapter.stdin.write(json.dumps(command).encode() + b"\n")
        self.adapter.stdin.flush()
        line = self.adapter.stdout.readline()
        if not line:
            self.adapter.stdin.close()
            self.fail("cnp-adapter exited: " + self.adapter.stderr.read().decode())
        return json.loads(line)

    def test_streams_failed_at_once_are_retried_with_backoff(self):
        # nginx with its only upstream down accepted each stream and failed it: the adapter
        # opened 551 streams in 4 s for one add_fun, and told CouchDB "cannot connect".
        self.service.fail_streams = True
        self.start_adapter(self.service.target)
        self.assertIs(self.reply(["reset", {"timeout": 2000}]), True)
        started = time.monotonic()
        reply = self.reply(["add_fun", "m.town"])
        elapsed = time.monotonic() - started
        self.assertEqual(reply[:2], ["error", "unavailable"], reply)
        # Within 80% of the 2 s timeout, backoff from 10 ms doubling to 250 ms allows about a
        # dozen streams.
        self.assertLess(self.service.streams(), 20)
        self.assertIn("502 Bad Gateway", reply[2])
        self.assertLess(elapsed, 2.0)


if __name__ == "__main__":
    ADAPTER = os.path.abspath(sys.argv.pop(1))
    unittest.main()
