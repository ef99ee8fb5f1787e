"""The CouchDB error a Session stream's status becomes on the stream path, against the stand-in
service: the adapter uses the server's mapping (service/couchdb/error_id.h). Before, every
RESOURCE_EXHAUSTED was answered too_large and never retried, although cnp-server also ends streams
with it when it is overloaded for a moment (--max-grpc-memory); and DEADLINE_EXCEEDED, which the
server itself answers as timeout, was unavailable. A line the service refuses as too large (its
cnp-call-limit trailer, or gRPC's own message limit) stays too_large and is sent once."""

import grpc

from scripted_adapter_fixture import ScriptedAdapterTestCase, main

DOC = {"_id": "d1"}
OVERLOAD = (grpc.StatusCode.RESOURCE_EXHAUSTED, "memory quota exceeded", ())
RESET = ["reset", {"timeout": 2000}]


class StreamErrorIdTest(ScriptedAdapterTestCase):
    temp_prefix = "adapterfix-errid-"

    def started(self):
        self.start_adapter(self.service.target)
        self.assertIs(self.reply(RESET), True)
        self.assertIs(self.reply(["add_fun", "f"]), True)

    def map_doc_attempts(self):
        return sum(1 for index in range(self.service.stream_count())
                   for line in self.service.stream_lines(index) if line[0] == "map_doc")

    def test_a_passing_overload_is_retried(self):
        self.service.abort_map_docs = [OVERLOAD]
        self.started()
        self.assertEqual(self.reply(["map_doc", DOC]), [[["f", "d1"]]])
        self.assertEqual(self.map_doc_attempts(), 2)

    def test_an_overload_that_lasts_is_overloaded_not_too_large(self):
        self.service.abort_map_docs = [OVERLOAD] * 1000
        self.started()
        reply = self.reply(["map_doc", DOC])
        self.assertEqual(reply[:2], ["error", "overloaded"], reply)
        self.assertIn("memory quota exceeded", reply[2])
        # The session goes on once the service takes lines again.
        self.service.abort_map_docs = []
        self.assertEqual(self.reply(["map_doc", DOC]), [[["f", "d1"]]])

    def test_a_line_the_server_refuses_as_too_large_is_sent_once(self):
        self.service.abort_map_docs = [
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "the request is larger than --max-call-bytes",
             (("cnp-call-limit", "request 100000"),))] * 10
        self.started()
        reply = self.reply(["map_doc", DOC])
        self.assertEqual(reply[:2], ["error", "too_large"], reply)
        self.assertIn("refused the line as too large", reply[2])
        self.assertEqual(self.map_doc_attempts(), 1)

    def test_a_replayed_line_refused_as_too_large_is_not_blamed_on_the_command(self):
        # The replica that took the session dies; the one the adapter reconnects to refuses the
        # replayed function as larger than its own limit. Replaying again cannot help, and the
        # command in flight (a small map_doc) is not what was too large.
        self.started()
        too_large = (grpc.StatusCode.RESOURCE_EXHAUSTED, "the request is larger than --max-call-bytes",
                     (("cnp-call-limit", "request 100000"),))
        self.service.abort_add_funs = [too_large] * 1000
        self.service.fail_next_map_doc.set()
        reply = self.reply(["map_doc", DOC])
        self.assertEqual(reply[0], "error", reply)
        self.assertNotEqual(reply[1], "too_large", reply)
        self.assertIn("refused the replayed session state", reply[2])
        self.assertNotIn("refused the line as too large", reply[2])
        replayed = sum(1 for index in range(1, self.service.stream_count())
                       for line in self.service.stream_lines(index) if line[0] == "add_fun")
        self.assertEqual(replayed, 1)

    def test_grpcs_own_message_limit_is_too_large(self):
        self.service.abort_map_docs = [
            (grpc.StatusCode.RESOURCE_EXHAUSTED,
             "Received message larger than max (150123 vs. 100000)", ())] * 10
        self.started()
        reply = self.reply(["map_doc", DOC])
        self.assertEqual(reply[:2], ["error", "too_large"], reply)
        self.assertEqual(self.map_doc_attempts(), 1)

    def test_the_servers_deadline_is_timeout(self):
        self.service.abort_map_docs = [
            (grpc.StatusCode.DEADLINE_EXCEEDED, "the call ran out of time", ())] * 1000
        self.started()
        reply = self.reply(["map_doc", DOC])
        self.assertEqual(reply[:2], ["error", "timeout"], reply)


if __name__ == "__main__":
    main()
