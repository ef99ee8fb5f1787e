"""cnp_function_errors_total for CouchDB's own traffic (issue 10): a map function that raises on
some documents of a session is counted by function, once per failing document, on both session
paths: the Session stream (the server counts each reply its session driver receives) and a
direct session (the session worker tallies them and sends the server session_progress frames,
at most one a second, the last before the session's end). The adapter exits only once the
server has answered the session's end, so the scrape right after it sees every frame."""

import array
import fcntl
import json
import os
import re
import signal
import sys
import termios
import time
import unittest
import urllib.request

import cnp_testing
import harness

RESET = ["reset", {"reduce_limit": True, "timeout": 20000}]
SOME_FAIL = "fixture_fns.map_error"           # raises where n % 5 == 0 or n % 7 == 0
ALL_FAIL = "fixture_fns.map_fails_for_the_test"  # raises on every document
NEVER_FAILS = "fixture_fns.town_n|1"
SLOW = "fixture_fns.slow_town"                 # opens doc["started"], then sleeps doc["seconds"]
IMPORT_FAILS = "worker_import_fails.f"         # its module raises ZeroDivisionError on import
BROKEN_MODULE = "worker_import_fails"          # the series that counts it: the module's


class SessionMetricsTest(harness.ServerTestCase):
    server_extra = ("--metrics-listen=127.0.0.1:0",
                    "--allow-module=fixture_fns,worker_import_fails")

    def log(self):
        with open(self.server.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def scrape(self):
        # The server logs its metrics port before it is ready.
        port = re.search(r"/metrics \(port (\d+)\)", self.log()).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
            return answer.read().decode()

    def value(self, series):
        """The value of `series` ('name{labels}') in a scrape now (0 when it has none)."""
        series += " "
        for line in self.scrape().splitlines():
            if line.startswith(series):
                return float(line[len(series):])
        return 0

    def errors(self, function):
        """cnp_function_errors_total of `function` in a scrape now (0 when it has no series)."""
        return self.value(f'cnp_function_errors_total{{function="{function}"}}')

    def started(self, functions):
        qs = self.adapter()
        self.assertIs(qs.reply(RESET), True, qs.diagnostics())
        for function in functions:
            self.assertIs(qs.reply(["add_fun", function]), True, qs.diagnostics())
        return qs

    def test_documents_a_function_raised_on_are_counted_by_function(self):
        before = {f: self.errors(f) for f in (SOME_FAIL, NEVER_FAILS)}
        qs = self.started([SOME_FAIL, NEVER_FAILS])
        failing = 0
        for n in range(1, 41):
            rows = qs.reply(["map_doc", {"_id": f"{self.session}-{n}", "town": "Oslo", "n": n}])
            self.assertEqual(rows[1], [["Oslo", n]], qs.diagnostics())
            if n % 5 == 0 or n % 7 == 0:
                failing += 1
                self.assertEqual(rows[0], [])
        self.assertEqual(qs.close(), 0, qs.diagnostics())
        self.assertEqual(self.errors(SOME_FAIL) - before[SOME_FAIL], failing)
        self.assertEqual(self.errors(NEVER_FAILS) - before[NEVER_FAILS], 0)

    def test_a_thousand_failing_documents_cost_a_few_progress_frames(self):
        before = self.errors(ALL_FAIL)
        qs = self.started([ALL_FAIL])
        started = time.monotonic()
        for n in range(1000):
            self.assertEqual(qs.reply(["map_doc", {"_id": f"many-{n}", "n": n}]), [[]])
        self.assertEqual(qs.close(), 0, qs.diagnostics())
        elapsed = time.monotonic() - started
        self.assertEqual(self.errors(ALL_FAIL) - before, 1000)
        if self.session != "direct":
            return  # the stream's server counts each reply itself: no frames
        # The server's log line at the session's end says how many frames it received.
        ended = re.findall(r"direct session \S+ ended after 1002 commands \((\d+) progress frames\)",
                           self.log())
        self.assertEqual(len(ended), 1, self.log())
        frames = int(ended[0])
        print(f"{frames} progress frames for 1000 failing documents in {elapsed:.2f} s",
              file=sys.stderr)
        # One at the first error, at most one a second after it, and the last one (the worker's
        # clock ticks coarsely: 1% slack).
        self.assertGreaterEqual(frames, 1)
        self.assertLessEqual(frames, int(elapsed * 1.01) + 2, f"{frames} frames in {elapsed:.2f} s")
        self.assertLess(frames, 50)

    def test_a_module_that_raises_on_import_is_counted_each_time_it_fails(self):
        """Import failures were logged (kind "import") but never counted. Each add_fun that
        fails on it counts, the repeats the worker answers from its failed-import cache (no
        import, no log line) too."""
        before = self.errors(BROKEN_MODULE)
        qs = self.adapter()
        self.assertIs(qs.reply(RESET), True, qs.diagnostics())
        for _ in range(3):
            reply = qs.reply(["add_fun", IMPORT_FAILS])
            self.assertEqual(reply[0], "error", reply)
            self.assertIn("ZeroDivisionError", json.dumps(reply))
        self.assertEqual(qs.close(), 0, qs.diagnostics())
        self.assertEqual(self.errors(BROKEN_MODULE) - before, 3, self.scrape())

    def session_worker(self, qs):
        """The pid of the worker serving `qs`'s direct session, from the server's log."""
        marker = f"started: adapter pid {qs.process.pid}, worker pid "
        line = next(line for line in self.log().splitlines() if marker in line)
        return int(line.split(marker, 1)[1].split()[0])

    def test_a_session_worker_killed_between_commands_is_a_crash_and_writes_nothing(self):
        """Session workers were missing from the worker metrics: their starts and a crash moved
        nothing. And a worker killed while CouchDB had asked nothing had worker_crashed written
        to CouchDB all the same, a line answering nothing; now the query server just ends."""
        if self.session != "direct":
            return  # the stream's sessions use the batch pool's workers
        crash = 'cnp_worker_exits_total{cause="crash",pool="session"}'
        starts = 'cnp_worker_starts_total{pool="session"}'
        crashed_before = self.value(crash)
        qs = self.started([NEVER_FAILS])
        self.assertGreater(self.value(starts), 0)
        os.kill(self.session_worker(qs), signal.SIGKILL)
        self.assertIsNone(qs.read_line(), qs.diagnostics())  # the end of output, no line
        self.assertEqual(qs.exited(), 1, qs.diagnostics())
        self.assertIn("between commands", qs.diagnostics())
        self.assertEqual(self.value(crash) - crashed_before, 1, self.scrape())

    def test_a_session_worker_killed_mid_command_answers_it_worker_crashed(self):
        if self.session != "direct":
            return
        qs = self.started([SLOW])
        started = cnp_testing.started_fifo()
        qs.send_line(json.dumps(["map_doc", {"_id": "slow", "town": "Oslo", "n": 1,
                                             "started": started, "seconds": 60}]))
        os.close(os.open(started, os.O_RDONLY))  # returns once the function has opened it
        os.kill(self.session_worker(qs), signal.SIGKILL)
        reply = json.loads(qs.read_line())
        self.assertEqual(reply[:2], ["error", "worker_crashed"], qs.diagnostics())
        self.assertEqual(qs.exited(), 1, qs.diagnostics())

    def test_a_worker_killed_part_way_through_an_answer_has_no_line_written_after_it(self):
        """Found by a review: the adapter's worker_crashed line was written after the part of
        the answer CouchDB already had, and CouchDB read the two as one line. Now CouchDB gets
        that part, then the end of the output, as from a query server that died."""
        if self.session != "direct":
            return  # the stream's adapter writes whole answers only
        qs = self.started([NEVER_FAILS])
        worker = self.session_worker(qs)
        # An answer of 4 MB, which this test does not read: the worker fills CouchDB's pipe and
        # blocks in the middle of writing it.
        qs.send_line(json.dumps(["map_doc", {"_id": "big", "town": "x" * (4 << 20), "n": 1}]))
        out = qs.process.stdout.fileno()
        capacity = fcntl.fcntl(out, fcntl.F_GETPIPE_SZ)
        deadline = time.monotonic() + 30
        while self.unread(out) < capacity and time.monotonic() < deadline:
            time.sleep(0.01)  # polled, bounded: the pipe filling is the only sign
        self.assertEqual(self.unread(out), capacity, qs.diagnostics())
        os.kill(worker, signal.SIGKILL)
        output = b""
        while chunk := os.read(out, 1 << 16):
            output += chunk
        self.assertEqual(qs.exited(), 1, qs.diagnostics())
        self.assertTrue(output.startswith(b'[[["xxx'), output[:100])
        # (Not assertNotIn: its message would quote the whole 64 KB.)
        self.assertFalse(b"\n" in output, output[-300:])
        self.assertFalse(b"worker_crashed" in output, output[-300:])
        self.assertIn("in the middle of a line to CouchDB", qs.diagnostics())

    @staticmethod
    def unread(fd):
        """How many bytes wait in the pipe `fd` reads."""
        count = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, count)
        return count[0]


harness.through_each_path(SessionMetricsTest, globals())


if __name__ == "__main__":
    harness.ServerTestCase.binaries, rest = harness.parse_binaries(sys.argv[1:])
    unittest.main(argv=[sys.argv[0]] + rest)
