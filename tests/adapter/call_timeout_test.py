"""The --call-timeout that caps every command of a CouchDB session, and which setting a timeout
names.

A server the adapter starts used to get cnp-server's default, 60 s, with no way to change it:
every command stopped at 60 s whatever CouchDB's os_process_timeout, and the error told the user
to raise cnp-server's --call-timeout, which they do not run. Now the adapter has --call-timeout
(default 10m, session::kAdapterCallTimeout), passes it on, and counts it among the settings
that replace an adapter-started server; the error CouchDB gets names the setting the user can
change (the adapter's flag on an adapter-started server, cnp-server's otherwise), and the
adapter's stderr says which limit fired: CouchDB's timeout or the --call-timeout."""

import os
import signal
import sys
import time
import unittest

import harness

# Outlasts every timeout of these tests: the command is ended by one of them.
SLEEPY_FNS = '''
import time


def sleeps(doc):
    time.sleep(doc["seconds"])
    yield doc["_id"], 1
'''

MODULE = "adapterfix_sleepy"
DOC = {"_id": "d1", "seconds": 30}
ADAPTERS_SETTING = "the --call-timeout of the cnp-adapter that started this cnp-server"
SERVERS_SETTING = "cnp-server's --call-timeout"


def server_args(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().split(b"\0")


class AdapterStartedServer(unittest.TestCase):
    """A test's own server, which the adapter starts (through $CNP_TARGET)."""

    session = "auto"

    def setUp(self):
        self.functions = harness.module_directory(MODULE, SLEEPY_FNS)
        self.tmp = harness.socket_dir("adapterfix-cap-")
        self.socket_path = os.path.join(self.tmp.name, "run", "cnp.sock")

    def tearDown(self):
        for pid in harness.daemon_pids(self.socket_path):
            os.kill(pid, signal.SIGKILL)
        self.tmp.cleanup()
        self.functions.cleanup()

    def adapter(self, *extra):
        env = dict(os.environ, CNP_TARGET=f"unix:{self.socket_path}")
        return harness.Adapter(harness.ServerTestCase.binaries,
                               [f"--python-path={self.functions.name}", f"--allow-module={MODULE}",
                                "--workers=1", f"--session={self.session}", *extra], env=env)


class AdapterStartedTest(AdapterStartedServer):
    """The adapter's --call-timeout, passed on to the server it starts."""

    def test_the_adapters_call_timeout_caps_a_command_and_is_named(self):
        qs = self.adapter("--call-timeout=1s")
        # CouchDB allows 20 s: the adapter's --call-timeout, 1 s, is the shorter.
        self.assertIs(qs.reply(["reset", {"timeout": 20000}], timeout=60), True, qs.diagnostics())
        self.assertIs(qs.reply(["add_fun", f"{MODULE}.sleeps"]), True, qs.diagnostics())
        started = time.monotonic()
        reply = qs.reply(["map_doc", DOC], timeout=20)
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(reply[:2], ["error", "timeout"], reply)
        # The setting this user can change: the adapter's flag, not the server's.
        self.assertIn(ADAPTERS_SETTING, reply[2])
        self.assertNotIn(SERVERS_SETTING, reply[2])
        [server] = harness.daemon_pids(self.socket_path)
        self.assertIn(b"--call-timeout=1s", server_args(server))
        if self.session == "direct":
            self.assertEqual(qs.exited(), 1)
            self.assertIn(f"cnp-adapter: a command ran past {ADAPTERS_SETTING} (1s)",
                          qs.diagnostics())
            self.assertNotIn("CouchDB's timeout", qs.diagnostics())
        else:
            self.assertEqual(qs.close(), 0, qs.diagnostics())


harness.through_each_path(AdapterStartedTest, globals())


class AdapterSettingTest(AdapterStartedServer):
    """The flag's default, its bounds, and a changed value replacing the server."""

    session = "direct"

    def test_the_default_is_passed_on_and_a_change_replaces_the_server(self):
        qs = self.adapter()
        self.assertIs(qs.reply(["reset", {"timeout": 20000}], timeout=60), True, qs.diagnostics())
        self.assertEqual(qs.close(), 0, qs.diagnostics())
        [first] = harness.daemon_pids(self.socket_path)
        self.assertIn(b"--call-timeout=10m", server_args(first))
        # The same configuration spelt the same way keeps the server.
        qs = self.adapter("--call-timeout=10m")
        self.assertIs(qs.reply(["reset", {"timeout": 20000}], timeout=60), True, qs.diagnostics())
        self.assertEqual(qs.close(), 0, qs.diagnostics())
        self.assertEqual(harness.daemon_pids(self.socket_path), [first])
        # Another --call-timeout is another configuration: the server is replaced.
        qs = self.adapter("--call-timeout=90s")
        self.assertIs(qs.reply(["reset", {"timeout": 20000}], timeout=60), True, qs.diagnostics())
        self.assertEqual(qs.close(), 0, qs.diagnostics())
        [second] = harness.daemon_pids(self.socket_path)
        self.assertNotEqual(second, first)
        self.assertIn(b"--call-timeout=1m30s", server_args(second))

    def test_a_value_the_server_would_refuse_is_refused(self):
        for value in ("0s", "-1s", "10000h"):
            with self.subTest(value):
                qs = self.adapter(f"--call-timeout={value}")
                self.assertEqual(qs.close(), 2, qs.diagnostics())
                self.assertIn("--call-timeout must be longer than 0s", qs.diagnostics())
                self.assertEqual(harness.daemon_pids(self.socket_path), [])


class OperatorsServerTest(harness.ModuleServerTestCase):
    """An operator's server: its own --call-timeout is named, and the adapter's stderr tells
    that limit from CouchDB's timeout (it said "CouchDB's timeout" whichever fired)."""

    socket_prefix = "adapterfix-op-"
    session = "direct"
    module = MODULE
    module_source = SLEEPY_FNS
    module_server_extra = ("--call-timeout=1s",)

    def timed_out(self, couchdb_timeout_ms):
        qs = self.adapter()
        self.assertIs(qs.reply(["reset", {"timeout": couchdb_timeout_ms}]), True, qs.diagnostics())
        self.assertIs(qs.reply(["add_fun", f"{MODULE}.sleeps"]), True, qs.diagnostics())
        reply = qs.reply(["map_doc", DOC], timeout=20)
        self.assertEqual(reply[:2], ["error", "timeout"], reply)
        self.assertEqual(qs.exited(), 1)
        return reply[2], qs.diagnostics()

    def test_the_servers_call_timeout_fired(self):
        reason, stderr = self.timed_out(20000)
        self.assertIn(f"({SERVERS_SETTING}, 1s, caps every command", reason)
        self.assertIn(f"cnp-adapter: a command ran past {SERVERS_SETTING} (1s)", stderr)
        self.assertNotIn("CouchDB's timeout", stderr)

    def test_couchdbs_timeout_fired(self):
        # 600 ms less the 300 ms margin: CouchDB's, not the server's 1 s.
        reason, stderr = self.timed_out(600)
        self.assertNotIn("--call-timeout", reason)
        self.assertIn("cnp-adapter: a command ran past CouchDB's timeout", stderr)
        self.assertNotIn("--call-timeout", stderr)


if __name__ == "__main__":
    harness.ServerTestCase.binaries, rest = harness.parse_binaries(sys.argv[1:])
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
