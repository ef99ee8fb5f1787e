"""Failover of the stream path against a server older than SessionOutput.accepted (an older
cnp-server, or a replica in the middle of an upgrade): such a server answers add_lib, add_fun and
ddoc new with exactly `true` and never sets `accepted`. The adapter must still remember those
lines and replay them on a new stream, or map_doc there runs with no functions and CouchDB
indexes every document with no rows.

The service is a stand-in written with Python's gRPC that keeps each stream's functions, answers
map_doc with one row per function, records every line of every stream, and breaks a stream on
request."""

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
DDOC = {"_id": "_design/f", "filters": {"by_town": "m.by_town"}}
RESET = ["reset", {"reduce_limit": True, "timeout": 20000}]



class ScriptedSessionService:
    """A Session service on a unix socket, speaking the query protocol just enough: reset
    forgets the functions, add_fun and ddoc new are answered `true` (with `accepted` only while
    `sets_accepted`), map_doc is answered with one row [function, doc id] per function."""

    def __init__(self, directory):
        self.lock = threading.Lock()
        self.streams = []  # the lines each stream received, in order
        self.sets_accepted = False
        self.break_next_map_doc = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("cnp.v1.Functions", {
            "Session": grpc.stream_stream_rpc_method_handler(self.session),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.target = "unix:" + os.path.join(directory, "old.sock")
        self.server.add_insecure_port(self.target)
        self.server.start()

    def session(self, requests, context):
        with self.lock:
            received = []
            self.streams.append(received)
        functions = []
        for request in requests:
            line = session_input_line(request)
            received.append(json.loads(line))
            command = json.loads(line)
            name = command[0]
            if name == "reset":
                functions = []  # no reply: the adapter answers reset itself
            elif name in ("add_fun", "add_lib") or (name == "ddoc" and command[1] == "new"):
                if name == "add_fun":
                    functions.append(command[1])
                yield session_output([b"true"], accepted=self.sets_accepted)
            elif name == "map_doc":
                if self.break_next_map_doc.is_set():
                    self.break_next_map_doc.clear()
                    context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
                rows = [[[f, command[1]["_id"]]] for f in functions]
                yield session_output([json.dumps(rows).encode()], accepted=False)
            else:
                yield session_output([b'["error","unknown","not scripted"]'], accepted=False)

    def stream_lines(self, index):
        with self.lock:
            return list(self.streams[index])

    def stream_count(self):
        with self.lock:
            return len(self.streams)

    def stop(self):
        self.server.stop(None)


class OldServerFailoverTest(unittest.TestCase):
    def setUp(self):
        self.dir = cnp_testing.short_temp_dir("cnp-old-failover-")
        self.service = ScriptedSessionService(self.dir)
        self.adapter = subprocess.Popen(
            [ADAPTER, f"--target={self.service.target}", "--session=stream"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def tearDown(self):
        if self.adapter.poll() is None:
            self.adapter.kill()
        self.adapter.wait()
        for pipe in (self.adapter.stdin, self.adapter.stdout, self.adapter.stderr):
            pipe.close()
        self.service.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def reply(self, command):
        self.adapter.stdin.write(json.dumps(command).encode() + b"\n")
        self.adapter.stdin.flush()
        line = self.adapter.stdout.readline()
        if not line:
            self.adapter.stdin.close()
            self.fail("cnp-adapter exited: " + self.adapter.stderr.read().decode())
        return json.loads(line)

    def start_session(self):
        self.assertIs(self.reply(RESET), True)
        self.assertIs(self.reply(["ddoc", "new", DDOC["_id"], DDOC]), True)
        self.assertIs(self.reply(["add_fun", "m.town"]), True)
        self.assertEqual(self.reply(["map_doc", {"_id": "d1"}]), [[["m.town", "d1"]]])

    def break_stream_and_map(self):
        self.service.break_next_map_doc.set()
        # The command in flight is retried on a new stream once the session is replayed there.
        self.assertEqual(self.reply(["map_doc", {"_id": "d2"}]), [[["m.town", "d2"]]])
        self.assertEqual(self.service.stream_count(), 2)
        self.assertEqual(self.service.stream_lines(1), [
            ["ddoc", "new", DDOC["_id"], DDOC], RESET, ["add_fun", "m.town"],
            ["map_doc", {"_id": "d2"}]])

    def test_session_taught_to_an_old_server_is_replayed_after_a_break(self):
        self.start_session()
        self.break_stream_and_map()

    def test_replay_onto_a_replica_that_does_not_set_accepted_yet(self):
        # Taught to a server that marks what it accepted, replayed onto one that does not.
        self.service.sets_accepted = True
        self.start_session()
        self.service.sets_accepted = False
        self.break_stream_and_map()


if __name__ == "__main__":
    ADAPTER = os.path.abspath(sys.argv.pop(1))
    unittest.main()
