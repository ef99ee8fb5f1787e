"""log() lines of users' functions in cnp-server's own log, attributed (issue 10): with
--log-format=json every line a function logs is one JSON object naming the function
(module.function|version as asked for), the kind of call, the document's id, and the RPC and
peer (a gRPC call, the Session stream) or the session and its adapter (a direct session, where
the session worker writes the line itself). CouchDB still gets its ["log", ...] lines as before.

The line is written before the call is answered (the server logs a worker's reply before it
answers; a direct session's worker logs before it writes the answer to CouchDB), so each test
reads the log right after its reply, with no wait."""

import json
import os
import select
import subprocess
import sys
import tempfile
import unittest

import harness

VALIDATE = "fixture_fns.validate_logs|2"
DDOC_ID = "_design/logging"
DDOC = {"_id": DDOC_ID, "language": "python", "validate_doc_update": VALIDATE,
        "shows": {"simple": "fixture_fns.show_simple"}}


def json_lines(server):
    """Every JSON object line of the server's log (its workers' too: they share its stderr)."""
    lines = []
    with open(server.log_path, encoding="utf-8") as log:
        for line in log:
            if line.startswith("{"):
                lines.append(json.loads(line))  # a line that does not parse fails the test
    return lines


def logged(server, message):
    """The log lines whose msg is exactly `message`."""
    return [line for line in json_lines(server) if line["msg"] == message]


class JsonLogTestCase(harness.ServerTestCase):
    server_extra = ("--log-format=json",)

    def cnp(self, *args, stdin=""):
        out = subprocess.run([self.binaries.cli, args[0], f"--target={self.server.target}",
                              *args[1:]], input=stdin, capture_output=True, text=True,
                             timeout=60)
        return out


class GrpcCallsTest(JsonLogTestCase):
    """Batch RPCs through the pool: Map and Validate over gRPC."""

    def test_map_log_lines_name_function_kind_document_rpc_and_peer(self):
        docs = "\n".join(json.dumps({"_id": f"grpc-map-{i}", "n": i}) for i in (1, 2))
        out = self.cnp("map", "fixture_fns.map_error", "-", stdin=docs)
        self.assertEqual(out.returncode, 0, out.stderr)
        # The caller still gets its lines.
        self.assertIn("mapping grpc-map-1", out.stdout)
        for i in (1, 2):
            lines = logged(self.server, f"mapping grpc-map-{i}")
            self.assertEqual(len(lines), 1, json_lines(self.server))
            line = lines[0]
            self.assertEqual(line["level"], "INFO")
            self.assertEqual(line["function"], "fixture_fns.map_error")
            self.assertEqual(line["kind"], "map")
            self.assertEqual(line["doc_id"], f"grpc-map-{i}")
            self.assertEqual(line["rpc"], "Map")
            self.assertTrue(line["peer"].startswith("unix:"), line)
            self.assertNotIn("session", line)

    def test_validate_log_line_names_function_kind_document_rpc_and_peer(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as doc:
            json.dump({"_id": "grpc-validated", "bad": True}, doc)
            doc.flush()
            out = self.cnp("validate", VALIDATE, doc.name)
        self.assertEqual(out.returncode, 3, out.stderr)  # rejected: its log line still counts
        lines = logged(self.server, "validating grpc-validated")
        self.assertEqual(len(lines), 1, json_lines(self.server))
        line = lines[0]
        self.assertEqual(line["function"], VALIDATE)
        self.assertEqual(line["kind"], "validate")
        self.assertEqual(line["doc_id"], "grpc-validated")
        self.assertEqual(line["rpc"], "Validate")
        self.assertTrue(line["peer"].startswith("unix:"), line)


class SessionTest(JsonLogTestCase):
    """CouchDB's sessions, on each path (direct: the session worker logs; stream: the server)."""

    def started(self):
        qs = self.adapter()
        self.assertIs(qs.reply(["reset", {"reduce_limit": True, "timeout": 20000}]), True,
                      qs.diagnostics())
        self.assertIs(qs.reply(["add_fun", "fixture_fns.map_error"]), True, qs.diagnostics())
        self.assertIs(qs.reply(["ddoc", "new", DDOC_ID, DDOC]), True, qs.diagnostics())
        return qs

    def check_origin(self, line, qs):
        if self.session == "direct":
            # Written by the session worker itself: its pid, the session and the adapter.
            self.assertNotEqual(line["pid"], self.server.process.pid, line)
            self.assertIn("/", line["session"])
            self.assertIn(f"pid={qs.process.pid}", line["peer"])
            self.assertNotIn("rpc", line)
        else:
            self.assertEqual(line["pid"], self.server.process.pid, line)
            self.assertEqual(line["rpc"], "Session")
            self.assertTrue(line["peer"].startswith("unix:"), line)

    def test_map_doc_log_line_reaches_couchdb_and_the_service_log(self):
        qs = self.started()
        doc_id = f"{self.session}-mapped"
        lines = qs.call(["map_doc", {"_id": doc_id, "n": 1}])
        # CouchDB's lines exactly as before: the log line, then the rows.
        self.assertEqual([json.loads(line) for line in lines],
                         [["log", f"mapping {doc_id}"], [[[1, None]]]])
        found = logged(self.server, f"mapping {doc_id}")
        self.assertEqual(len(found), 1, json_lines(self.server))
        self.assertEqual(found[0]["function"], "fixture_fns.map_error")
        self.assertEqual(found[0]["kind"], "map")
        self.assertEqual(found[0]["doc_id"], doc_id)
        self.check_origin(found[0], qs)
        self.assertEqual(qs.close(), 0)

    def test_validate_and_show_log_lines_are_attributed(self):
        qs = self.started()
        doc_id = f"{self.session}-validated"
        lines = qs.call(["ddoc", DDOC_ID, ["validate_doc_update"],
                         [{"_id": doc_id}, None, {"roles": []}, {}]])
        self.assertEqual([json.loads(line) for line in lines],
                         [["log", f"validating {doc_id}"], 1])
        found = logged(self.server, f"validating {doc_id}")
        self.assertEqual(len(found), 1, json_lines(self.server))
        self.assertEqual(found[0]["function"], VALIDATE)
        self.assertEqual(found[0]["kind"], "validate")
        self.assertEqual(found[0]["doc_id"], doc_id)
        self.check_origin(found[0], qs)

        shown = f"{self.session}-shown"
        lines = qs.call(["ddoc", DDOC_ID, ["shows", "simple"],
                         [{"_id": shown, "title": "t", "body": "b"}, {}]])
        self.assertEqual(json.loads(lines[0]), ["log", "ok"])
        found = [line for line in logged(self.server, "ok") if line.get("doc_id") == shown]
        self.assertEqual(len(found), 1, json_lines(self.server))
        self.assertEqual(found[0]["function"], "fixture_fns.show_simple")
        self.assertEqual(found[0]["kind"], "show")
        self.check_origin(found[0], qs)
        self.assertEqual(qs.close(), 0)

    def test_a_long_log_line_is_one_whole_line_cut_and_marked(self):
        # A direct session's worker shares the server's stderr pipe with the other workers:
        # only a write of at most PIPE_BUF bytes to a pipe is atomic, so its line is cut to
        # that (it was cut at 16 KiB, the server's own cap, which other lines could split).
        # The server writes a Session stream's line itself, under its 16 KiB cap.
        cap = select.PIPE_BUF if self.session == "direct" else 16 * 1024
        qs = self.started()
        doc_id = f"{self.session}-long-" + "x" * 20000
        lines = qs.call(["map_doc", {"_id": doc_id, "n": 1}])
        self.assertEqual(json.loads(lines[0]), ["log", f"mapping {doc_id}"])  # CouchDB: all
        with open(self.server.log_path, "rb") as log:
            raw = [line for line in log if f"mapping {self.session}-long-".encode() in line]
        self.assertEqual(len(raw), 1, [line[:200] for line in raw])
        self.assertTrue(raw[0].endswith(b"\n"))
        self.assertLessEqual(len(raw[0]), cap)
        line = json.loads(raw[0])  # whole: one JSON object, nothing of another line in it
        self.assertIs(line["truncated"], True, line)
        self.assertGreater(len(line["msg"]), 1000)
        self.assertTrue(f"mapping {doc_id}".startswith(line["msg"]))
        self.assertEqual(line["function"], "fixture_fns.map_error")  # short fields stay whole
        self.check_origin(line, qs)
        self.assertEqual(qs.close(), 0)


harness.through_each_path(SessionTest, globals())


class TextFormatTest(harness.ServerTestCase):
    """The same event in the default text format: the message, then key=value fields."""

    session = "direct"

    def test_a_direct_sessions_line_is_a_text_line_of_cnp_worker(self):
        qs = self.adapter()
        self.assertIs(qs.reply(["reset", {}]), True, qs.diagnostics())
        self.assertIs(qs.reply(["add_fun", "fixture_fns.map_error"]), True, qs.diagnostics())
        qs.call(["map_doc", {"_id": "text-mapped", "n": 1}])
        with open(self.server.log_path, encoding="utf-8") as log:
            lines = [line for line in log if "mapping text-mapped" in line]
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], r" INFO cnp-worker\[\d+\] mapping text-mapped "
                                   r"function=fixture_fns.map_error kind=map doc_id=text-mapped "
                                   r"session=\S+ peer=\"unix uid=\d+ pid=\d+\"\n$")
        self.assertEqual(qs.close(), 0)


if __name__ == "__main__":
    harness.ServerTestCase.binaries, rest = harness.parse_binaries(sys.argv[1:])
    unittest.main(argv=[sys.argv[0]] + rest)
