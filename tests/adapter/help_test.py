"""cnp-adapter's command line. --help tells the truth: every flag as it is written in
COUCHDB_QUERY_SERVER_PYTHON (--max-line-bytes, not absl's --max_line_bytes), on stdout, exit 0,
however help is asked for (absl's --helpshort, --helpon=, --helpmatch= printed "No flags
matched": absl lists only flags of a file named like the program). An unknown flag is a usage
error that names the flag meant. And flags that can never work together are refused at once
with the reason: TLS with a list of addresses, TLS and token files that cannot be used."""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

ADAPTER = None


class HelpTest(unittest.TestCase):
    def test_help_lists_every_flag_with_dashes(self):
        self.check_help("--help")

    def test_every_help_spelling_gets_the_same_listing(self):
        for spelling in ("--helpfull", "--helpshort", "-helpshort", "--helpon=main",
                         "--helpmatch=target", "-h"):
            with self.subTest(spelling=spelling):
                self.check_help(spelling)

    def test_tls_with_an_address_list_is_refused_at_once(self):
        for tls in ("--tls", "--tls-ca=/nonexistent/ca.pem"):
            with self.subTest(tls=tls):
                # A command waiting on stdin: without the check the adapter would try to connect
                # and answer it with a generic "unavailable" after its retries.
                out = subprocess.run(
                    [ADAPTER, tls, "--target=127.0.0.1:1,127.0.0.2:1", "--session=stream"],
                    input=json.dumps(["map_doc", {"_id": "a"}]) + "\n",
                    capture_output=True, text=True, timeout=30)
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertEqual(out.stdout, "")
                self.assertIn("list of addresses", out.stderr)
                self.assertIn("--target=dns:///NAME:PORT", out.stderr)

    def test_tls_with_a_unix_target_is_refused_at_once(self):
        # A unix socket never uses TLS: taken and ignored, the options let an operator believe
        # the adapter's connection was TLS.
        out = subprocess.run(
            [ADAPTER, "--tls", "--target=unix:/nonexistent/cnp.sock", "--session=stream"],
            input=json.dumps(["map_doc", {"_id": "a"}]) + "\n",
            capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertEqual(out.stdout, "")
        self.assertIn("is a unix socket, which never uses it", out.stderr)

    def test_unusable_tls_and_token_files_are_refused_at_once(self):
        # Found only at the first connection, they made the adapter answer reset `true` and
        # every command `unavailable`, and exit 0 at the end.
        with tempfile.TemporaryDirectory() as tmp:
            cert = os.path.join(tmp, "client.pem")
            token = os.path.join(tmp, "token")
            with open(cert, "w", encoding="ascii") as f:
                f.write("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
            with open(token, "w", encoding="ascii") as f:
                f.write("secret\n")
            os.chmod(token, 0o644)
            for flags, reason in (([f"--tls-cert={cert}", "--target=127.0.0.1:1"], "--tls-key"),
                                  ([f"--auth-token-file={token}", "--target=127.0.0.1:1"],
                                   token)):
                with self.subTest(flags=flags):
                    out = subprocess.run(
                        [ADAPTER, "--session=stream", *flags],
                        input="".join(json.dumps(line) + "\n" for line in
                                      (["reset", {"timeout": 1000}], ["map_doc", {"_id": "a"}])),
                        capture_output=True, text=True, timeout=30)
                    self.assertEqual(out.returncode, 2, out.stderr)
                    self.assertEqual(out.stdout, "")
                    self.assertIn(reason, out.stderr)

    def test_an_unknown_flag_is_a_usage_error_naming_the_one_meant(self):
        # Before CouchDB's first command: absl's own message would exit 1, like a crash.
        out = subprocess.run([ADAPTER, "--targt=unix:/nonexistent.sock"],
                             input=json.dumps(["reset"]) + "\n",
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertEqual(out.stdout, "")
        self.assertIn("unknown flag --targt; did you mean --target? "
                      "(cnp-adapter --help lists every flag)", out.stderr)

    def check_help(self, spelling):
        out = subprocess.run([ADAPTER, spelling], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("No flags matched", out.stdout)
        listed = re.findall(r"^  --([a-z0-9_-]+)", out.stdout, re.M)
        for flag in ("target", "session", "max-line-bytes", "python-path", "allow-module",
                     "workers", "server-binary", "auth-token-file", "tls", "tls-ca", "tls-cert",
                     "tls-key", "server-user", "stats"):
            self.assertIn(flag, listed, out.stdout)
        self.assertEqual([flag for flag in listed if "_" in flag], [])


if __name__ == "__main__":
    ADAPTER = sys.argv.pop(1)
    unittest.main()
