"""Graceful drain: on SIGTERM with --drain-delay the health service reports NOT_SERVING at once
(to a Watch and to a new Check) while calls are still served, new ones included; a second
SIGTERM ends the drain, and the call in flight still finishes before the server exits 0."""
import os
import signal
import subprocess
import sys
import unittest

import grpc

import cnp_testing
import harness

SERVER, WORKER, CNP, FUNCTIONS = sys.argv[1:5]
del sys.argv[1:5]


def identity(b):
    return b


class DrainTest(unittest.TestCase):
    def setUp(self):
        self.dir = harness.short_temp_dir()
        self.target = "unix:" + os.path.join(self.dir, "s", "cnp.sock")
        self.log_path = os.path.join(self.dir, "server.log")
        with open(self.log_path, "w") as log:
            self.server, ready = cnp_testing.start_server(
                [SERVER, "--listen=" + self.target, "--worker-binary=" + WORKER,
                 "--python-path=" + os.path.dirname(os.path.abspath(FUNCTIONS)), "--workers=2",
                 "--drain-delay=10m"],
                stdout=log, stderr=subprocess.STDOUT)
        self.assertTrue(ready, self.log())
        self.channel = grpc.insecure_channel(self.target)

    def tearDown(self):
        self.channel.close()
        if self.server.poll() is None:
            self.server.kill()
            self.server.wait()

    def log(self):
        return harness.read_log(self.log_path)

    def test_health_turns_not_serving_while_calls_finish(self):
        check = self.channel.unary_unary("/grpc.health.v1.Health/Check",
                                         request_serializer=identity,
                                         response_deserializer=identity)
        watch = self.channel.unary_stream("/grpc.health.v1.Health/Watch",
                                          request_serializer=identity,
                                          response_deserializer=identity)
        statuses = watch(b"", timeout=120)
        self.assertEqual(next(statuses), harness.HEALTH_SERVING)
        self.assertEqual(check(b"", timeout=30), harness.HEALTH_SERVING)
        parked = harness.ParkedCall(CNP, self.target, "slow")

        self.server.send_signal(signal.SIGTERM)
        # The watcher hears it first; then a new Check says so too.
        self.assertEqual(next(statuses), harness.HEALTH_NOT_SERVING)
        self.assertEqual(check(b"", timeout=30), harness.HEALTH_NOT_SERVING)
        # Draining is not refusing: a call a balancer sent before it noticed is still served.
        late = harness.cnp_map(CNP, self.target, "pkgfns.by_n", [{"_id": "late", "n": 7}])
        self.assertEqual(harness.rows(late), [[[[7, "late"]]]])
        self.assertTrue(parked.running())
        self.assertIsNone(self.server.poll())

        # A second SIGTERM ends the drain: the shutdown proper starts, the parked call ends well.
        self.server.send_signal(signal.SIGTERM)
        self.assertEqual(parked.release(), [[[["released", "slow"]]]])
        self.assertEqual(self.server.wait(timeout=60), 0, self.log())
        log = self.log()
        self.assertIn("draining", log)
        self.assertLess(log.index("draining"), log.index("no new calls"))

    def test_health_by_service_name_follows_the_overall_status(self):
        """A probe that names the service (Kubernetes' gRPC probe with `service:`) is answered
        as one that does not, through start, drain and shutdown: SERVING, then NOT_SERVING to
        a Watch and a new Check, and never SERVING again before the server is gone."""
        check = self.channel.unary_unary("/grpc.health.v1.Health/Check",
                                         request_serializer=identity,
                                         response_deserializer=identity)
        watch = self.channel.unary_stream("/grpc.health.v1.Health/Watch",
                                          request_serializer=identity,
                                          response_deserializer=identity)
        names = {"overall": b"", "cnp.v1.Functions": health_request("cnp.v1.Functions")}
        watches = {}
        for label, request in names.items():
            self.assertEqual(check(request, timeout=30), harness.HEALTH_SERVING, label)
            watches[label] = watch(request, timeout=120)
            self.assertEqual(next(watches[label]), harness.HEALTH_SERVING, label)

        self.server.send_signal(signal.SIGTERM)  # the drain
        for label, request in names.items():
            self.assertEqual(next(watches[label]), harness.HEALTH_NOT_SERVING, label)
            self.assertEqual(check(request, timeout=30), harness.HEALTH_NOT_SERVING, label)

        self.server.send_signal(signal.SIGTERM)  # the shutdown
        self.assertEqual(self.server.wait(timeout=60), 0, self.log())
        for label, statuses in watches.items():
            try:
                rest = list(statuses)
            except grpc.RpcError:
                rest = []  # the stream ended with the connection
            self.assertEqual([s for s in rest if s != harness.HEALTH_NOT_SERVING], [], label)


def health_request(service):
    """grpc.health.v1.HealthCheckRequest{service}: field 1, length-delimited."""
    name = service.encode()
    assert len(name) < 128
    return bytes([0x0A, len(name)]) + name


if __name__ == "__main__":
    unittest.main()
