"""A unix $CNP_TARGET in a directory of the server's own user (cnp, for the systemd units) is an
operator's server, trusted with --server-user exactly as the same --target is; the adapter took
it for a default socket of its own, which must be its own user's, and answered every command
`unavailable` whatever --server-user said."""

import json
import os
import shutil
import subprocess
import sys
import unittest
from concurrent import futures

import grpc

import cnp_testing
from session_wire import session_input_line, session_output

ADAPTER = None
SERVER_UID = 65534  # nobody: a user that is neither the test's nor root


def map_service(target):
    """A Session service answering add_fun `true` and map_doc one row per function."""

    def session(requests, context):
        functions = []
        for request in requests:
            command = json.loads(session_input_line(request))
            if command[0] == "add_fun":
                functions.append(command[1])
                yield session_output([b"true"], accepted=True)
            elif command[0] == "map_doc":
                rows = [[[f, command[1]["_id"]]] for f in functions]
                yield session_output([json.dumps(rows).encode()])

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "cnp.v1.Functions", {"Session": grpc.stream_stream_rpc_method_handler(session)}),))
    server.add_insecure_port(target)
    server.start()
    return server


class ServerUserTargetTest(unittest.TestCase):
    def setUp(self):
        self.dir = cnp_testing.short_temp_dir("cnp-server-user-")
        self.run_dir = os.path.join(self.dir, "run")
        os.mkdir(self.run_dir, 0o755)
        try:
            os.chown(self.run_dir, SERVER_UID, SERVER_UID)
        except OSError as error:
            shutil.rmtree(self.dir)
            self.skipTest(f"cannot give a directory to uid {SERVER_UID}: {error} "
                          "(tags: no-sandbox)")
        self.target = "unix:" + os.path.join(self.run_dir, "cnp.sock")
        self.service = map_service(self.target)

    def tearDown(self):
        self.service.stop(None)
        shutil.rmtree(self.dir, ignore_errors=True)

    def session(self, args, env):
        adapter = subprocess.Popen([ADAPTER, "--session=stream", *args], env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        lines = [["reset", {"timeout": 5000}], ["add_fun", "m.town"], ["map_doc", {"_id": "d1"}]]
        out, err = adapter.communicate(
            "".join(json.dumps(line) + "\n" for line in lines).encode(), timeout=30)
        replies = [json.loads(line) for line in out.decode().splitlines()]
        return adapter.returncode, replies, err.decode()

    def test_cnp_target_with_server_user_works_as_target_does(self):
        expected = [True, True, [[["m.town", "d1"]]]]
        env = {k: v for k, v in os.environ.items() if k != "CNP_TARGET"}
        code, replies, err = self.session(
            [f"--target={self.target}", f"--server-user={SERVER_UID}"], env)
        self.assertEqual((code, replies), (0, expected), err)
        env["CNP_TARGET"] = self.target
        code, replies, err = self.session([f"--server-user={SERVER_UID}"], env)
        self.assertEqual((code, replies), (0, expected), err)

    def test_settings_for_a_server_it_does_not_start_are_said_to_be_ignored(self):
        """The adapter starts no server for --target (nor for a CNP_TARGET of another user's
        directory), so --allow-module and the other settings of one it would start are not
        applied; it said nothing, and --allow-module read as a restriction in force."""
        env = {k: v for k, v in os.environ.items() if k != "CNP_TARGET"}
        code, replies, err = self.session(
            [f"--target={self.target}", f"--server-user={SERVER_UID}", "--allow-module=other",
             "--workers=3"], env)
        self.assertEqual((code, replies[1]), (0, True), err)
        self.assertIn("cnp-adapter: WARNING: --allow-module, --workers configure the cnp-server "
                      f"this adapter starts, and it starts none for --target={self.target}: "
                      "they are ignored", err)
        env["CNP_TARGET"] = self.target
        code, replies, err = self.session(
            [f"--server-user={SERVER_UID}", "--call-timeout=30s"], env)
        self.assertEqual((code, replies[1]), (0, True), err)
        self.assertIn("--call-timeout configures the cnp-server this adapter starts, and it "
                      f"starts none for CNP_TARGET={self.target} (its socket directory is "
                      "another user's)", err)
        # A TCP CNP_TARGET: no socket directory to speak of.
        tcp_env = dict(env, CNP_TARGET="127.0.0.1:9")
        adapter = subprocess.run([ADAPTER, "--session=stream", "--workers=2"], env=tcp_env,
                                 input=b"", capture_output=True, timeout=30)
        self.assertIn("--workers configures the cnp-server this adapter starts, and it starts "
                      "none for CNP_TARGET=127.0.0.1:9: it is ignored",
                      adapter.stderr.decode())
        # Without such settings, no warning.
        code, replies, err = self.session([f"--server-user={SERVER_UID}"], env)
        self.assertNotIn("WARNING", err)
        # Ignored, so not checked: an operator who moved to a --target and left the old
        # settings behind got exit 2 on every start, on a host without that directory.
        code, replies, err = self.session(
            [f"--target={self.target}", f"--server-user={SERVER_UID}",
             "--python-path=/nonexistent/views", "--workers=-1", "--allow-module=not a name"],
            env)
        self.assertEqual((code, replies[1]), (0, True), err)
        self.assertIn("--python-path, --allow-module, --workers configure the cnp-server this "
                      "adapter starts, and it starts none", err)

    def test_cnp_target_of_another_user_is_still_refused_without_server_user(self):
        env = dict(os.environ, CNP_TARGET=self.target)
        code, replies, err = self.session([], env)
        self.assertEqual(code, 0, err)
        self.assertEqual(replies[1][:2], ["error", "unavailable"], replies)
        self.assertIn("--server-user", replies[1][2])


if __name__ == "__main__":
    ADAPTER = os.path.abspath(sys.argv.pop(1))
    unittest.main()
