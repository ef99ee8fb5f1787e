"""cnp-adapter --help tells the truth: every flag as it is written in COUCHDB_QUERY_SERVER_PYTHON
(--max-line-bytes, not absl's --max_line_bytes), on stdout, exit 0. Before, it printed "No
flags matched" (absl lists only flags of a file named like the program)."""

import re
import subprocess
import sys
import unittest

ADAPTER = None


class HelpTest(unittest.TestCase):
    def test_help_lists_every_flag_with_dashes(self):
        out = subprocess.run([ADAPTER, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("No flags matched", out.stdout)
        listed = re.findall(r"^  --([a-z0-9_-]+)", out.stdout, re.M)
        for flag in ("target", "session", "max-line-bytes", "python-path", "allow-module",
                     "workers", "server-binary", "auth-token-file", "tls", "tls-ca", "tls-cert",
                     "tls-key", "stats"):
            self.assertIn(flag, listed, out.stdout)
        self.assertEqual([flag for flag in listed if "_" in flag], [])


if __name__ == "__main__":
    ADAPTER = sys.argv.pop(1)
    unittest.main()
