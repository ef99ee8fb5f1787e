"""Failover: the service dies under a live CouchDB session. A restarted service is taught the
session again (config, functions, design documents) and the command in flight is retried; a
service gone for good gives an error line, never an empty result. Also: with no --target, the
adapters of a host start one shared cnp-server."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

import cnp_testing
import harness

DOC_OSLO = {"_id": "d1", "town": "Oslo", "n": 1}
DOC_PARIS = {"_id": "d2", "town": "Paris", "n": 2}
DDOC = {"_id": "_design/f", "filters": {"by_town": "fixture_fns.by_town"},
        "lists": {"rows": "fixture_fns.list_raw"}}


class FailoverTest(unittest.TestCase):
    binaries = None

    def setUp(self):
        self.tmp = harness.socket_dir("cnp-failover-")
        self.socket_path = os.path.join(self.tmp.name, "cnp.sock")
        self.server = harness.Server(self.binaries, self.socket_path)
        # The stream path's failover; a direct session ends with its server (direct_session_test).
        self.qs = harness.Adapter(self.binaries, [f"--target={self.server.target}",
                                                  "--session=stream"])

    def tearDown(self):
        if self.qs.process.poll() is None:
            self.qs.close()
        self.server.stop()
        self.tmp.cleanup()

    def start_session(self, timeout_ms):
        self.assertIs(self.qs.reply(["reset", {"reduce_limit": True, "timeout": timeout_ms}]), True)
        self.assertIs(self.qs.reply(["ddoc", "new", DDOC["_id"], DDOC]), True)
        self.assertIs(self.qs.reply(["add_fun", "fixture_fns.town_n|1"]), True)
        self.assertEqual(self.qs.reply(["map_doc", DOC_OSLO]), [[["Oslo", 1]]])

    def test_restarted_service_is_taught_the_session_again(self):
        self.start_session(timeout_ms=20000)
        self.server.kill()
        self.server = harness.Server(self.binaries, self.socket_path)
        # The command in flight is retried on the new service, with the function replayed.
        self.assertEqual(self.qs.reply(["map_doc", DOC_PARIS]), [[["Paris", 2]]])
        # And the design document taught before the restart is known there.
        self.assertEqual(self.qs.reply(["ddoc", DDOC["_id"], ["filters", "by_town"],
                                        [[DOC_OSLO, DOC_PARIS], {"query": {"town": "Paris"}}]]),
                         [True, [False, True]])
        self.assertEqual(self.qs.close(), 0, self.qs.diagnostics())

    def test_service_gone_for_good_is_an_error_never_an_empty_result(self):
        self.start_session(timeout_ms=1000)
        self.server.kill()
        for command in (["map_doc", DOC_PARIS],
                        ["reduce", ["fixture_fns.reduce_values_sum"], [[[1, "a"], 2]]],
                        ["rereduce", ["fixture_fns.reduce_values_sum"], [1, 2]]):
            lines = self.qs.call(command)
            self.assertEqual(len(lines), 1, lines)
            reply = json.loads(lines[0])
            self.assertEqual(reply[:2], ["error", "unavailable"], reply)
        self.assertIn("cnp-server", self.qs.diagnostics())
        self.assertEqual(self.qs.close(), 0)

    def test_list_cut_by_a_dead_service_ends_the_adapter(self):
        self.start_session(timeout_ms=1000)
        self.assertEqual(self.qs.reply(["ddoc", DDOC["_id"], ["lists", "rows"],
                                        [{"total_rows": 2}, {"q": "ok"}]]),
                         ["start", ["first chunk", "ok"], {"headers": {}}])
        self.server.kill()
        lines = self.qs.call(["list_row", {"key": "a"}])
        self.assertEqual(json.loads(lines[0])[:2], ["error", "unavailable"])
        self.assertNotEqual(self.qs.exited(), 0)


def free_loopback_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FrozenReplicaTest(unittest.TestCase):
    """A replica that stops answering without closing anything (SIGSTOP; a host gone without a
    reset) is given up for another: the adapter waited on it until CouchDB killed it."""

    binaries = None

    def test_a_frozen_replica_is_given_up_for_another(self):
        with harness.socket_dir("cnp-frozen-") as tmp:
            ports = [free_loopback_port(), free_loopback_port()]
            first = harness.Server(self.binaries, os.path.join(tmp, "a.sock"),
                                   extra=[f"--listen=127.0.0.1:{ports[0]}"])
            second = None
            qs = harness.Adapter(self.binaries, [
                f"--target=127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", "--session=stream"])
            try:
                # Only the first replica is up: the session is there.
                # CouchDB's default timeout: 4 s (80% of it) for the adapter to find the
                # replica frozen and replay the session on the other.
                self.assertIs(qs.reply(["reset", {"timeout": 5000}]), True)
                self.assertIs(qs.reply(["add_fun", "fixture_fns.town_n|1"]), True)
                self.assertEqual(qs.reply(["map_doc", DOC_OSLO]), [[["Oslo", 1]]])
                second = harness.Server(self.binaries, os.path.join(tmp, "b.sock"),
                                        extra=[f"--listen=127.0.0.1:{ports[1]}"])
                os.killpg(first.process.pid, signal.SIGSTOP)
                cnp_testing.wait_until_stopped(first.process.pid)
                started = time.monotonic()
                self.assertEqual(qs.reply(["map_doc", DOC_PARIS], timeout=15), [[["Paris", 2]]],
                                 qs.diagnostics())
                # Found by the stream's pings (every 1.25 s, 1.25 s to answer: at most 2.5 s),
                # replayed and answered within the adapter's 80% of CouchDB's timeout. (With
                # pings every 2 s and 2 s to answer, up to 4 s went to finding it.)
                self.assertLess(time.monotonic() - started, 4)
                self.assertEqual(qs.close(), 0, qs.diagnostics())
            finally:
                os.killpg(first.process.pid, signal.SIGCONT)
                if qs.process.poll() is None:
                    qs.process.kill()
                    qs.exited()
                first.stop()
                if second is not None:
                    second.stop()


class StoppedReplicaTest(unittest.TestCase):
    """A replica stopped gracefully (SIGTERM) while a command runs past its --shutdown-grace:
    the command goes to the other replica. The server answered it
    ["error","unavailable","cnp-server: the server shut down before Map ... finished"], an
    ordinary reply the adapter handed CouchDB although it had a replica and time left (found by
    a review: 3 runs in 4). The server now ends the stream UNAVAILABLE without an answer."""

    binaries = None

    def test_a_command_cut_by_the_shutdown_grace_is_answered_by_another_replica(self):
        with harness.socket_dir("cnp-stopped-") as tmp:
            ports = [free_loopback_port(), free_loopback_port()]
            extra = ["--max-sessions=0", "--shutdown-grace=500ms"]
            first = harness.Server(self.binaries, os.path.join(tmp, "a.sock"),
                                   extra=[f"--listen=127.0.0.1:{ports[0]}"] + extra)
            second = None
            qs = harness.Adapter(self.binaries, [
                f"--target=127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", "--session=stream"])
            try:
                # Only the first replica is up: the session is there.
                self.assertIs(qs.reply(["reset", {"timeout": 5000}]), True)
                self.assertIs(qs.reply(["add_fun", "fixture_fns.slow_town"]), True)
                self.assertEqual(qs.reply(["map_doc", DOC_OSLO]), [[["Oslo", 1]]])
                second = harness.Server(self.binaries, os.path.join(tmp, "b.sock"),
                                        extra=[f"--listen=127.0.0.1:{ports[1]}"] + extra)
                started = os.path.join(tmp, "started")
                qs.send_line(json.dumps(["map_doc", dict(DOC_PARIS, seconds=1.5,
                                                         started=started)]))
                # The command runs on the first replica when the stop comes.
                try:
                    cnp_testing.wait_for_file(started, timeout=15)
                except AssertionError as error:
                    self.fail(f"{error}\n{qs.diagnostics()}")
                os.kill(first.process.pid, signal.SIGTERM)
                line = qs.read_line(timeout=15)
                self.assertEqual(json.loads(line), [[["Paris", 2]]], qs.diagnostics())
                first.process.wait(timeout=10)
                self.assertEqual(qs.reply(["map_doc", DOC_OSLO]), [[["Oslo", 1]]])
                self.assertEqual(qs.close(), 0, qs.diagnostics())
            finally:
                if qs.process.poll() is None:
                    qs.process.kill()
                    qs.exited()
                first.stop()
                if second is not None:
                    second.stop()


class TokenRotationTest(unittest.TestCase):
    """A token rotated on the server under a live CouchDB session: once the old token leaves the
    server's file, the stream opened with it ends at its next line (before, it was served on
    for as long as CouchDB ran), and the adapter reconnects with its token file as it is then
    and replays the session: a rotation done in order costs CouchDB nothing. A token the
    server no longer takes at all is an error line, never an empty result."""

    binaries = None

    def test_a_session_follows_a_rotation_and_a_revoked_token_is_an_error(self):
        with harness.socket_dir("cnp-rotation-") as tmp:
            port = free_loopback_port()
            server_tokens = os.path.join(tmp, "server-tokens")
            client_token = os.path.join(tmp, "client-token")

            def write_private(path, text):
                # Renamed into place, as a secrets manager does: never read half-written.
                with open(path + ".new", "w", encoding="utf-8", opener=lambda p, f: os.open(
                        p, f, 0o600)) as out:
                    out.write(text)
                os.rename(path + ".new", path)

            reloads = 0

            def reload_server(text):
                nonlocal reloads
                write_private(server_tokens, text)
                os.kill(server.process.pid, signal.SIGHUP)
                reloads += 1
                cnp_testing.wait_for_text(
                    server.log_path, lambda log: log.count("accepted from now on") >= reloads)

            write_private(server_tokens, "old-token-5d2e-b81f\n")
            write_private(client_token, "old-token-5d2e-b81f\n")
            server = harness.Server(self.binaries, os.path.join(tmp, "cnp.sock"), extra=[
                f"--listen=127.0.0.1:{port}", f"--auth-token-file={server_tokens}"])
            qs = harness.Adapter(self.binaries, [f"--target=127.0.0.1:{port}", "--session=stream",
                                                 f"--auth-token-file={client_token}"])
            try:
                self.assertIs(qs.reply(["reset", {"timeout": 5000}]), True)
                self.assertIs(qs.reply(["add_fun", "fixture_fns.town_n|1"]), True)
                self.assertEqual(qs.reply(["map_doc", DOC_OSLO]), [[["Oslo", 1]]])

                reload_server("old-token-5d2e-b81f\nnew-token-9a47-3c60\n")
                write_private(client_token, "new-token-9a47-3c60\n")
                reload_server("new-token-9a47-3c60\n")
                # The session's stream, opened with the old token, ends at this line; the line
                # is answered on a new stream, with the function taught again.
                self.assertEqual(qs.reply(["map_doc", DOC_PARIS]), [[["Paris", 2]]],
                                 qs.diagnostics())
                self.assertIn("bearer token removed", cnp_testing.read_log(server))

                reload_server("other-token-31c8\n")
                reply = qs.reply(["map_doc", DOC_OSLO])
                self.assertEqual(reply[:2], ["error", "unavailable"], reply)
                self.assertIn("wrong bearer token", reply[2])
                self.assertEqual(qs.close(), 0, qs.diagnostics())
            finally:
                if qs.process.poll() is None:
                    qs.process.kill()
                    qs.exited()
                server.stop()


class QuietSessionTest(unittest.TestCase):
    """A CouchDB session that sends nothing for a while keeps its stream to the real cnp-server
    although the adapter pings it every 1.25 s: gRPC's default ping policy had the server answer
    those pings with a GOAWAY (too_many_pings), and the session was replayed on a new stream."""

    binaries = None

    def test_the_adapters_pings_are_accepted(self):
        with harness.socket_dir("cnp-quiet-") as tmp:
            server = harness.Server(self.binaries, os.path.join(tmp, "cnp.sock"), workers=1)
            try:
                qs = harness.Adapter(self.binaries, [f"--target={server.target}",
                                                     "--session=stream"])
                self.assertIs(qs.reply(["reset", {"timeout": 5000}]), True)
                self.assertIs(qs.reply(["add_fun", "fixture_fns.town_n|1"]), True)
                # The quiet time under test (eight pings; the GOAWAY came after about 14 s), not
                # a synchronisation.
                time.sleep(16)
                self.assertEqual(qs.reply(["map_doc", DOC_OSLO]), [[["Oslo", 1]]])
                self.assertEqual(qs.close(), 0)
                # gRPC logs a GOAWAY for too many pings as an error, at its default verbosity.
                self.assertNotIn("too_many_pings", qs.diagnostics())
            finally:
                server.stop()


class AbandonedListTest(unittest.TestCase):
    """CouchDB closing the pipe in the middle of a list must not leave the worker stuck in it."""

    binaries = None

    def test_eof_in_a_list_frees_the_worker(self):
        with harness.socket_dir("cnp-eof-") as tmp:
            server = harness.Server(self.binaries, os.path.join(tmp, "cnp.sock"), workers=1)
            try:
                qs = harness.Adapter(self.binaries, [f"--target={server.target}",
                                                     "--session=stream"])
                self.assertIs(qs.reply(["ddoc", "new", DDOC["_id"], DDOC]), True)
                self.assertEqual(qs.reply(["ddoc", DDOC["_id"], ["lists", "rows"],
                                           [{"total_rows": 9}, {"q": "ok"}]])[0], "start")
                self.assertEqual(qs.reply(["list_row", {"key": "a"}]), ["chunks", ["a"]])
                self.assertEqual(qs.close(), 0)
                # The only worker serves the next session.
                other = harness.Adapter(self.binaries, [f"--target={server.target}",
                                                        "--session=stream"])
                self.assertIs(other.reply(["add_fun", "fixture_fns.town_n|1"]), True)
                self.assertEqual(other.reply(["map_doc", DOC_OSLO]), [[["Oslo", 1]]])
                self.assertEqual(other.close(), 0)
            finally:
                server.stop()


class SharedServerTest(unittest.TestCase):
    """No --target: the first adapter starts the host's cnp-server; the others use it."""

    binaries = None

    def test_adapters_start_one_shared_server(self):
        with harness.socket_dir("cnp-shared-") as tmp:
            runtime_dir = os.path.join(tmp, "run")
            socket_path = os.path.join(runtime_dir, "cnp.sock")
            env = dict(os.environ, CNP_TARGET=f"unix:{socket_path}")
            # No --server-binary: the adapter finds cnp-server in Bazel's layout
            # (bazel-bin/adapter/cnp-adapter → bazel-bin/service/cnp-server).
            args = [f"--python-path={os.path.dirname(self.binaries.functions)}",
                    "--allow-module=fixture_fns", "--workers=1"]
            adapters = [harness.Adapter(self.binaries, args, env=env) for _ in range(3)]
            try:
                # All at once, as CouchDB starting several index builds would.
                for adapter in adapters:
                    adapter.send_line(json.dumps(["reset", {"timeout": 30000}]))
                    adapter.send_line(json.dumps(["add_fun", "fixture_fns.town_n|1"]))
                for adapter in adapters:
                    self.assertEqual(adapter.read_line(60), "true")
                    self.assertEqual(adapter.read_line(60), "true", adapter.diagnostics())
                    self.assertEqual(adapter.reply(["map_doc", DOC_OSLO]), [[["Oslo", 1]]])
                for adapter in adapters:
                    self.assertEqual(adapter.close(), 0)
                with open(os.path.join(runtime_dir, "cnp-server.log"), encoding="utf-8") as log:
                    starts = [line for line in log if "starting" in line and "cnp-adapter" in line]
                self.assertEqual(len(starts), 1, starts)
                self.assertEqual(os.stat(runtime_dir).st_mode & 0o777, 0o700)
            finally:
                for pid in harness.daemon_pids(socket_path):
                    os.kill(pid, 9)


    def test_a_service_that_cannot_start_is_an_error(self):
        with harness.socket_dir("cnp-nostart-") as tmp:
            socket_path = os.path.join(tmp, "run", "cnp.sock")
            env = dict(os.environ, CNP_TARGET=f"unix:{socket_path}")
            # An earlier server's error in the log is not this one's (a review: it was quoted).
            os.makedirs(os.path.dirname(socket_path), mode=0o700)
            with open(os.path.join(tmp, "run", "cnp-server.log"), "w", encoding="utf-8") as log:
                log.write("2026-01-01T00:00:00.000Z ERROR cnp-server[1] an earlier failure\n")
            adapter = harness.Adapter(self.binaries, ["--server-binary=/bin/false"], env=env)
            self.assertIs(adapter.reply(["reset", {"timeout": 30000}]), True)
            reply = adapter.reply(["add_fun", "fixture_fns.town_n|1"], timeout=20)
            self.assertEqual(reply[:2], ["error", "unavailable"])
            self.assertIn("cnp-server exited while starting; see ", reply[2])
            self.assertNotIn("an earlier failure", reply[2])
            self.assertEqual(adapter.close(), 0)

    def test_a_service_refusing_its_settings_says_why_in_couchdbs_log(self):
        # --allow-module=os cannot be refused by the adapter (it runs no Python): the server
        # it starts refuses it, and CouchDB's error quotes why rather than only the log's path.
        with harness.socket_dir("cnp-refused-") as tmp:
            socket_path = os.path.join(tmp, "run", "cnp.sock")
            env = dict(os.environ, CNP_TARGET=f"unix:{socket_path}")
            args = [f"--python-path={os.path.dirname(self.binaries.functions)}",
                    "--allow-module=fixture_fns,os", "--workers=1"]
            adapter = harness.Adapter(self.binaries, args, env=env)
            self.assertIs(adapter.reply(["reset", {"timeout": 30000}]), True)
            reply = adapter.reply(["add_fun", "fixture_fns.town_n|1"], timeout=20)
            self.assertEqual(reply[:2], ["error", "unavailable"])
            self.assertIn("cnp-server exited while starting (", reply[2])
            self.assertIn("no worker could start: --allow-module=os: module 'os' is part of "
                          "Python's standard library", reply[2])
            self.assertEqual(adapter.close(), 0)


if __name__ == "__main__":
    binaries, rest = harness.parse_binaries(sys.argv[1:])
    FailoverTest.binaries = SharedServerTest.binaries = AbandonedListTest.binaries = binaries
    FrozenReplicaTest.binaries = QuietSessionTest.binaries = binaries
    StoppedReplicaTest.binaries = TokenRotationTest.binaries = binaries
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
