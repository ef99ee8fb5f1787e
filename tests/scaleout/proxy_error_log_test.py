"""Behind nginx with no replica up, each call is answered by nginx's 502 page, whose headers are
not gRPC's. gRPC's client writes an ERROR line for each header it cannot parse; found by a README
walkthrough: cnp-adapter wrote 20-21 such lines per command into its stderr, which is CouchDB's
log, and cnp map 3 per call, before their own message that already says what happened. Each of
gRPC's source lines now speaks at most once a minute in the clients (common/grpc_client_log.h),
and each command is still answered with an error line, never an empty result."""
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import cluster

ADAPTER, CNP, NGINX_CONF = (os.path.abspath(a) for a in sys.argv[1:4])
del sys.argv[1:4]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
COMMANDS = 4


class NoReplica:
    """An upstream address nothing listens on: nginx answers 502."""

    def __init__(self):
        self.address = "127.0.0.1:%d" % cluster.free_port()


def grpc_lines_by_source(stderr, program):
    """How many of gRPC's lines `program` wrote, by gRPC's source file and line, in its own
    format ("E1206 10:00:00.1 123 hpack_parser.cc:1218] ...") or cnp's ("cnp: grpc error
    FILE:LINE: ...")."""
    counts = collections.Counter()
    for line in stderr.splitlines():
        found = re.match(r"^%s: grpc \w+ (\S+:\d+): " % re.escape(program), line) or \
            re.match(r"^[EIWD]\d{4} \S+ +\d+ (\S+:\d+)\] ", line)
        if found:
            counts[found.group(1)] += 1
    return counts


class ProxyErrorLogTest(unittest.TestCase):
    def setUp(self):
        down = NoReplica()
        self.nginx = cluster.Nginx(NGINX_CONF, [down, down], nginx=NGINX)
        self.addCleanup(self.nginx.stop)

    def test_the_adapter_answers_every_command_and_logs_each_grpc_line_once(self):
        commands = [["reset", {"reduce_limit": True, "timeout": 5000}]] + \
                   [["add_fun", "scalefns.triple"]] * (COMMANDS - 1)
        run = subprocess.run(
            [ADAPTER, "--target=" + self.nginx.address, "--session=stream"],
            input="".join(json.dumps(c) + "\n" for c in commands).encode(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        stderr = run.stderr.decode(errors="replace")
        answers = [json.loads(line) for line in run.stdout.decode().splitlines()]
        answers = [a for a in answers if not (isinstance(a, list) and a[:1] == ["log"])]
        self.assertEqual(len(answers), COMMANDS, stderr)
        # The reset is the adapter's to answer; each add_fun needs a replica.
        self.assertIs(answers[0], True, stderr)
        for answer in answers[1:]:
            self.assertEqual(answer[:2], ["error", "unavailable"], stderr)
        self.assertIn("502", json.dumps(answers), stderr)
        counts = grpc_lines_by_source(stderr, "cnp-adapter")
        self.assertTrue(counts, "gRPC logged nothing: the 502 did not reach its parser\n" + stderr)
        self.assertEqual(set(counts.values()), {1}, stderr)

    def test_cnp_map_says_what_happened_with_each_grpc_line_once(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as docs:
            docs.write('{"_id":"a","n":1}\n{"_id":"b","n":2}\n')
            docs.flush()
            runs = [subprocess.run([CNP, "map", "--target=" + self.nginx.address,
                                    "scalefns.triple", docs.name],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
                    for _ in range(2)]
        for run in runs:
            stderr = run.stderr.decode(errors="replace")
            self.assertNotEqual(run.returncode, 0, stderr)
            self.assertEqual(run.stdout, b"", stderr)
            self.assertIn("502", stderr)
            counts = grpc_lines_by_source(stderr, "cnp")
            self.assertTrue(counts, stderr)
            self.assertEqual(set(counts.values()), {1}, stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
