"""Every real CouchDB 3.4.3 transcript replayed through the awaitable driver of the protocol
(AsyncQuerySession), with a real cnp-worker running the Python functions: the same rewriting
and comparison as the adapter's replay through cnp-server (tests/adapter/
replay_transcripts_test.py), so that both drivers must give couchjs's answers."""

import argparse
import json
import os
import sys
import types
import unittest

ARGS = None


def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--line-server", required=True)
    parser.add_argument("--functions", required=True, help="fixture_fns.py")
    parser.add_argument("--testdata", required=True)
    parser.add_argument("--replay", required=True, help="tests/adapter/replay_transcripts_test.py")
    return parser.parse_known_args(argv)


class AsyncSessionReplayTest(unittest.TestCase):
    """couchjs's answers, through AsyncQuerySession."""

    def line_server(self):
        program = types.SimpleNamespace(adapter=os.path.abspath(ARGS.line_server))
        return harness.Adapter(program, [
            f"--python-path={os.path.dirname(os.path.abspath(ARGS.functions))}",
            "--allow-module=fixture_fns"])

    def replay(self, name):
        path = os.path.join(ARGS.testdata, name)
        compared = 0
        for title, exchanges in replay.sections(path):
            server = self.line_server()
            try:
                for command_line, expected_lines in exchanges:
                    command = replay.rewrite_command(json.loads(command_line))
                    actual_lines = server.call(command)
                    where = f"{name} {title}\n> {command_line[:300]}"
                    self.assertEqual(len(actual_lines), len(expected_lines),
                                     f"{where}\nexpected {expected_lines}\nactual {actual_lines}"
                                     f"\n{server.diagnostics()}")
                    for expected_line, actual_line in zip(expected_lines, actual_lines):
                        expected, actual = json.loads(expected_line), json.loads(actual_line)
                        if expected != actual and not replay.javascript_specific(expected, actual):
                            self.fail(f"{where}\nexpected {expected_line}\nactual   {actual_line}")
                        compared += 1
            finally:
                status = server.close()
            self.assertEqual(status, 0, server.diagnostics())
        self.assertGreater(compared, 0)


if __name__ == "__main__":
    ARGS, rest = parse_args(sys.argv[1:])
    sys.path.insert(0, os.path.dirname(os.path.abspath(ARGS.replay)))
    import harness  # noqa: E402
    import replay_transcripts_test as replay  # noqa: E402
    replay.add_transcript_tests(AsyncSessionReplayTest, lambda self: ARGS.testdata)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
