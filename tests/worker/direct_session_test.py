"""Direct sessions: a real cnp-worker is handed CouchDB's two pipes in a DirectSession task
(SCM_RIGHTS, as cnp-server hands them) and serves CouchDB's line protocol on them itself.

Every real CouchDB 3.4.3 transcript is replayed through one worker, a session per query-server
process, with the same rewriting and comparison as the adapter's replay through cnp-server
(tests/adapter/replay_transcripts_test.py), so both transports must give couchjs's answers."""

import argparse
import json
import mmap
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import cnp_testing

ARGS = None
# A worker capped at 110 MiB of address space holds a few small lines, but its line buffer cannot
# grow (doubling) to hold a 60 MiB one.
MEMORY_CAP_MB = 110
LINE_OVER_CAP_MB = 60


def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--functions", required=True, help="a file in tests/functions")
    parser.add_argument("--session-functions", required=True, help="a file in session_fns")
    parser.add_argument("--testdata", required=True)
    parser.add_argument("--replay", required=True, help="tests/adapter/replay_transcripts_test.py")
    parser.add_argument("--pb2", required=True, help="the generated worker_pb2.py")
    return parser.parse_known_args(argv)


class Session:
    """CouchDB's side of the two pipes."""

    def __init__(self, commands, answers):
        self.commands, self.answers = commands, answers
        self.buffer = b""

    def send_line(self, line):
        data = line.encode() + b"\n"
        while data:
            data = data[os.write(self.commands, data):]

    def read_line(self, timeout=30.0):
        """The next answer line, or None when the worker closed the pipe."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the worker did not answer in time")
            ready, _, _ = select.select([self.answers], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.answers, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def call(self, command, timeout=30.0):
        """Every answer line to one command: the log lines, then the reply."""
        self.send_line(command if isinstance(command, str) else json.dumps(command))
        lines = []
        while True:
            line = self.read_line(timeout)
            if line is None:
                return lines
            lines.append(line)
            value = json.loads(line)
            if not (isinstance(value, list) and len(value) == 2 and value[0] == "log"):
                return lines

    def close_input(self):
        if self.commands >= 0:
            os.close(self.commands)
            self.commands = -1

    def at_end_of_output(self, timeout=30.0):
        return self.read_line(timeout) is None

    def close(self):
        self.close_input()
        if self.answers >= 0:
            os.close(self.answers)
            self.answers = -1


class SharedWord:
    """The server's word for where a session stands with CouchDB (worker.proto's CouchDbTurn,
    service/common/shared_flag.h): one word in a memfd."""

    OWED_NOTHING, OWED_AN_ANSWER, HOLDS_PART_OF_A_LINE = 0, 1, 2

    def __init__(self):
        self.fd = os.memfd_create("couchdb-turn")
        os.ftruncate(self.fd, 4)
        self.memory = mmap.mmap(self.fd, 4)

    def value(self):
        return struct.unpack("<I", self.memory[:4])[0]

    def wait_for(self, value, timeout=30.0):
        """Whether the word becomes `value` within `timeout` (polled: nothing signals it)."""
        deadline = time.monotonic() + timeout
        while self.value() != value and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.value() == value

    def close(self):
        self.memory.close()
        os.close(self.fd)


class Worker:
    """A cnp-worker on a socketpair, as cnp-server starts one."""

    def __init__(self, extra_args=(), python_paths=None):
        self.sock, child = socket.socketpair()
        self.stderr = tempfile.TemporaryFile()
        self._diagnostics = ""
        paths = python_paths or [os.path.dirname(ARGS.functions),
                                 os.path.dirname(ARGS.session_functions)]
        argv = ([ARGS.worker, f"--fd={child.fileno()}"] +
                [f"--python-path={path}" for path in paths] + list(extra_args))
        self.process = subprocess.Popen(argv, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                                        stderr=self.stderr)
        child.close()
        self.progress = []

    def send(self, task, fds=()):
        data = task.SerializeToString()
        frame = struct.pack("<I", len(data)) + data
        if fds:
            socket.send_fds(self.sock, [frame], list(fds))
        else:
            self.sock.sendall(frame)

    def receive(self, timeout=30.0):
        """The next reply that is not a session_progress frame; those on the way are kept in
        self.progress, in order."""
        while True:
            reply = self.receive_frame(timeout)
            if not reply.HasField("session_progress"):
                return reply
            self.progress.append(reply.session_progress)

    def receive_frame(self, timeout=30.0):
        """The next frame the worker wrote, whatever it is."""
        self.sock.settimeout(timeout)
        try:
            header = self._exactly(4)
            reply = worker_pb2.Reply()
            reply.ParseFromString(self._exactly(struct.unpack("<I", header)[0]))
            return reply
        finally:
            self.sock.settimeout(None)

    def function_errors(self):
        """The function errors of every session_progress frame received so far, summed."""
        counts = {}
        for progress in self.progress:
            for entry in progress.function_errors:
                counts[entry.function] = counts.get(entry.function, 0) + entry.count
        return counts

    def _exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the worker closed its socket")
            data += chunk
        return data

    def start_session(self, timeout_ms=5000, session_id="test", max_answer_bytes=0,
                      max_call_timeout_ms=0, max_line_bytes=0, call_timeout_set_by_adapter=False,
                      couchdb_turn=None):
        """Sends a DirectSession task with fresh pipes (and `couchdb_turn`'s descriptor, a
        SharedWord's, as the server sends one); returns CouchDB's side of them."""
        commands_read, commands_write = os.pipe()
        answers_read, answers_write = os.pipe()
        task = worker_pb2.Task()
        task.direct_session.id = session_id
        task.direct_session.default_timeout_ms = timeout_ms
        task.direct_session.max_answer_bytes = max_answer_bytes
        task.direct_session.max_call_timeout_ms = max_call_timeout_ms
        task.direct_session.max_line_bytes = max_line_bytes
        task.direct_session.call_timeout_set_by_adapter = call_timeout_set_by_adapter
        self.send(task, [commands_read, answers_write] +
                  ([couchdb_turn.fd] if couchdb_turn is not None else []))
        # The worker holds the only other ends now, so its closing them is seen here.
        os.close(commands_read)
        os.close(answers_write)
        return Session(commands_write, answers_read)

    def map_task(self, functions, docs):
        task = worker_pb2.Task()
        task.map.functions.extend(functions)
        task.map.docs.extend(doc.encode() for doc in docs)
        self.send(task)
        return self.receive()

    def stop(self, timeout=30.0):
        self.sock.close()
        return self.wait(timeout)

    def wait(self, timeout=30.0):
        status = self.process.wait(timeout=timeout)
        self.diagnostics()
        self.stderr.close()
        return status

    def diagnostics(self):
        if not self.stderr.closed:
            self.stderr.seek(0)
            self._diagnostics = self.stderr.read().decode(errors="replace")
        return self._diagnostics


class ReplayTranscriptsTest(unittest.TestCase):
    """couchjs's answers, through a direct session."""

    @classmethod
    def setUpClass(cls):
        cls.worker = Worker()

    @classmethod
    def tearDownClass(cls):
        status = cls.worker.stop()
        assert status == 0, cls.worker.diagnostics()

    def replay(self, name):
        path = os.path.join(ARGS.testdata, name)
        compared = 0
        for title, exchanges in replay.sections(path):
            session = self.worker.start_session()
            try:
                for command_line, expected_lines in exchanges:
                    command = replay.rewrite_command(json.loads(command_line))
                    actual_lines = session.call(command)
                    where = f"{name} {title}\n> {command_line[:300]}"
                    self.assertEqual(len(actual_lines), len(expected_lines),
                                     f"{where}\nexpected {expected_lines}\nactual {actual_lines}"
                                     f"\n{self.worker.diagnostics()}")
                    for expected_line, actual_line in zip(expected_lines, actual_lines):
                        expected, actual = json.loads(expected_line), json.loads(actual_line)
                        if expected != actual and not replay.javascript_specific(expected, actual):
                            self.fail(f"{where}\nexpected {expected_line}\nactual   {actual_line}")
                        compared += 1
                session.close_input()
                reply = self.worker.receive()
                self.assertEqual(reply.session_end.reason, worker_pb2.SessionEnd.INPUT_CLOSED,
                                 str(reply))
                self.assertEqual(reply.session_end.commands, len(exchanges))
                self.assertTrue(session.at_end_of_output())
            finally:
                session.close()
        self.assertGreater(compared, 0)


class SessionLifecycleTest(unittest.TestCase):
    """How sessions end, and what the worker does after."""

    def setUp(self):
        self.worker = Worker()

    def tearDown(self):
        if self.worker.process.poll() is None:
            self.worker.stop()

    def test_input_closed_ends_the_session_and_the_worker_takes_the_next_task(self):
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset", {"timeout": 5000}]), ["true"])
        self.assertEqual(session.call(["add_fun", "fixture_fns.town_n|1"]), ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "a", "town": "Oslo", "n": 3}]),
                         ['[[["Oslo",3]]]'])
        session.close_input()
        end = self.worker.receive().session_end
        self.assertEqual(end.reason, worker_pb2.SessionEnd.INPUT_CLOSED)
        self.assertEqual(end.commands, 3)
        self.assertTrue(session.at_end_of_output())
        session.close()

        reply = self.worker.map_task(["fixture_fns.town_n|1"], ['{"_id":"b","town":"Rome","n":1}'])
        self.assertEqual(reply.map.results[0].rows, b'[[["Rome",1]]]')
        # And a second session on the same worker starts clean (no map functions).
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "c"}]), ["[]"])
        session.close()
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.INPUT_CLOSED)
        self.assertEqual(self.worker.stop(), 0, self.worker.diagnostics())

    def test_a_line_that_is_not_json_exits_as_couchjs_would(self):
        session = self.worker.start_session()
        lines = session.call("this is not json")
        self.assertEqual(len(lines), 1)
        self.assertEqual(json.loads(lines[0])[:2], ["fatal", "query_protocol_error"])
        end = self.worker.receive().session_end
        self.assertEqual(end.reason, worker_pb2.SessionEnd.PROTOCOL_EXIT)
        self.assertIn("query_protocol_error", end.message)
        self.assertTrue(session.at_end_of_output())
        session.close()
        # The worker is fine and serves on.
        reply = self.worker.map_task(["fixture_fns.town_n|1"], ['{"_id":"b","town":"Rome","n":1}'])
        self.assertEqual(reply.map.results[0].rows, b'[[["Rome",1]]]')

    def send_over_the_cap(self, session, prefix):
        """A line of 64 MiB and one byte, then its newline."""
        data = prefix + b" " * ((64 << 20) + 1 - len(prefix)) + b"\n"
        while data:
            data = data[os.write(session.commands, data[:1 << 20]):]

    def test_a_line_over_the_cap_is_dropped_and_answered_too_large(self):
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        self.send_over_the_cap(session, b'["map_doc",{"_id":"huge","pad":"')
        line = session.read_line()
        self.assertEqual(json.loads(line)[:2], ["error", "too_large"])
        self.assertIn("67108864 bytes", line)
        # The stream is still framed: the session goes on.
        self.assertEqual(session.call(["add_fun", "fixture_fns.town_n|1"]), ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "a", "town": "Oslo", "n": 1}]),
                         ['[[["Oslo",1]]]'])
        session.close_input()
        end = self.worker.receive().session_end
        self.assertEqual(end.reason, worker_pb2.SessionEnd.INPUT_CLOSED)
        self.assertEqual(end.commands, 4)
        session.close()

    def test_a_list_row_over_the_cap_ends_the_session(self):
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        ddoc = {"_id": "_design/l", "lists": {"rows": "fixture_fns.list_rows"}}
        self.assertEqual(session.call(["ddoc", "new", "_design/l", ddoc]), ["true"])
        start = json.loads(session.call(
            ["ddoc", "_design/l", ["lists", "rows"], [{"total_rows": 3, "offset": 0}, {}]])[-1])
        self.assertEqual(start[0], "start")
        self.send_over_the_cap(session, b'["list_row",{"id":"a","key":"')
        self.assertEqual(json.loads(session.read_line())[:2], ["error", "too_large"])
        end = self.worker.receive().session_end
        self.assertEqual(end.reason, worker_pb2.SessionEnd.PROTOCOL_EXIT)
        self.assertTrue(session.at_end_of_output())
        session.close()
        reply = self.worker.map_task(["fixture_fns.town_n|1"], ['{"_id":"b","town":"Rome","n":1}'])
        self.assertEqual(reply.map.results[0].rows, b'[[["Rome",1]]]')

    def test_a_last_line_without_its_newline_is_answered(self):
        session = self.worker.start_session()
        os.write(session.commands, b'["reset"]\n["add_fun","fixture_fns.town_n|1"]')
        session.close_input()
        self.assertEqual(session.read_line(), "true")
        self.assertEqual(session.read_line(), "true")
        self.assertTrue(session.at_end_of_output())
        end = self.worker.receive().session_end
        self.assertEqual(end.reason, worker_pb2.SessionEnd.INPUT_CLOSED)
        self.assertEqual(end.commands, 2)
        session.close()

    def test_half_a_last_line_is_fatal_not_dropped(self):
        session = self.worker.start_session()
        os.write(session.commands, b'["map_doc",{"_id":"cut')
        session.close_input()
        self.assertEqual(json.loads(session.read_line())[:2], ["fatal", "query_protocol_error"])
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.PROTOCOL_EXIT)
        session.close()

    def test_an_abandoned_list_is_unwound_and_the_worker_serves_on(self):
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        ddoc = {"_id": "_design/l", "lists": {"rows": "fixture_fns.list_rows"}}
        self.assertEqual(session.call(["ddoc", "new", "_design/l", ddoc]), ["true"])
        start = json.loads(session.call(
            ["ddoc", "_design/l", ["lists", "rows"], [{"total_rows": 3, "offset": 0}, {}]])[-1])
        self.assertEqual(start[0], "start")
        chunks = json.loads(session.call(["list_row", {"id": "a", "key": "k", "value": 1}])[-1])
        self.assertEqual(chunks[0], "chunks")
        session.close_input()  # CouchDB went away with the list waiting in get_row()
        end = self.worker.receive().session_end
        self.assertEqual(end.reason, worker_pb2.SessionEnd.INPUT_CLOSED)
        self.assertEqual(end.commands, 4)
        session.close()
        reply = self.worker.map_task(["fixture_fns.town_n|1"], ['{"_id":"b","town":"Rome","n":1}'])
        self.assertEqual(reply.map.results[0].rows, b'[[["Rome",1]]]')

    def wait_for_refusals(self, report):
        """The lines of `report` (fixture_fns.leaky_thread's) once both emit() and log() have
        been tried from the thread (woken as the thread writes the report); fails if either was
        accepted."""
        lines = cnp_testing.wait_for_text(
            report, lambda text: {"emit", "log"} <= {line.split(" ", 1)[0]
                                                     for line in text.splitlines()},
            timeout=20).splitlines()
        self.assertNotIn("emit accepted", lines)
        self.assertNotIn("log accepted", lines)
        self.assertTrue(any(line.startswith("emit refused: emit() called from another thread "
                                            "than the function's") for line in lines), lines)
        return lines

    def test_a_functions_thread_cannot_emit_into_the_next_session(self):
        scratch = tempfile.mkdtemp()
        report, stop = os.path.join(scratch, "report"), os.path.join(scratch, "stop")
        try:
            session = self.worker.start_session(session_id="tenant-a")
            self.assertEqual(session.call(["reset"]), ["true"])
            self.assertEqual(session.call(["add_fun", "fixture_fns.leaky_thread"]), ["true"])
            self.assertEqual(session.call(["map_doc", {"_id": "tenantA-doc", "report": report,
                                                       "stop": stop}]),
                             ['[[["tenantA-doc",null]]]'])
            session.close_input()
            reply = self.worker.receive()
            session.close()
            self.assertEqual(reply.session_end.reason, worker_pb2.SessionEnd.INPUT_CLOSED)
            # Its thread still runs: the worker asks not to serve another session.
            self.assertTrue(reply.recycle)

            # Served one all the same (as a server that reused it would), the other session's
            # answer is its function's alone, while the thread keeps calling emit() and log().
            session = self.worker.start_session(session_id="tenant-b")
            try:
                self.assertEqual(session.call(["reset"]), ["true"])
                self.assertEqual(session.call(["add_fun", "fixture_fns.town_when_tried"]),
                                 ["true"])
                self.assertEqual(session.call(["map_doc", {"_id": "b1", "town": "Oslo", "n": 1,
                                                           "tried": report}]),
                                 ['[[["Oslo",1]]]'])
                self.wait_for_refusals(report)
            finally:
                session.close_input()
            self.assertTrue(self.worker.receive().recycle)
            session.close()
            open(stop, "w").close()
            self.worker.stop()
            self.assertIn("a function started still ran after direct session tenant-a",
                          self.worker.diagnostics())
        finally:
            open(stop, "w").close()
            shutil.rmtree(scratch, ignore_errors=True)

    def test_a_functions_thread_cannot_emit_into_the_next_task(self):
        scratch = tempfile.mkdtemp()
        report, stop = os.path.join(scratch, "report"), os.path.join(scratch, "stop")
        try:
            doc = json.dumps({"_id": "tenantA-doc", "report": report, "stop": stop})
            reply = self.worker.map_task(["fixture_fns.leaky_thread"], [doc])
            self.assertEqual(reply.map.results[0].rows, b'[[["tenantA-doc",null]]]')
            self.assertTrue(reply.recycle)
            self.assertTrue(reply.threads_left_running)  # not a MemoryError: the rows stand
            # A worker kept on all the same (it asked to be replaced) answers the next task
            # with that task's rows and log lines only, though the thread tried both meanwhile
            # (it runs while a task runs Python: the worker holds the GIL between tasks).
            doc = json.dumps({"_id": "b1", "town": "Oslo", "n": 1, "tried": report})
            reply = self.worker.map_task(["fixture_fns.town_when_tried"], [doc])
            self.assertEqual(reply.map.results[0].rows, b'[[["Oslo",1]]]')
            self.assertEqual(list(reply.map.results[0].logs), [])
            self.assertEqual(list(reply.logs), [])
            self.wait_for_refusals(report)
        finally:
            open(stop, "w").close()
            shutil.rmtree(scratch, ignore_errors=True)

    def test_add_fun_refuses_an_async_map_function(self):
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        for name, returns in (("fixture_fns.async_map", "a coroutine"),
                              ("fixture_fns.async_generator_map", "an async generator")):
            error = json.loads(session.call(["add_fun", name])[-1])
            self.assertEqual(error[:2], ["error", "compilation_error"], error)
            self.assertIn(f"{name}: an async def", error[2])
            self.assertIn(f"returns {returns} without running its body", error[2])
        # A generator is a map function; the refused ones were not added.
        self.assertEqual(session.call(["add_fun", "fixture_fns.town_n|1"]), ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "a", "town": "Oslo", "n": 3}]),
                         ['[[["Oslo",3]]]'])
        session.close_input()
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.INPUT_CLOSED)
        session.close()

    def test_memory_error_in_a_filter_batch_exits_without_a_line(self):
        """As couchjs out of memory: CouchDB filters the batch again one document at a time
        when its query server exits with status 1 and writes nothing."""
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        ddoc = {"_id": "_design/f", "filters": {"f": "fixture_fns.filter_runs_out_of_memory"}}
        self.assertEqual(session.call(["ddoc", "new", "_design/f", ddoc]), ["true"])
        self.assertEqual(session.call(["ddoc", "_design/f", ["filters", "f"],
                                       [[{"_id": "a"}], {}]]), ["[true,[true]]"])
        session.send_line(json.dumps(["ddoc", "_design/f", ["filters", "f"],
                                      [[{"_id": "a"}, {"_id": "b", "huge": True}], {}]]))
        self.assertTrue(session.at_end_of_output())  # not a line
        reply = self.worker.receive()
        # PROTOCOL_EXIT: the server ends the adapter with exit status 1 and no error line.
        self.assertEqual(reply.session_end.reason, worker_pb2.SessionEnd.PROTOCOL_EXIT)
        self.assertIn("filter batch raised MemoryError", reply.session_end.message)
        self.assertTrue(reply.recycle)
        session.close()

    def test_a_task_without_the_two_pipes_is_refused(self):
        read_end, write_end = os.pipe()
        task = worker_pb2.Task()
        task.direct_session.id = "one-pipe"
        self.worker.send(task, [read_end])
        os.close(read_end)
        reply = self.worker.receive()
        self.assertEqual(reply.failure.code, worker_pb2.Failure.BAD_INPUT)
        self.assertIn("two descriptors", reply.failure.message)
        os.close(write_end)

    def test_memory_error_ends_the_session_and_asks_for_recycling(self):
        self.worker.stop()
        self.worker = Worker(["--memory-limit-mb=1024"])
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        self.assertEqual(session.call(["add_fun", "worker_views.blow_memory"]), ["true"])
        lines = session.call(["map_doc", {"_id": "m"}])
        # Never an empty result: the document did not get its rows.
        self.assertEqual(json.loads(lines[-1])[:2], ["error", "memory_error"])
        reply = self.worker.receive()
        self.assertEqual(reply.session_end.reason, worker_pb2.SessionEnd.PROTOCOL_EXIT)
        self.assertTrue(reply.recycle)
        self.assertTrue(session.at_end_of_output())
        session.close()

    def test_the_turn_word_says_what_couchdb_is_owed(self):
        """The server writes an error line after a worker that died only where CouchDB waits
        for an answer (worker/direct_session.h): not after part of a line, which CouchDB would
        read as its rest, nor between commands, where it would answer nothing. Before, the word
        told only the part of a line, and a worker killed between commands had an error line
        written to a CouchDB that had asked nothing."""
        turn = SharedWord()
        self.addCleanup(turn.close)
        session = self.worker.start_session(couchdb_turn=turn)
        self.assertEqual(session.call(["reset"]), ["true"])
        self.assertEqual(session.call(["add_fun", "fixture_fns.slow_town"]), ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "s", "town": "Oslo", "n": 1}]),
                         ['[[["Oslo",1]]]'])
        self.assertEqual(turn.value(), SharedWord.OWED_NOTHING)
        # A command running: the function opens the FIFO, whose open here returns once it has.
        started = cnp_testing.started_fifo()
        session.send_line(json.dumps(["map_doc", {"_id": "r", "town": "Rome", "n": 2,
                                                  "started": started, "seconds": 0.2}]))
        os.close(os.open(started, os.O_RDONLY))
        self.assertEqual(turn.value(), SharedWord.OWED_AN_ANSWER)
        self.assertEqual(session.read_line(), '[[["Rome",2]]]')
        self.assertTrue(turn.wait_for(SharedWord.OWED_NOTHING))
        # 1 MB, unread: the worker fills the pipe and waits in the middle of the line.
        session.send_line(json.dumps(["map_doc", {"_id": "b", "town": "x" * (1 << 20), "n": 2}]))
        self.assertTrue(turn.wait_for(SharedWord.HOLDS_PART_OF_A_LINE), self.worker.diagnostics())
        self.assertEqual(json.loads(session.read_line()), [[["x" * (1 << 20), 2]]])
        self.assertTrue(turn.wait_for(SharedWord.OWED_NOTHING))
        session.close_input()
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.INPUT_CLOSED)
        session.close()

    def test_a_line_too_long_to_hold_ends_the_session_with_a_memory_error(self):
        """Out of memory outside a command's own run, here reading a line longer than the
        worker's cap lets it hold: the command is answered memory_error, and the session ends
        as sessions do, its pipes closed and the worker recycled. Before, the worker answered
        the task with a plain failure and kept the pipes: the server took that for a session
        never started, and the adapter went on to read CouchDB's input from mid-line."""
        self.worker.stop()
        self.worker = Worker(["--memory-limit-mb=%d" % MEMORY_CAP_MB])
        session = self.worker.start_session(max_line_bytes=256 << 20)
        self.assertEqual(session.call(["reset"]), ["true"])
        self.assertEqual(session.call(["add_fun", "fixture_fns.town_n|1"]), ["true"])
        line = json.dumps(["map_doc", {"_id": "huge", "blob": "x" * (LINE_OVER_CAP_MB << 20)}])

        def send():
            try:
                session.send_line(line)
            except BrokenPipeError:
                pass  # the worker stopped reading: the point of the test

        writer = threading.Thread(target=send, daemon=True)
        writer.start()
        answer = session.read_line(timeout=60)
        writer.join()
        self.assertIsNotNone(answer, self.worker.diagnostics())
        self.assertEqual(json.loads(answer)[:2], ["error", "memory_error"])
        reply = self.worker.receive(timeout=60)
        self.assertEqual(reply.WhichOneof("kind"), "session_end", reply)
        self.assertEqual(reply.session_end.reason, worker_pb2.SessionEnd.PROTOCOL_EXIT)
        self.assertTrue(reply.recycle)
        self.assertTrue(session.at_end_of_output())
        session.close()


    def peak_memory(self):
        with open(f"/proc/{self.worker.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) << 10
        return -1

    def answer_too_large(self, max_answer_bytes, limit_in_message):
        """200 names of a function that answers its document, one 1 MB document: a 200 MB
        answer unbounded. Answered too_large, within the limit's memory; the session goes on."""
        session = self.worker.start_session(max_answer_bytes=max_answer_bytes)
        for _ in range(200):
            self.assertEqual(session.call(["add_fun", "worker_answers.echo"]), ["true"])
        self.assertEqual(len(session.call(["map_doc", {"_id": "w"}])), 1)  # warm
        before = self.peak_memory()
        lines = session.call(["map_doc", {"_id": "big", "blob": "x" * (1 << 20)}])
        self.assertEqual(len(lines), 1, lines[:3])
        error = json.loads(lines[0])
        self.assertEqual(error[:2], ["error", "too_large"])
        self.assertIn(str(limit_in_message), error[2])
        self.assertIn("--max-call-bytes", error[2])
        # The rows, the reply and the line, each at most the limit, and the 1 MB document.
        self.assertLess(self.peak_memory() - before, 3 * limit_in_message + (48 << 20))
        lines = session.call(["map_doc", {"_id": "s"}])
        self.assertEqual(len(lines), 1)
        self.assertEqual(json.loads(lines[0])[0], [["s", {"_id": "s"}]])
        session.close_input()
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.INPUT_CLOSED)
        session.close()

    def test_an_answer_over_the_servers_limit_is_too_large_and_the_session_goes_on(self):
        self.answer_too_large(1 << 20, 1 << 20)

    def test_without_a_limit_from_the_server_one_line_cannot_exhaust_the_worker(self):
        # Under a 512 MiB cap, a 200 MB answer built three times over was bad_alloc: the worker
        # died. Its own bound is the longest line it reads, 64 MiB.
        self.worker.stop()
        self.worker = Worker(["--memory-limit-mb=512"])
        self.answer_too_large(0, 64 << 20)


# The padding changes the file's size with its version: Python's bytecode cache would take a
# same-sized file rewritten within the same second for unchanged.
BUMP_FNS = """
from couch_named_python import version
# {padding}


@version({version})
def which(doc):
    yield "version", {version}
"""


class VersionBumpTest(unittest.TestCase):
    """A direct session's add_fun picks up a module whose @version was bumped on disk: the
    session runs in the worker, so no fresh worker can be asked for; the registry imports anew."""

    def test_add_fun_picks_up_a_bumped_version(self):
        directory = tempfile.mkdtemp(prefix="cnp-bump-")
        self.addCleanup(shutil.rmtree, directory)
        worker = Worker(python_paths=[directory])
        self.addCleanup(worker.process.kill)
        module = os.path.join(directory, "bump_fns.py")
        with open(module, "w") as source:
            source.write(BUMP_FNS.format(version=1, padding="x"))
        session = worker.start_session()
        self.addCleanup(session.close)
        self.assertEqual(session.call(["reset"]), ["true"])
        self.assertEqual(session.call(["add_fun", "bump_fns.which|1"]), ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "a"}]), ['[[["version",1]]]'])
        session.close_input()
        self.assertEqual(worker.receive().session_end.reason, worker_pb2.SessionEnd.INPUT_CLOSED)

        with open(module, "w") as source:
            source.write(BUMP_FNS.format(version=2, padding="xx"))
        # CouchDB after the design document changed: a new session asks for version 2.
        session = worker.start_session()
        self.addCleanup(session.close)
        self.assertEqual(session.call(["reset"]), ["true"])
        self.assertEqual(session.call(["add_fun", "bump_fns.which|2"]), ["true"],
                         worker.diagnostics())
        self.assertEqual(session.call(["map_doc", {"_id": "a"}]), ['[[["version",2]]]'])
        session.close_input()
        self.assertEqual(worker.receive().session_end.reason, worker_pb2.SessionEnd.INPUT_CLOSED)
        self.assertEqual(worker.stop(), 0, worker.diagnostics())


REVMOD = """
from couch_named_python import log, version

log("revmod imported")


@version(1)
def townmap(doc):
    yield doc.get("town"), 1


def plain(doc):
    yield "plain", 1
"""


class ModuleEditsTest(unittest.TestCase):
    """What a live direct session makes of a module edited on disk: CouchDB keeps the session's
    process (even after a compilation_error), so its worker must notice the edit itself."""

    def setUp(self):
        directory = tempfile.mkdtemp(prefix="cnp-revmod-")
        self.addCleanup(shutil.rmtree, directory)
        self.module = os.path.join(directory, "revmod.py")
        with open(self.module, "w") as source:
            source.write(REVMOD)
        self.worker = Worker(python_paths=[directory])
        self.addCleanup(self.worker.process.kill)
        self.session = self.worker.start_session()
        self.addCleanup(self.session.close)
        self.assertEqual(self.session.call(["reset"]), ["true"])

    def end(self):
        self.session.close_input()
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.INPUT_CLOSED)
        self.assertEqual(self.worker.stop(), 0, self.worker.diagnostics())

    def test_a_function_added_to_an_imported_module_is_found(self):
        self.assertEqual(self.session.call(["add_fun", "revmod.townmap|1"])[-1], "true")
        with open(self.module, "a") as source:  # appended in place, as an editor may
            source.write("\n\n@version(1)\ndef newer_fn(doc):\n    yield 'newer', 1\n")
        self.assertEqual(self.session.call(["add_fun", "revmod.newer_fn|1"])[-1], "true",
                         self.worker.diagnostics())
        self.assertEqual(self.session.call(["map_doc", {"_id": "a", "town": "Oslo"}]),
                         ['[[["Oslo",1]],[["newer",1]]]'])
        self.end()

    def test_a_module_found_unchanged_is_looked_at_again_after_an_edit(self):
        """A session is one task for the worker: a memo of packages found unchanged, meant for
        one Resolve task, kept a package unchanged for the whole session once a missing name
        had been looked for (a review: the code deployed after the design document was never
        seen until CouchDB replaced its query server)."""
        self.assertEqual(self.session.call(["add_fun", "revmod.townmap|1"])[-1], "true")
        self.assertIn("compilation_error", self.session.call(["add_fun", "revmod.absent|1"])[-1])
        with open(self.module, "a") as source:
            source.write("\n\n@version(1)\ndef newer_fn(doc):\n    yield 'newer', 1\n")
        self.assertEqual(self.session.call(["add_fun", "revmod.newer_fn|1"])[-1], "true",
                         self.worker.diagnostics())
        self.end()

    def test_add_fun_refuses_an_unversioned_name_for_a_versioned_function(self):
        lines = self.session.call(["add_fun", "revmod.townmap"])
        error = json.loads(lines[-1])
        self.assertIsInstance(error, list, lines)
        self.assertEqual(error[:2], ["error", "compilation_error"], lines)
        self.assertIn("did not match expected version None", error[2])
        self.assertIn("revmod.townmap|1", error[2])
        # Nothing was added: the view is not left to fail at every document.
        self.assertEqual(self.session.call(["map_doc", {"_id": "a", "town": "Oslo"}]), ["[]"])
        self.assertEqual(self.session.call(["add_fun", "revmod.townmap|1"]), ["true"])
        self.assertEqual(self.session.call(["add_fun", "revmod.plain"]), ["true"])
        self.assertEqual(self.session.call(["map_doc", {"_id": "a", "town": "Oslo"}]),
                         ['[[["Oslo",1]],[["plain",1]]]'])
        self.end()

    def test_log_lines_made_while_importing_come_with_add_fun(self):
        # As over the Session stream: before add_fun's true, not with the next command.
        self.assertEqual(self.session.call(["add_fun", "revmod.townmap|1"]),
                         ['["log","revmod imported"]', "true"])
        self.assertEqual(self.session.call(["map_doc", {"_id": "a", "town": "Oslo"}]),
                         ['[[["Oslo",1]]]'])
        self.end()


class TimeoutTest(unittest.TestCase):
    """A command that outlives CouchDB's timeout: the error line, then exit 124."""

    def stuck(self, function):
        worker = Worker()
        session = worker.start_session()
        # 1000 ms less QuerySession's margin (at most half): 500 ms.
        self.assertEqual(session.call(["reset", {"timeout": 1000}]), ["true"])
        self.assertEqual(session.call(["add_fun", "direct_session_fns.naps"]), ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "fine"}]), ['[[["fine","rested"]]]'])
        self.assertEqual(session.call(["reset", {"timeout": 1000}]), ["true"])
        self.assertEqual(session.call(["add_fun", function]), ["true"])
        started = time.monotonic()
        lines = session.call(["map_doc", {"_id": "stuck"}], timeout=30)
        elapsed = time.monotonic() - started
        self.assertEqual(len(lines), 1, lines)
        error = json.loads(lines[0])
        self.assertEqual(error[:2], ["error", "timeout"])
        # The watchdog's limit is CouchDB's 1000 ms less the margin, so it answers before
        # CouchDB's own timeout would fire; it waited for it rather than failing at once. No
        # upper bound on the time taken: a loaded machine may answer late, and a watchdog that
        # never fires fails the call's 30 s timeout above.
        self.assertIn("500 ms", error[2])
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertEqual(worker.wait(), worker_pb2.SESSION_TIMEOUT_EXIT, worker.diagnostics())
        self.assertTrue(session.at_end_of_output())
        session.close()
        worker.sock.close()

    def test_endless_python_loop(self):
        self.stuck("direct_session_fns.spins")

    def test_stuck_in_c(self):
        self.stuck("direct_session_fns.sleeps_in_c")

    def start_slow_list(self, session, release, timeout_ms):
        self.assertEqual(session.call(["reset", {"timeout": timeout_ms}]), ["true"])
        ddoc = {"_id": "_design/l", "lists": {"slow": "direct_session_fns.list_slow_to_end"}}
        self.assertEqual(session.call(["ddoc", "new", "_design/l", ddoc]), ["true"])
        start = session.call(["ddoc", "_design/l", ["lists", "slow"],
                              [{"total_rows": 1, "offset": 0}, {"release": release}]])
        self.assertEqual(json.loads(start[-1])[0], "start")
        self.assertEqual(json.loads(session.call(["list_row", {"key": "k", "value": 1}])[-1]),
                         ["chunks", ["k"]])

    def test_a_reset_in_a_list_waits_for_the_list_function_to_return(self):
        # What adapter/README.md says of a direct session: the worker runs the list function
        # itself, so the reset gives it the end of its rows and is answered once it returns.
        worker = Worker()
        scratch = tempfile.mkdtemp()
        release = os.path.join(scratch, "release")
        try:
            session = worker.start_session()
            self.start_slow_list(session, release, 20000)
            session.send_line(json.dumps(["reset", {"timeout": 20000}]))
            ready, _, _ = select.select([session.answers], [], [], 0.3)
            self.assertEqual(ready, [], "answered while the list function still ran")
            open(release, "w").close()
            self.assertEqual(session.read_line(), "true")
            self.assertEqual(session.call(["add_fun", "fixture_fns.town_n|1"]), ["true"])
            self.assertEqual(session.call(["map_doc", {"_id": "a", "town": "Oslo", "n": 3}]),
                             ['[[["Oslo",3]]]'])
            session.close_input()
            self.assertEqual(worker.receive().session_end.reason,
                             worker_pb2.SessionEnd.INPUT_CLOSED)
            session.close()
            self.assertEqual(worker.stop(), 0, worker.diagnostics())
        finally:
            open(release, "w").close()
            shutil.rmtree(scratch, ignore_errors=True)

    def test_a_reset_in_a_list_that_outlives_the_timeout_is_a_timeout(self):
        # ... and past the command's budget it is the timeout error, and the worker exits (the
        # adapter exits 1; CouchDB starts a new query server).
        worker = Worker()
        scratch = tempfile.mkdtemp()
        release = os.path.join(scratch, "release")
        try:
            session = worker.start_session()
            self.start_slow_list(session, release, 1000)
            lines = session.call(["reset", {"timeout": 1000}], timeout=30)
            self.assertEqual(len(lines), 1, lines)
            self.assertEqual(json.loads(lines[0])[:2], ["error", "timeout"])
            self.assertEqual(worker.wait(), worker_pb2.SESSION_TIMEOUT_EXIT, worker.diagnostics())
            self.assertTrue(session.at_end_of_output())
            session.close()
            worker.sock.close()
        finally:
            open(release, "w").close()
            shutil.rmtree(scratch, ignore_errors=True)

    def test_the_adapters_cap_is_named_on_a_server_it_started(self):
        worker = Worker()
        session = worker.start_session(max_call_timeout_ms=500, call_timeout_set_by_adapter=True)
        self.assertEqual(session.call(["reset", {"timeout": 600000}]), ["true"])
        self.assertEqual(session.call(["add_fun", "direct_session_fns.spins"]), ["true"])
        error = json.loads(session.call(["map_doc", {"_id": "stuck"}], timeout=30)[-1])
        self.assertEqual(error[:2], ["error", "timeout"])
        self.assertIn("(the --call-timeout of the cnp-adapter that started this cnp-server, "
                      "500ms, caps every command", error[2])
        self.assertEqual(worker.wait(), worker_pb2.SESSION_CALL_TIMEOUT_EXIT,
                         worker.diagnostics())
        session.close()
        worker.sock.close()

    def test_the_servers_cap_is_named_when_it_is_what_ran_out(self):
        # Protocol review: with os_process_timeout raised for slow views, the server's
        # --call-timeout still bounds every command, and the error blamed CouchDB's timeout.
        worker = Worker()
        session = worker.start_session(max_call_timeout_ms=500)
        self.assertEqual(session.call(["reset", {"timeout": 600000}]), ["true"])
        self.assertEqual(session.call(["add_fun", "direct_session_fns.spins"]), ["true"])
        lines = session.call(["map_doc", {"_id": "stuck"}], timeout=30)
        self.assertEqual(len(lines), 1, lines)
        error = json.loads(lines[0])
        self.assertEqual(error[:2], ["error", "timeout"])
        self.assertIn("ran longer than the 500 ms it may take (cnp-server's --call-timeout, "
                      "500ms, caps every command and is shorter than CouchDB's timeout, "
                      "600000 ms", error[2])
        # Its own exit status: the server tells the adapter which limit fired.
        self.assertEqual(worker.wait(), worker_pb2.SESSION_CALL_TIMEOUT_EXIT,
                         worker.diagnostics())
        session.close()
        worker.sock.close()


class JsonLogTest(unittest.TestCase):
    """With --log-format=json every line a direct session's worker writes is one JSON object,
    for a log collector: before, its lines for a line over the limit and for a command past
    CouchDB's timeout were raw "cnp-worker: direct session ..." text among the JSON. The lines
    over the limit, one for each such line CouchDB sends, are rate-limited as well."""

    def test_a_sessions_log_lines_are_json_and_too_long_lines_are_rate_limited(self):
        worker = Worker(extra_args=["--log-format=json"])
        session = worker.start_session(session_id="json", max_line_bytes=1024)
        self.assertEqual(session.call(["reset", {"timeout": 1000}]), ["true"])
        for _ in range(20):
            session.send_line('["map_doc",{"_id":"big","pad":"' + "x" * 2000 + '"}]')
            self.assertEqual(json.loads(session.read_line())[:2], ["error", "too_large"])
        self.assertEqual(session.call(["add_fun", "direct_session_fns.spins"]), ["true"])
        lines = session.call(["map_doc", {"_id": "stuck"}], timeout=30)
        self.assertEqual(json.loads(lines[0])[:2], ["error", "timeout"])
        self.assertEqual(worker.wait(), worker_pb2.SESSION_TIMEOUT_EXIT, worker.diagnostics())
        session.close()
        worker.sock.close()
        logged = [line for line in worker.diagnostics().splitlines() if line.strip()]
        events = []
        for line in logged:
            try:
                events.append(json.loads(line))
            except ValueError:
                self.fail("a line that is not JSON: " + line)
        too_long = [e for e in events if "1024" in e.get("msg", "")]
        self.assertEqual(len(too_long), 1, logged)
        self.assertEqual(too_long[0].get("session"), "json", too_long[0])
        timeouts = [e for e in events if "CouchDB's timeout" in e.get("msg", "")]
        self.assertEqual(len(timeouts), 1, logged)
        self.assertEqual(timeouts[0].get("level"), "ERROR", timeouts[0])


class FunctionErrorProgressTest(unittest.TestCase):
    """A direct session's function errors reach the server in session_progress frames on the
    worker's socket, by function: at most one a second while there are new errors (one as soon
    as the first is counted), the rest just before the session_end; never one per error."""

    FAILS = "fixture_fns.map_fails_for_the_test"  # raises on every document
    FINE = "fixture_fns.town_n|1"

    def setUp(self):
        self.worker = Worker()
        self.session = self.worker.start_session()
        self.assertEqual(self.session.call(["reset", {"timeout": 20000}]), ["true"])
        self.assertEqual(self.session.call(["add_fun", self.FAILS]), ["true"])
        self.assertEqual(self.session.call(["add_fun", self.FINE]), ["true"])

    def tearDown(self):
        self.session.close()
        if self.worker.process.poll() is None:
            self.assertEqual(self.worker.stop(), 0, self.worker.diagnostics())

    def map_doc(self, doc_id):
        lines = self.session.call(["map_doc", {"_id": doc_id, "town": "Oslo", "n": 1}])
        self.assertEqual(json.loads(lines[-1]), [[], [["Oslo", 1]]], lines)

    def end(self):
        self.session.close_input()
        end = self.worker.receive().session_end
        self.assertEqual(end.reason, worker_pb2.SessionEnd.INPUT_CLOSED, self.worker.diagnostics())
        return end

    def test_a_thousand_failing_documents_cost_a_few_frames(self):
        started = time.monotonic()
        for i in range(1000):
            self.map_doc(f"doc-{i}")
        self.end()
        elapsed = time.monotonic() - started
        self.assertEqual(self.worker.function_errors(), {self.FAILS: 1000})
        # One frame at the first error, at most one a second after it, and the last one; the
        # worker's clock is a coarse one (ticks of a few ms), hence the 1% slack.
        frames = len(self.worker.progress)
        self.assertGreaterEqual(frames, 1)
        self.assertLessEqual(frames, int(elapsed * 1.01) + 2, f"{frames} frames in {elapsed:.2f} s")
        self.assertLess(frames, 50)

    def test_errors_are_sent_while_the_session_waits_for_couchdb(self):
        self.map_doc("first")
        # Sent at once, the session still open (the first frame may go right away).
        frame = self.worker.receive_frame(timeout=10)
        self.assertEqual([(e.function, e.count) for e in frame.session_progress.function_errors],
                         [(self.FAILS, 1)])
        # The next errors come within the second, and go when it is over even though CouchDB
        # sends nothing more meanwhile.
        self.map_doc("second")
        self.map_doc("third")
        frame = self.worker.receive_frame(timeout=10)
        self.assertEqual([(e.function, e.count) for e in frame.session_progress.function_errors],
                         [(self.FAILS, 2)])
        # Nothing new: no frame before the session's end.
        self.assertEqual(self.session.call(["reset", {"timeout": 20000}]), ["true"])
        self.assertEqual(self.session.call(["add_fun", self.FINE]), ["true"])
        self.assertEqual(self.session.call(["map_doc", {"_id": "fine", "town": "Rome"}]),
                         ['[[["Rome",null]]]'])
        self.end()
        self.assertEqual(self.worker.progress, [])


class ForkedChildTest(unittest.TestCase):
    """A function that forks and lets the child return (or sys.exit(), which the worker takes
    for a function's exception) must not let the child answer: its answer would be taken for
    the next command's, and documents would get other documents' rows."""

    FUNCTIONS = ["direct_session_fns.fork_exits", "direct_session_fns.fork_returns"]

    def setUp(self):
        self.worker = Worker()

    def tearDown(self):
        if self.worker.process.poll() is None:
            self.worker.stop()

    def frames_until_the_worker_ends(self, timeout=30):
        """Every frame still to come on the server's socket once the server closes its side."""
        self.worker.sock.shutdown(socket.SHUT_WR)
        frames = []
        while True:
            try:
                frames.append(self.worker.receive_frame(timeout=timeout))
            except EOFError:
                return frames

    def test_direct_session_each_document_gets_its_own_rows(self):
        for function in self.FUNCTIONS:
            with self.subTest(function=function):
                session = self.worker.start_session()
                self.assertEqual(session.call(["reset"]), ["true"])
                self.assertEqual(session.call(["add_fun", function]), ["true"])
                row = "parent" if function.endswith("exits") else "row"
                for n in range(4):
                    self.assertEqual(session.call(["map_doc", {"_id": f"d{n}"}]),
                                     [json.dumps([[[f"d{n}", row]]], separators=(",", ":"))],
                                     self.worker.diagnostics())
                session.close_input()
                end = self.worker.receive().session_end
                self.assertEqual(end.reason, worker_pb2.SessionEnd.INPUT_CLOSED)
                self.assertEqual(end.commands, 6)
                # Nothing more on CouchDB's pipe: no child wrote, and none holds it open.
                self.assertTrue(session.at_end_of_output())
                session.close()
        self.assertEqual(self.frames_until_the_worker_ends(), [])
        self.assertEqual(self.worker.stop(), 0, self.worker.diagnostics())

    def test_a_child_forked_in_a_direct_session_list_leaves_at_its_first_row(self):
        """Found by a review: the child's get_row() waited for ever for the session thread it
        does not have, holding CouchDB's pipes open."""
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        ddoc = {"_id": "_design/l", "lists": {"rows": "direct_session_fns.list_forks"}}
        self.assertEqual(session.call(["ddoc", "new", "_design/l", ddoc]), ["true"])
        start = json.loads(session.call(
            ["ddoc", "_design/l", ["lists", "rows"], [{"total_rows": 1, "offset": 0}, {}]])[-1])
        self.assertEqual(start[0], "start", self.worker.diagnostics())
        self.assertEqual(json.loads(session.call(["list_row", {"key": "k", "value": 1}])[-1]),
                         ["chunks", ["k\n"]])
        self.assertEqual(json.loads(session.call(["list_end"])[-1]), ["end", ["END\n"]])
        session.close_input()
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.INPUT_CLOSED)
        # Nothing more on CouchDB's pipe: the child wrote nothing, and none holds it open.
        self.assertTrue(session.at_end_of_output())
        session.close()
        self.assertEqual(self.frames_until_the_worker_ends(), [])
        self.assertEqual(self.worker.stop(), 0, self.worker.diagnostics())

    def test_a_child_left_running_holds_neither_couchdbs_pipes_nor_the_servers_socket(self):
        """Found by a review: a child that never returns to the worker's code (a daemon a
        function started) held CouchDB's pipes, which CouchDB then saw end only when the child
        did, and the server's socket, which the server watches for the worker's end."""
        pid_file = os.path.join(tempfile.mkdtemp(), "child")
        session = self.worker.start_session()
        self.assertEqual(session.call(["reset"]), ["true"])
        self.assertEqual(session.call(["add_fun", "direct_session_fns.fork_lingers"]), ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "a", "pid_file": pid_file}]),
                         ['[[["a","parent"]]]'], self.worker.diagnostics())
        deadline = time.monotonic() + 30
        while not os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.01)  # polled, bounded: the child's own write is the only signal
        with open(pid_file) as written:
            child = int(written.read())
        self.addCleanup(os.kill, child, signal.SIGKILL)
        session.close_input()
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.INPUT_CLOSED)
        # The child sleeps two minutes: the ends below come from the worker alone.
        self.assertTrue(session.at_end_of_output(timeout=10))
        session.close()
        self.assertEqual(self.frames_until_the_worker_ends(timeout=10), [])
        self.assertEqual(self.worker.stop(), 0, self.worker.diagnostics())

    def test_map_tasks_each_document_gets_its_own_rows(self):
        for function in self.FUNCTIONS:
            row = "parent" if function.endswith("exits") else "row"
            for n in range(4):
                reply = self.worker.map_task([function], [f'{{"_id":"d{n}"}}'])
                self.assertEqual(reply.map.results[0].rows,
                                 json.dumps([[[f"d{n}", row]]], separators=(",", ":")).encode(),
                                 str(reply))
        # The server's socket carries no reply a child wrote.
        self.assertEqual(self.frames_until_the_worker_ends(), [])
        self.assertEqual(self.worker.stop(), 0, self.worker.diagnostics())

    def test_a_multiprocessing_pool_works(self):
        reply = self.worker.map_task(["direct_session_fns.multiprocessing_pool"],
                                     ['{"_id":"a","n":3}'])
        self.assertEqual(reply.map.results[0].rows, b'[[["a",[3,6]]]]', str(reply))
        session = self.worker.start_session()
        self.assertEqual(session.call(["add_fun", "direct_session_fns.multiprocessing_pool"]),
                         ["true"])
        self.assertEqual(session.call(["map_doc", {"_id": "b", "n": 2}]), ['[[["b",[2,4]]]]'])
        session.close_input()
        self.assertEqual(self.worker.receive().session_end.reason,
                         worker_pb2.SessionEnd.INPUT_CLOSED)
        self.assertTrue(session.at_end_of_output())
        session.close()


class ChildDescriptorsTest(unittest.TestCase):
    """A process a function starts inherits none of the worker's descriptors: not the server's
    socket, not CouchDB's pipes (it could write into the protocol, or hold them open)."""

    def test_a_functions_subprocess_holds_only_its_stdio(self):
        worker = Worker()
        try:
            reply = worker.map_task(["direct_session_fns.child_descriptors"], ['{"_id":"a"}'])
            self.assertEqual(reply.map.results[0].rows, b'[[["a",[]]]]', str(reply))
            session = worker.start_session()
            self.assertEqual(session.call(["add_fun", "direct_session_fns.child_descriptors"]),
                             ["true"])
            self.assertEqual(session.call(["map_doc", {"_id": "b"}]), ['[[["b",[]]]]'])
            session.close_input()
            self.assertEqual(worker.receive().session_end.reason,
                             worker_pb2.SessionEnd.INPUT_CLOSED)
            session.close()
        finally:
            self.assertEqual(worker.stop(), 0, worker.diagnostics())


if __name__ == "__main__":
    ARGS, rest = parse_args(sys.argv[1:])
    sys.path.insert(0, os.path.dirname(os.path.abspath(ARGS.pb2)))
    sys.path.insert(0, os.path.dirname(os.path.abspath(ARGS.replay)))
    import worker_pb2  # noqa: E402
    import replay_transcripts_test as replay  # noqa: E402
    replay.add_transcript_tests(ReplayTranscriptsTest, lambda self: ARGS.testdata)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
