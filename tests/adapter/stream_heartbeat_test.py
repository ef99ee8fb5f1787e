"""cnp-server's heartbeats on the Session stream (common/session_heartbeat.h), seen from a gRPC
client that speaks the stream itself: asked for with the `cnp-heartbeat-ms` request header, they
are empty partial outputs written whenever a command has kept the stream silent that long; the
stream's first output says the interval granted. A client that does not ask (an older adapter,
which would read a heartbeat as the command's answer) gets none."""
import json
import os
import queue
import sys
import time
import unittest

import grpc

import harness
from session_wire import parse_session_output, session_input


class Session:
    """One Session stream, in lockstep: send() a command, get every output up to its answer."""

    def __init__(self, target, heartbeat_ms=None):
        self.channel = grpc.insecure_channel(target)
        call = self.channel.stream_stream("/cnp.v1.Functions/Session",
                                          request_serializer=lambda b: b,
                                          response_deserializer=parse_session_output)
        self.requests = queue.Queue()
        metadata = None if heartbeat_ms is None else [("cnp-heartbeat-ms", str(heartbeat_ms))]
        self.responses = call(iter(self.requests.get, None), metadata=metadata)

    def send(self, command):
        """The outputs the command got, its answer last, each with the seconds it took to come."""
        self.requests.put(session_input(json.dumps(command).encode()))
        if command[0] == "reset":
            return []  # the adapter answers reset itself: the service sends nothing
        started = time.monotonic()
        outputs = []
        for output in self.responses:
            output["after"] = time.monotonic() - started
            outputs.append(output)
            if not output["partial"]:
                return outputs
        raise AssertionError("the stream ended after %r" % outputs)

    def close(self):
        self.requests.put(None)
        self.channel.close()


def rows(output):
    return [json.loads(line) for line in output["lines"]]


class StreamHeartbeatTest(unittest.TestCase):
    binaries = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.socket_dir("cnp-heartbeat-")
        cls.server = harness.Server(cls.binaries, os.path.join(cls.tmp.name, "cnp.sock"),
                                    workers=1)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    def session(self, heartbeat_ms=None):
        session = Session(self.server.target, heartbeat_ms)
        self.addCleanup(session.close)
        session.send(["reset", {"timeout": 20000}])
        return session

    def test_a_long_command_gets_heartbeats_until_its_answer(self):
        session = self.session(heartbeat_ms=200)
        taught = session.send(["add_fun", "fixture_fns.slow_town"])
        self.assertEqual(len(taught), 1)
        self.assertEqual(taught[0]["heartbeat_ms"], 200)   # the interval granted, said once
        outputs = session.send(["map_doc", {"_id": "a", "town": "Oslo", "n": 1, "seconds": 1.5}])
        answer, beats = outputs[-1], outputs[:-1]
        self.assertEqual(rows(answer), [[[["Oslo", 1]]]])
        self.assertEqual(answer["heartbeat_ms"], 0)
        # 1.5 s of work at one heartbeat per 200 ms of silence: about seven, each empty; at
        # least four however late the machine's timers run, and none after the answer.
        self.assertGreaterEqual(len(beats), 4, outputs)
        for beat in beats:
            self.assertEqual((beat["partial"], beat["lines"], beat["heartbeat_ms"]),
                             (True, [], 200), beat)
        # None before the first interval of silence.
        self.assertGreaterEqual(beats[0]["after"], 0.19, outputs)

    def test_a_heartbeat_that_comes_first_says_the_interval(self):
        # The stream's first command outlasts the interval (a reduce names its functions
        # itself): its heartbeats come before any answer, and must say what the answer would
        # have said.
        session = self.session(heartbeat_ms=200)
        outputs = session.send(["reduce", ["fixture_fns.slow_count"], [[["k", "a"], 0.7]]])
        self.assertEqual(rows(outputs[-1]), [[True, [1]]])
        self.assertEqual(outputs[0]["partial"], True, outputs)
        self.assertEqual(outputs[0]["heartbeat_ms"], 200, outputs)

    def test_quick_commands_get_no_heartbeat(self):
        session = self.session(heartbeat_ms=200)
        session.send(["add_fun", "fixture_fns.slow_town"])
        for n in range(50):
            outputs = session.send(["map_doc", {"_id": str(n), "town": "Bergen", "n": n}])
            self.assertEqual([rows(o) for o in outputs], [[[[["Bergen", n]]]]])

    def test_a_client_that_does_not_ask_gets_none(self):
        session = self.session()
        taught = session.send(["add_fun", "fixture_fns.slow_town"])
        self.assertEqual(taught[0]["heartbeat_ms"], 0)
        outputs = session.send(["map_doc", {"_id": "a", "town": "Oslo", "n": 1, "seconds": 0.7}])
        self.assertEqual(len(outputs), 1, outputs)
        self.assertEqual(rows(outputs[0]), [[[["Oslo", 1]]]])

    def test_a_large_answer_is_announced_before_it_is_sent(self):
        # On a slow link its transfer may outlast the silence the client allows: told its size
        # first, the client does not take the server for stopped.
        session = self.session(heartbeat_ms=5000)
        session.send(["add_fun", "fixture_fns.slow_town"])
        big = "x" * (300 << 10)
        outputs = session.send(["map_doc", {"_id": "a", "town": "Oslo", "n": big}])
        self.assertEqual(len(outputs), 2, [dict(o, lines=len(o["lines"])) for o in outputs])
        notice, answer = outputs
        self.assertEqual(rows(answer), [[[["Oslo", big]]]])
        self.assertEqual((notice["partial"], notice["lines"], notice["heartbeat_ms"]), (True, [], 5000))
        self.assertEqual(notice["answer_bytes"], answer["bytes"])
        # Small answers are not announced, nor is anything to a client that asked for no
        # heartbeats (an older adapter would take the notice for its answer).
        self.assertEqual(len(session.send(["map_doc", {"_id": "b", "town": "Oslo", "n": 1}])), 1)
        quiet = self.session()
        quiet.send(["add_fun", "fixture_fns.slow_town"])
        outputs = quiet.send(["map_doc", {"_id": "a", "town": "Oslo", "n": big}])
        self.assertEqual(len(outputs), 1)
        self.assertEqual(outputs[0]["answer_bytes"], 0)

    def test_what_is_granted(self):
        for asked, granted in (("1", 200), ("1500", 1500), ("999999999", 60000), ("0", 0),
                               ("-5", 0), ("99999999999999999999", 60000)):
            session = self.session(heartbeat_ms=asked)
            taught = session.send(["add_fun", "fixture_fns.town_n"])
            self.assertEqual(taught[0]["heartbeat_ms"], granted, asked)

    def test_a_value_that_is_no_number_is_refused(self):
        # Found by a probe: "soon" got a stream without heartbeats, without a word, and its
        # client would have taken a long command for a server that had stopped.
        session = Session(self.server.target, "soon")
        self.addCleanup(session.close)
        session.requests.put(session_input(json.dumps(["add_fun", "fixture_fns.town_n"]).encode()))
        with self.assertRaises(grpc.RpcError) as refused:
            next(iter(session.responses))
        self.assertEqual(refused.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn('cnp-heartbeat-ms: "soon" is not a whole number of milliseconds (200 to '
                      '60000 are granted; 0: none)', refused.exception.details())


if __name__ == "__main__":
    binaries, rest = harness.parse_binaries(sys.argv[1:])
    StreamHeartbeatTest.binaries = binaries
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
