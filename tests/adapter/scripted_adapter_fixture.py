"""The fixture shared by the stream path's tests against the stand-in Session service
(scripted_session_service.py): each test gets a short temporary directory with the service
listening in it, starts cnp-adapter against it (or against something put in front of it), and
exchanges query-protocol lines with the adapter as CouchDB would.

A test module subclasses ScriptedAdapterTestCase and ends with `main()`, which takes the
cnp-adapter to run from its first argument."""

import json
import os
import select
import shutil
import subprocess
import sys
import unittest

import cnp_testing
from scripted_session_service import ScriptedSessionService


class ScriptedAdapterTestCase(unittest.TestCase):
    adapter_path = None  # set by main()
    temp_prefix = "cnp-scripted-"  # of the test's directory
    socket_name = "scripted.sock"  # the service's socket, in that directory

    def setUp(self):
        self.dir = cnp_testing.short_temp_dir(self.temp_prefix)
        self.service = ScriptedSessionService(self.dir, name=self.socket_name)
        self.adapter = None

    def tearDown(self):
        if self.adapter is not None:
            if self.adapter.poll() is None:
                self.adapter.kill()
            self.adapter.wait()
            for pipe in (self.adapter.stdin, self.adapter.stdout, self.adapter.stderr):
                pipe.close()
        self.service.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start_adapter(self, target, *extra):
        """cnp-adapter on the stream path to `target`, with `extra` flags."""
        self.adapter = subprocess.Popen(
            [self.adapter_path, f"--target={target}", "--session=stream", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def reply(self, command, timeout=30.0):
        """The adapter's answer to `command`, decoded; fails the test if none comes within
        `timeout` seconds or the adapter exits."""
        self.adapter.stdin.write(json.dumps(command).encode() + b"\n")
        self.adapter.stdin.flush()
        ready, _, _ = select.select([self.adapter.stdout], [], [], timeout)
        if not ready:
            self.fail(f"cnp-adapter did not answer {command[0]} within {timeout} s")
        line = self.adapter.stdout.readline()
        if not line:
            self.adapter.stdin.close()
            self.fail("cnp-adapter exited: " + self.adapter.stderr.read().decode())
        return json.loads(line)


def main():
    ScriptedAdapterTestCase.adapter_path = os.path.abspath(sys.argv.pop(1))
    unittest.main()
