"""Where the protocol ends a session (a fatal line, an unknown command: where couchjs exits),
the adapter exits 1 and says why on stderr, CouchDB's log, in the same words on both paths. The
stream path used to exit 1 with nothing on stderr, so CouchDB's log showed only the status."""

import sys
import unittest

import harness

ENDED = "cnp-adapter: the protocol ended the session with "


class ProtocolEndTest(harness.ServerTestCase):
    socket_prefix = "adapterfix-end-"

    def ended_by(self, command, *extra):
        qs = self.adapter(*extra)
        self.assertIs(qs.reply(["reset"]), True, qs.diagnostics())
        last = qs.call(command)[-1]
        self.assertEqual(qs.exited(), 1, qs.diagnostics())
        return last, qs.diagnostics()

    def test_an_uncached_design_doc(self):
        last, stderr = self.ended_by(["ddoc", "_design/unknown", ["shows", "x"], [None, {}]])
        self.assertEqual(
            last, '["fatal","query_protocol_error","uncached design doc: _design/unknown"]')
        self.assertIn(ENDED + last, stderr)

    def test_an_unknown_command(self):
        last, stderr = self.ended_by(["bogus_cmd", 1])
        self.assertTrue(last.startswith('["error","unknown_command",'), last)
        self.assertIn(ENDED + last, stderr)


harness.through_each_path(ProtocolEndTest, globals())


class LongListRowTest(harness.ServerTestCase):
    """An over-long list row ends the session: the stream path says so as the direct path does
    ("(a list row: the list cannot go on)"). The stream adapter tells a list row by the line's
    first bytes, so no list need be open here (a direct session asks its protocol, and would go
    on)."""

    socket_prefix = "adapterfix-row-"
    session = "stream"

    def test_an_over_long_list_row(self):
        qs = self.adapter("--max-line-bytes=1000")
        self.assertIs(qs.reply(["reset"]), True, qs.diagnostics())
        reply = qs.reply(["list_row", {"key": "k", "value": "x" * 2000}])
        self.assertEqual(reply[:2], ["error", "too_large"], reply)
        self.assertEqual(qs.exited(), 1, qs.diagnostics())
        self.assertIn("(cnp-adapter --max-line-bytes raises the limit) (a list row: the list "
                      "cannot go on)", qs.diagnostics())


if __name__ == "__main__":
    harness.ServerTestCase.binaries, rest = harness.parse_binaries(sys.argv[1:])
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
