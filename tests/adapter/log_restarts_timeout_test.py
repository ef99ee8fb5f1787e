"""A function's log() lines reach CouchDB as they are made, and each restarts the command's
deadline, as CouchDB restarts its read timeout on each line it reads: through both session
paths.

couchjs writes each log line at once, and CouchDB's readjson loops on log lines with a fresh
timeout for each (docs/couchdb-query-server.md, "Per-read timeout"), so a function that logs
while it works may run longer than os_process_timeout. A direct session did this; over the
Session stream the lines came with the answer, and a command that ran past CouchDB's timeout
(less the margin) was answered ["error","timeout",..] however often it had logged. The worker
now sends each line to the server as it is made (Task.logs_early), the server writes it to the
stream at once and moves the command's deadline, and the adapter moves its own."""

import json
import os
import sys
import time
import unittest

import harness

LOGGING_FNS = '''
import os
import time

from couch_named_python import log


def logs_then_waits(doc):
    """Logs, then waits for the test to see that line: it must reach CouchDB first."""
    log("started " + doc["_id"])
    for _ in range(2000):
        if os.path.exists(doc["release"]):
            break
        time.sleep(0.01)
    yield doc["_id"], os.path.exists(doc["release"])


def logs_while_working(doc):
    """Works for longer than CouchDB's timeout in all, logging more often than it."""
    for i in range(doc["ticks"]):
        log("tick %d" % i)
        time.sleep(doc["every"])
    yield doc["_id"], doc["ticks"]


def logs_then_falls_silent(doc):
    log("before the silence")
    time.sleep(30)
    yield doc["_id"], 1
'''

MODULE = "adapterfix_logging"
RESET = ["reset", {"timeout": 1000}]  # 500 ms for a command, less the margin


class LogRestartsTimeoutTest(harness.ModuleServerTestCase):
    socket_prefix = "adapterfix-logs-"
    module = MODULE
    module_source = LOGGING_FNS
    module_server_extra = ("--call-timeout=4s", "--log-format=json")

    def session_with(self, function):
        qs = self.adapter()
        self.addCleanup(qs.close)
        self.assertIs(qs.reply(RESET), True, qs.diagnostics())
        self.assertIs(qs.reply(["add_fun", f"{MODULE}.{function}"]), True, qs.diagnostics())
        return qs

    def test_a_log_line_reaches_couchdb_before_the_function_returns(self):
        qs = self.session_with("logs_then_waits")
        release = os.path.join(self.functions.name, f"release-{self.session}")
        qs.send_line(json.dumps(["map_doc", {"_id": "d1", "release": release}]))
        # The function waits for this line to be read before it returns.
        self.assertEqual(json.loads(qs.read_line(timeout=10)), ["log", "started d1"],
                         qs.diagnostics())
        # And its attributed copy reaches the service's log as made too, not with the answer
        # (on the stream, the server writes it: the line CouchDB read was written before it).
        # Were it held to the answer, it would be found only once the command timed out (500 ms
        # after the line), and the answer below would be that timeout.
        self.assertTrue(self.service_log_shows("started d1", within=3.0), qs.diagnostics())
        with open(release, "w"):
            pass
        self.assertEqual(json.loads(qs.read_line(timeout=10)), [[["d1", True]]])

    def service_log_shows(self, message, within):
        """Whether the server's log has `message` as a function's attributed line (JSON), read
        again as it grows until `within` seconds have passed."""
        give_up = time.monotonic() + within
        while True:
            with open(self.server.log_path, encoding="utf-8") as log:
                for line in log:
                    if line.startswith("{"):
                        event = json.loads(line)
                        if event["msg"] == message and event.get("function"):
                            return True
            if time.monotonic() > give_up:
                return False
            time.sleep(0.05)

    def test_log_lines_keep_a_command_alive_past_couchdbs_timeout(self):
        qs = self.session_with("logs_while_working")
        # 1.6 s in all, a line every 0.2 s: past the 500 ms a silent command gets.
        lines = qs.call(["map_doc", {"_id": "d2", "ticks": 8, "every": 0.2}], timeout=20)
        self.assertEqual([json.loads(line) for line in lines],
                         [["log", f"tick {i}"] for i in range(8)] + [[[["d2", 8]]]],
                         qs.diagnostics())
        # The session goes on.
        lines = qs.call(["map_doc", {"_id": "d3", "ticks": 1, "every": 0}])
        self.assertEqual(json.loads(lines[-1]), [[["d3", 1]]])

    def test_silence_after_a_log_line_still_times_out(self):
        qs = self.session_with("logs_then_falls_silent")
        lines = qs.call(["map_doc", {"_id": "d4"}], timeout=20)
        self.assertEqual(json.loads(lines[0]), ["log", "before the silence"], lines)
        reply = json.loads(lines[-1])
        self.assertEqual(reply[:2], ["error", "timeout"], lines)
        if self.session == "stream":
            self.assertIn("from the command's start or its functions' last log() line", reply[2])

    def test_the_servers_call_timeout_caps_a_command_that_keeps_logging(self):
        qs = self.session_with("logs_while_working")
        # 30 s of lines every 0.2 s: --call-timeout (4 s) ends it.
        lines = qs.call(["map_doc", {"_id": "d5", "ticks": 150, "every": 0.2}], timeout=20)
        reply = json.loads(lines[-1])
        self.assertEqual(reply[:2], ["error", "timeout"], lines)
        self.assertGreater(len(lines), 5)  # its lines came before
        if self.session == "stream":
            self.assertIn("its log() lines restarted CouchDB's timeout, but cnp-server's "
                          "--call-timeout, 4s, caps every command", reply[2])


harness.through_each_path(LogRestartsTimeoutTest, globals())


class LogLinesThenFailoverTest(unittest.TestCase):
    """The Session stream breaks after lines were forwarded, past CouchDB's timeout counted from
    the command's start: CouchDB restarted its timeout on each line, so the command is retried
    on the restarted service with time counted from the last line, not refused as too late."""

    binaries = None

    def setUp(self):
        self.functions = harness.module_directory(MODULE, LOGGING_FNS)
        self.addCleanup(self.functions.cleanup)
        self.tmp = harness.socket_dir("adapterfix-logfail-")
        self.addCleanup(self.tmp.cleanup)
        self.socket_path = os.path.join(self.tmp.name, "cnp.sock")
        self.server = self.start_server()

    def start_server(self):
        server = harness.Server(self.binaries, self.socket_path,
                                extra=(f"--python-path={self.functions.name}",
                                       f"--allow-module={MODULE}"))
        self.addCleanup(server.stop)
        return server

    def test_a_command_whose_lines_outlived_couchdbs_timeout_is_retried(self):
        qs = harness.Adapter(self.binaries, [f"--target={self.server.target}", "--session=stream"])
        self.addCleanup(qs.close)
        # CouchDB's timeout 2 s, of which the adapter gives a try 1.6 s.
        self.assertIs(qs.reply(["reset", {"timeout": 2000}]), True, qs.diagnostics())
        self.assertIs(qs.reply(["add_fun", f"{MODULE}.logs_while_working"]), True)
        qs.send_line(json.dumps(["map_doc", {"_id": "d1", "ticks": 15, "every": 0.2}]))
        for i in range(10):  # 2 s in: past 1.6 s from the start, not from the last line
            self.assertEqual(json.loads(qs.read_line(timeout=10)), ["log", f"tick {i}"],
                             qs.diagnostics())
        self.server.kill()
        self.server = self.start_server()
        lines = []
        while not lines or lines[-1][0] == "log":
            lines.append(json.loads(qs.read_line(timeout=20)))
        # The function ran again from the start on the new service, and CouchDB reads its lines
        # as that run made them (its log then holds both runs' lines, as both ran).
        self.assertEqual(lines, [["log", f"tick {i}"] for i in range(15)] + [[[["d1", 15]]]],
                         qs.diagnostics())

if __name__ == "__main__":
    harness.ServerTestCase.binaries, rest = harness.parse_binaries(sys.argv[1:])
    LogLinesThenFailoverTest.binaries = harness.ServerTestCase.binaries
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
