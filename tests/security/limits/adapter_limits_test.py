"""Issue 7, item 3, for cnp-adapter: a line is never held whole however long, a line over the
limit gets CouchDB's error shape ("too_large"), a line the service refuses as too large is
reported as such (not as "cannot connect" after retries), and a last line without a newline is
answered like any other.

The service here is a stand-in written with Python's gRPC: it answers every Session line with
"ok:<length>", so the test sees exactly which lines reached it."""

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
from session_wire import session_input_line, session_output

ADAPTER = None
SMALL = b'["map_doc",{"_id":"small"}]'



class FakeService:
    """A Session service on a unix socket that records each line and answers "ok:<length>"."""

    def __init__(self, directory, max_receive=4 << 20):
        self.received = []
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2),
            options=[("grpc.max_receive_message_length", max_receive)])
        handler = grpc.method_handlers_generic_handler("cnp.v1.Functions", {
            "Session": grpc.stream_stream_rpc_method_handler(self.session),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.target = "unix:" + os.path.join(directory, "fake.sock")
        self.server.add_insecure_port(self.target)
        self.server.start()

    def session(self, requests, context):
        for request in requests:
            line = session_input_line(request)
            self.received.append(line)
            yield session_output([b'"ok:%d"' % len(line)])

    def stop(self):
        self.server.stop(None)


def vm_peak_kib(pid):
    """The process's peak resident memory (VmHWM) in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


class AdapterLimitsTest(unittest.TestCase):
    def setUp(self):
        # Under /tmp: a unix socket path must fit in 108 bytes.
        self.dir = cnp_testing.short_temp_dir("cnp-adapter-limits-")
        self.service = None

    def tearDown(self):
        if self.service:
            self.service.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, max_line_bytes, max_receive=4 << 20):
        self.service = FakeService(self.dir, max_receive)
        adapter = subprocess.Popen(
            [ADAPTER, f"--target={self.service.target}", f"--max-line-bytes={max_line_bytes}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(self.stop, adapter)
        return adapter

    @staticmethod
    def stop(adapter):
        if adapter.poll() is None:
            adapter.kill()
        adapter.wait()
        for pipe in (adapter.stdin, adapter.stdout):
            if not pipe.closed:
                pipe.close()

    def test_a_line_over_the_limit_is_answered_with_an_error_and_skipped(self):
        adapter = self.start(max_line_bytes=1 << 20)
        adapter.stdin.write(b'["map_doc",{"_id":"' + b"x" * (3 << 20) + b'"}]\n')
        adapter.stdin.write(SMALL + b"\n")
        adapter.stdin.flush()
        error = json.loads(adapter.stdout.readline())
        self.assertEqual(error[:2], ["error", "too_large"])
        self.assertIn("1048576 bytes", error[2])
        self.assertIn("--max-line-bytes", error[2])
        # The stream is still framed: the next line is served as usual.
        self.assertEqual(json.loads(adapter.stdout.readline()), f"ok:{len(SMALL)}")
        adapter.stdin.close()
        self.assertEqual(adapter.wait(timeout=30), 0)
        self.assertEqual(self.service.received, [SMALL])

    def test_a_huge_line_is_not_held_in_memory(self):
        adapter = self.start(max_line_bytes=1 << 20)
        chunk = b"y" * (1 << 20)
        adapter.stdin.write(b'["map_doc",{"_id":"')
        for _ in range(200):  # 200 MiB without a newline
            adapter.stdin.write(chunk)
        adapter.stdin.flush()
        # The adapter has read most of it by now (the pipe holds at most 1 MiB), while still
        # waiting for the newline.
        peak_mib = vm_peak_kib(adapter.pid) / 1024
        self.assertLess(peak_mib, 100, "the adapter held the line")
        adapter.stdin.close()  # end of input in the middle of the long line
        error = json.loads(adapter.stdout.readline())
        self.assertEqual(error[:2], ["error", "too_large"])
        self.assertEqual(adapter.wait(timeout=30), 0)
        self.assertEqual(self.service.received, [])

    def test_a_line_the_service_refuses_as_too_large_is_reported_as_such(self):
        # The service accepts messages of 64 KiB; the adapter's own limit is higher.
        adapter = self.start(max_line_bytes=1 << 20, max_receive=64 << 10)
        adapter.stdin.write(b'["map_doc",{"_id":"' + b"z" * (200 << 10) + b'"}]\n')
        adapter.stdin.flush()
        error = json.loads(adapter.stdout.readline())
        self.assertEqual(error[:2], ["error", "too_large"], error)
        self.assertNotIn("cannot connect", error[2])
        # And the session goes on with the next line on a new stream.
        adapter.stdin.write(SMALL + b"\n")
        adapter.stdin.flush()
        self.assertEqual(json.loads(adapter.stdout.readline()), f"ok:{len(SMALL)}")
        adapter.stdin.close()
        self.assertEqual(adapter.wait(timeout=30), 0)

    def test_a_last_line_without_a_newline_is_answered(self):
        adapter = self.start(max_line_bytes=1 << 20)
        first, last = b'["map_doc",{"_id":"a"}]', b'["map_doc",{"_id":"last"}]'
        out, _ = adapter.communicate(first + b"\n" + last, timeout=30)
        self.assertEqual([json.loads(l) for l in out.splitlines()],
                         [f"ok:{len(first)}", f"ok:{len(last)}"])
        self.assertEqual(adapter.returncode, 0)
        self.assertEqual(self.service.received, [first, last])

    def test_a_limit_beyond_what_grpc_carries_is_refused_at_start(self):
        result = subprocess.run([ADAPTER, "--target=unix:/nonexistent",
                                 f"--max-line-bytes={1 << 30}"],
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        self.assertEqual(result.returncode, 2)
        self.assertIn(b"--max-line-bytes must be between 1 and", result.stderr)


if __name__ == "__main__":
    ADAPTER = os.path.abspath(sys.argv.pop(1))
    unittest.main()
