"""Direct sessions drain on SIGTERM as gRPC calls do (found by a review: a graceful stop killed
them in the middle of a command, and reported an idle one to CouchDB as a crash).

With SIGTERM to cnp-server: a command in flight in a direct session is answered, then the session
ends and its adapter exits 0 without writing anything more; an idle session ends at once, with
nothing written to CouchDB and no ERROR in the server's log; a line CouchDB had half written is
read on and answered; a command still running when --shutdown-grace ends is cut off, CouchDB
getting an error line for it. Each test has a server of its own, which the test stops."""

import fcntl
import json
import os
import signal
import sys
import tempfile
import termios
import time
import unittest

import harness
from cnp_testing import read_log, wait_for_fifo, wait_for_log

RESET = ["reset", {"reduce_limit": True, "timeout": 60000}]

DRAIN_FNS = '''
import os
import time


def held(doc):
    """Tells the test it runs (a FIFO, if the document names one), then waits until the test
    releases it (a file)."""
    if "fifo" in doc:
        with open(doc["fifo"], "w") as fifo:
            fifo.write("started\\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(doc["release"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield doc["_id"], "released"


def plain(doc):
    yield doc["_id"], len(doc.get("pad", ""))
'''


def unread_bytes(pipe):
    """How many bytes written to `pipe` (a file object on a pipe's end) nobody has read yet."""
    return int.from_bytes(fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")


def blocked_in_read(pid):
    """Whether process `pid` is in the read(2) system call (number 0 on x86-64)."""
    with open(f"/proc/{pid}/syscall", encoding="ascii") as syscall:
        return syscall.read().split()[0] == "0"


def sigterm_pending(pid):
    """Whether SIGTERM is pending for process `pid` or any of its threads."""
    bit = 1 << (signal.SIGTERM - 1)
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                    return True
    return False


class DrainTestCase(unittest.TestCase):
    binaries = None
    grace = "20s"

    def setUp(self):
        self.tmp = harness.socket_dir("cnp-drain-")
        self.addCleanup(self.tmp.cleanup)
        self.fns = tempfile.TemporaryDirectory(prefix="cnp-drain-fns-")
        self.addCleanup(self.fns.cleanup)
        with open(os.path.join(self.fns.name, "drain_fns.py"), "w") as module:
            module.write(DRAIN_FNS)
        self.server = harness.Server(
            self.binaries, os.path.join(self.tmp.name, "cnp.sock"), workers=1,
            extra=(f"--python-path={self.fns.name}", "--allow-module=drain_fns",
                   f"--shutdown-grace={self.grace}"))
        self.addCleanup(self.server.kill)
        self.release = os.path.join(self.fns.name, "release")
        self.fifo = os.path.join(self.fns.name, "fifo")
        os.mkfifo(self.fifo)

    def adapter(self):
        qs = harness.Adapter(self.binaries, [f"--target={self.server.target}", "--session=direct"])
        self.addCleanup(lambda: qs.process.poll() is None and qs.process.kill())
        self.assertIs(qs.reply(RESET), True, qs.diagnostics())
        return qs

    def stop_during_held_command(self):
        """A session whose map_doc of drain_fns.held is running when the server gets SIGTERM."""
        qs = self.adapter()
        self.assertIs(qs.reply(["add_fun", "drain_fns.held"]), True, qs.diagnostics())
        qs.send_line(json.dumps(["map_doc", {"_id": "a", "fifo": self.fifo,
                                             "release": self.release}]))
        wait_for_fifo(self.fifo)
        self.stop_server()
        return qs

    def session_worker(self, qs):
        """The pid of the worker serving `qs`'s direct session, as the server logged it."""
        marker = f"started: adapter pid {qs.process.pid}, worker pid "
        line = wait_for_log(self.server, lambda line: marker in line)
        return int(line.split(marker, 1)[1].split()[0].rstrip(","))

    def stop_server(self):
        """SIGTERM to the server alone (as systemd's KillMode=mixed sends it)."""
        self.stopped_at = time.monotonic()
        os.kill(self.server.process.pid, signal.SIGTERM)

    def server_exit(self, timeout=30.0):
        status = self.server.process.wait(timeout=timeout)
        return status, time.monotonic() - self.stopped_at

    def assert_ended_cleanly(self, qs):
        """Nothing more to CouchDB, the adapter and the server exit 0, and no crash logged."""
        self.assertIsNone(qs.read_line())
        self.assertEqual(qs.exited(), 0, qs.diagnostics())
        status, _ = self.server_exit()
        self.assertEqual(status, 0)
        self.assert_no_crash_reported()

    def assert_no_crash_reported(self):
        log = read_log(self.server)
        for line in log.splitlines():
            self.assertNotIn("ERROR", line, log)
            self.assertNotIn("crashed", line, log)
            self.assertNotIn("killed by signal", line, log)


class DirectSessionDrainTest(DrainTestCase):

    def test_a_command_in_flight_is_answered_then_the_session_ends_cleanly(self):
        qs = self.stop_during_held_command()
        # The server drains (its worker asked to end, the line logged after the signal); the
        # command still runs. (Waiting for "no new calls" instead let the command be answered
        # before the server had come to its sessions.)
        wait_for_log(self.server, "direct sessions end once the command each is serving")
        self.assertIsNone(self.server.process.poll(), "the server exited with a command running")
        open(self.release, "w").close()
        self.assertEqual(json.loads(qs.read_line()), [[["a", "released"]]], qs.diagnostics())
        # Then nothing more to CouchDB: the query server ends, as an idle one that exits.
        self.assertIsNone(qs.read_line())
        self.assertEqual(qs.exited(), 0, qs.diagnostics())
        self.assertIn("cnp-server is stopping", qs.diagnostics())
        status, _ = self.server_exit()
        self.assertEqual(status, 0)
        self.assertIn("SERVER_STOPPING", read_log(self.server))
        self.assert_no_crash_reported()

    def test_the_next_line_of_the_request_in_flight_is_answered_too(self):
        # CouchDB sends a request's lines back to back (ddoc new then the call, map_doc after
        # map_doc): the session ended at the first boundary after the stop, the next line
        # unread, and the request failed (a review). Here it is in the pipe already.
        qs = self.stop_during_held_command()
        wait_for_log(self.server, "direct sessions end once the command each is serving")
        qs.send_line(json.dumps(["map_doc", {"_id": "b", "release": self.release}]))
        open(self.release, "w").close()
        self.assertEqual(json.loads(qs.read_line()), [[["a", "released"]]], qs.diagnostics())
        self.assertEqual(json.loads(qs.read_line()), [[["b", "released"]]], qs.diagnostics())
        self.assert_ended_cleanly(qs)

    def test_a_stop_while_waiting_for_the_requests_next_line_still_reads_it(self):
        # The stop comes while the session waits for CouchDB right after an answer (between
        # `ddoc new` and its call, say): the next line, sent at once, is read and answered.
        # The signal goes to the worker itself here, as the server sends it, so that it comes
        # within the 100 ms the session waits for that line.
        qs = self.adapter()
        self.assertIs(qs.reply(["add_fun", "drain_fns.plain"]), True, qs.diagnostics())
        worker = self.session_worker(qs)
        self.assertEqual(qs.reply(["map_doc", {"_id": "a"}]), [[["a", 0]]])
        # Blocked in read(2) of CouchDB's pipe (syscall 0), where the signal's handler, not the
        # session's next boundary, decides.
        deadline = time.monotonic() + 30
        while not blocked_in_read(worker):
            self.assertLess(time.monotonic(), deadline, "the worker did not wait for CouchDB")
            time.sleep(0.001)
        os.kill(worker, signal.SIGTERM)
        # Handled before the line comes (it woke the read first, and was read, before).
        while sigterm_pending(worker):
            self.assertLess(time.monotonic(), deadline, "the worker did not take the signal")
            time.sleep(0.001)
        qs.send_line(json.dumps(["map_doc", {"_id": "b"}]))
        self.assertEqual(json.loads(qs.read_line()), [[["b", 0]]], qs.diagnostics())
        self.assertIsNone(qs.read_line())
        self.assertEqual(qs.exited(), 0, qs.diagnostics())
        self.assertIn("SERVER_STOPPING", read_log(self.server))

    def test_an_idle_session_ends_at_once_without_a_line_to_couchdb(self):
        qs = self.adapter()
        self.assertIs(qs.reply(["add_fun", "drain_fns.plain"]), True, qs.diagnostics())
        self.assertEqual(qs.reply(["map_doc", {"_id": "a"}]), [[["a", 0]]])
        self.stop_server()
        self.assertIsNone(qs.read_line(), "the adapter wrote CouchDB a line")
        self.assertEqual(qs.exited(), 0, qs.diagnostics())
        self.assertNotIn("crash", qs.diagnostics())
        status, took = self.server_exit()
        self.assertEqual(status, 0)
        self.assertLess(took, 10, "an idle session held the shutdown for its grace (20 s)")
        self.assertIn("SERVER_STOPPING", read_log(self.server))
        self.assert_no_crash_reported()

    def test_a_line_half_written_at_the_stop_is_read_on_and_answered(self):
        qs = self.adapter()
        self.assertIs(qs.reply(["add_fun", "drain_fns.plain"]), True, qs.diagnostics())
        line = json.dumps(["map_doc", {"_id": "half", "pad": "x" * 1000}]).encode() + b"\n"
        qs.process.stdin.write(line[:500])
        qs.process.stdin.flush()
        # The worker has read the first half: it waits for the rest, in the middle of a line.
        deadline = time.monotonic() + 30
        while unread_bytes(qs.process.stdin):
            self.assertLess(time.monotonic(), deadline, "the worker did not read the line")
            time.sleep(0.01)
        self.stop_server()
        # Its worker asked to end while it waits for the line's rest.
        wait_for_log(self.server, "direct sessions end once the command each is serving")
        qs.process.stdin.write(line[500:])
        qs.process.stdin.flush()
        self.assertEqual(json.loads(qs.read_line()), [[["half", 1000]]], qs.diagnostics())
        self.assert_ended_cleanly(qs)

    def test_a_list_open_at_the_stop_runs_to_its_end(self):
        qs = self.adapter()
        ddoc = {"_id": "_design/d", "language": "python",
                "lists": {"simple": "fixture_fns.list_simple"}}
        self.assertIs(qs.reply(["ddoc", "new", "_design/d", ddoc]), True, qs.diagnostics())
        self.assertEqual(qs.reply(["ddoc", "_design/d", ["lists", "simple"],
                                   [{"foo": "bar"}, {"q": "ok"}]]),
                         ["start", ["first chunk", "ok"], {"headers": {}}])
        self.assertEqual(qs.reply(["list_row", {"key": "a"}]), ["chunks", ["a"]])
        self.stop_server()
        # Logged once the session's worker has been sent SIGTERM: the list waits for its next
        # row, and is a request in flight all the same.
        wait_for_log(self.server, "direct sessions end once the command each is serving")
        self.assertEqual(qs.reply(["list_row", {"key": "b"}]), ["chunks", ["b"]],
                         qs.diagnostics())
        self.assertEqual(qs.reply(["list_end"]), ["end", ["early"]])
        self.assert_ended_cleanly(qs)


class GraceEndsTest(DrainTestCase):
    grace = "1s"

    def test_a_command_past_the_grace_is_cut_with_an_error_for_couchdb(self):
        qs = self.stop_during_held_command()
        line = qs.read_line(timeout=20)
        self.assertIsNotNone(line, qs.diagnostics())
        error = json.loads(line)
        self.assertEqual(error[:2], ["error", "unavailable"], error)
        self.assertIn("--shutdown-grace", error[2])
        self.assertIsNone(qs.read_line())
        self.assertEqual(qs.exited(), 1, qs.diagnostics())
        status, took = self.server_exit()
        self.assertEqual(status, 0)
        self.assertLess(took, 10)
        log = read_log(self.server)
        self.assertIn("cut off by the end of the shutdown grace", log)
        self.assertNotIn("ERROR", log)


if __name__ == "__main__":
    DrainTestCase.binaries, rest = harness.parse_binaries(sys.argv[1:])
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
