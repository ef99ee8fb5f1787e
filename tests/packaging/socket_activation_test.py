"""Socket activation as systemd does it (sd_listen_fds(3)): the test binds the sockets, then
starts cnp-server with them as descriptors 3.. and LISTEN_FDS/LISTEN_PID set. The server serves
on them - a client that connected before it started included - leaves the socket files alone,
and refuses to start when passed a socket that no --listen names."""
import array
import os
import signal
import socket
import sys
import unittest
import urllib.request

import cnp_testing
import harness
import session_wire

SERVER, WORKER, CNP, FUNCTIONS = sys.argv[1:5]
del sys.argv[1:5]


def unix_listener(test, path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    test.addCleanup(s.close)
    s.bind(path)
    s.listen(16)
    return s


class ActivatedServer:
    """cnp-server started the way systemd starts a socket-activated service."""

    def __init__(self, sockets, args, directory, env=None):
        self.log_path = os.path.join(directory, "server.log")
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        read, write = os.pipe()
        argv = [SERVER, "--worker-binary=" + WORKER,
                "--python-path=" + os.path.dirname(os.path.abspath(FUNCTIONS)), "--workers=1",
                "--ready-fd=%d" % (3 + len(sockets))] + args
        self.pid = os.fork()
        if self.pid == 0:
            try:
                # Out of the way first, so that moving them to 3.. overwrites none of them.
                high = [os.dup2(fd, 100 + i) for i, fd in
                        enumerate([s.fileno() for s in sockets] + [write, log])]
                os.dup2(high[-1], 1)
                os.dup2(high[-1], 2)
                for i, fd in enumerate(high[:-1]):
                    os.dup2(fd, 3 + i)  # inheritable
                for fd in high:
                    os.close(fd)
                os.execve(SERVER, argv, dict(os.environ, **(env or {}),
                                             LISTEN_FDS=str(len(sockets)),
                                             LISTEN_PID=str(os.getpid())))
            finally:
                os._exit(127)
        os.close(write)
        os.close(log)
        self.ready = cnp_testing.wait_for_ready(read)

    def log(self):
        return harness.read_log(self.log_path)

    def stop(self):
        """SIGTERM, then the exit status."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


class SocketActivationTest(unittest.TestCase):
    def setUp(self):
        self.dir = harness.short_temp_dir()
        self.path = os.path.join(self.dir, "cnp.sock")
        self.target = "unix:" + self.path

    def test_serves_on_passed_sockets_and_leaves_them(self):
        grpc_socket = unix_listener(self, self.path)
        direct_socket = unix_listener(self, self.path + ".direct")
        tcp_socket = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(tcp_socket.close)
        port = tcp_socket.getsockname()[1]
        inodes = {p: os.stat(p).st_ino for p in (self.path, self.path + ".direct")}
        # CouchDB may start first: its call connects to systemd's socket and waits.
        early = harness.cnp_map(CNP, self.target, "pkgfns.by_n", [{"_id": "early", "n": 1}])

        server = ActivatedServer([grpc_socket, direct_socket, tcp_socket],
                                 ["--listen=" + self.target, "--listen=127.0.0.1:%d" % port],
                                 self.dir)
        try:
            self.assertTrue(server.ready, server.log())
            self.assertEqual(harness.rows(early), [[[[1, "early"]]]])
            over_tcp = harness.cnp_map(CNP, "127.0.0.1:%d" % port, "pkgfns.by_n",
                                       [{"_id": "tcp", "n": 2}])
            self.assertEqual(harness.rows(over_tcp), [[[[2, "tcp"]]]])
            self.assertIn("direct sessions on unix:%s.direct (passed by systemd" % self.path,
                          server.log())
            # The gRPC sockets say so the same way (before, only the direct one did).
            self.assertIn("listening on %s (passed by systemd)" % self.target, server.log())
            self.assertIn("listening on 127.0.0.1:%d (port %d) (passed by systemd)" % (port, port),
                          server.log())
        finally:
            self.assertEqual(server.stop(), 0, server.log())
        # systemd's socket files: neither replaced while serving nor removed on stopping.
        for path, inode in inodes.items():
            self.assertEqual(os.stat(path).st_ino, inode, path)

    def test_two_passed_sockets_on_one_port_go_to_their_own_addresses(self):
        """ListenStream=127.0.0.1:P and [::1]:P with both in `listen`: the first address took
        every passed socket on port P, and the second then failed to bind it ("Address already
        in use"). A numeric host takes the socket of its address; a name, every one of its
        port."""
        v4 = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(v4.close)
        port = v4.getsockname()[1]
        try:
            v6 = socket.create_server(("::1", port), family=socket.AF_INET6)
        except OSError as e:  # no IPv6 loopback here: two IPv4 loopback addresses show it too
            print("::1:%d: %s; using 127.0.0.2" % (port, e))
            v6 = socket.create_server(("127.0.0.2", port))
        self.addCleanup(v6.close)
        second = "[%s]:%d" % (v6.getsockname()[0], port) if v6.family == socket.AF_INET6 \
            else "127.0.0.2:%d" % port
        server = ActivatedServer([v4, v6], ["--listen=127.0.0.1:%d" % port,
                                            "--listen=" + second, "--max-sessions=0"], self.dir)
        try:
            self.assertTrue(server.ready, server.log())
            for target in ("127.0.0.1:%d" % port, second):
                mapped = harness.cnp_map(CNP, target, "pkgfns.by_n", [{"_id": "a", "n": 1}])
                self.assertEqual(harness.rows(mapped), [[[[1, "a"]]]], target)
        finally:
            self.assertEqual(server.stop(), 0, server.log())

        # A name still takes every socket passed for its port.
        v4 = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(v4.close)
        port = v4.getsockname()[1]
        v6 = socket.create_server(("127.0.0.2", port))
        self.addCleanup(v6.close)
        server = ActivatedServer([v4, v6], ["--listen=localhost:%d" % port, "--max-sessions=0"],
                                 self.dir)
        try:
            self.assertTrue(server.ready, server.log())
            mapped = harness.cnp_map(CNP, "127.0.0.2:%d" % port, "pkgfns.by_n",
                                     [{"_id": "b", "n": 2}])
            self.assertEqual(harness.rows(mapped), [[[[2, "b"]]]])
        finally:
            self.assertEqual(server.stop(), 0, server.log())

    def test_a_passed_metrics_socket_is_served(self):
        """ListenStream= for --metrics-listen's address too: the server exited 2 saying no
        --listen address named it, though the metrics listener takes a passed socket."""
        grpc_socket = unix_listener(self, self.path)
        metrics_socket = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(metrics_socket.close)
        metrics = "127.0.0.1:%d" % metrics_socket.getsockname()[1]
        server = ActivatedServer([grpc_socket, metrics_socket],
                                 ["--listen=" + self.target, "--metrics-listen=" + metrics,
                                  "--max-sessions=0"], self.dir)
        try:
            self.assertTrue(server.ready, server.log())
            with urllib.request.urlopen("http://%s/metrics" % metrics, timeout=30) as answer:
                self.assertIn(b"cnp_worker_starts_total", answer.read())
        finally:
            self.assertEqual(server.stop(), 0, server.log())

    def test_tells_systemd_ready_and_stopping_and_no_worker_sees_where(self):
        """The unit is Type=notify: systemd counts the service started at READY=1, so that a
        `systemctl reload` (SIGHUP) waits for it; a SIGHUP before cnp-server set up its
        handler killed it (exit 129), which Restart=on-failure takes for a clean stop. The
        workers do not inherit NOTIFY_SOCKET (systemd would ignore them; it is none of theirs).
        While the workers start, the start's timeout is extended to --worker-start-timeout and
        a minute: a slow preload allowed more than systemd's 90 s was cut short."""
        grpc_socket = unix_listener(self, self.path)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(notify.close)
        notify_path = os.path.join(self.dir, "notify")
        notify.bind(notify_path)
        server = ActivatedServer([grpc_socket], ["--listen=" + self.target, "--max-sessions=0",
                                                 "--worker-start-timeout=100s"],
                                 self.dir, env={"NOTIFY_SOCKET": notify_path})
        try:
            self.assertTrue(server.ready, server.log())
            # Sent before "ready" on --ready-fd, so already queued.
            self.assertEqual(notify.recv(4096, socket.MSG_DONTWAIT),
                             b"EXTEND_TIMEOUT_USEC=160000000")
            self.assertEqual(notify.recv(4096, socket.MSG_DONTWAIT), b"READY=1")
            mapped = harness.cnp_map(CNP, self.target, "pkgfns.notify_socket",
                                     [{"_id": "a"}])
            self.assertEqual(harness.rows(mapped), [[[["unset", "a"]]]])
        finally:
            self.assertEqual(server.stop(), 0, server.log())
        self.assertEqual(notify.recv(4096, socket.MSG_DONTWAIT), b"STOPPING=1")

    def test_refuses_a_passed_socket_no_address_names(self):
        grpc_socket = unix_listener(self, self.path)
        stray_path = os.path.join(self.dir, "stray.sock")
        stray = unix_listener(self, stray_path)
        server = ActivatedServer([grpc_socket, stray],
                                 ["--listen=" + self.target, "--max-sessions=0"], self.dir)
        self.assertFalse(server.ready)
        # A setting to fix: exit 2, which the unit does not restart (RestartPreventExitStatus=2),
        # found before any worker started (before: exit 1 after the workers had started, and
        # systemd restarted it every second).
        self.assertEqual(server.stop(), 2, server.log())
        self.assertIn("unix:" + stray_path, server.log())
        self.assertIn("no --listen address names", server.log())
        self.assertNotIn(" workers (", server.log())

    def test_direct_sessions_off_answers_on_the_passed_direct_socket(self):
        """The shipped socket unit passes P and P.direct; with max-sessions: 0 the server once
        refused to start ("passed sockets that no --listen address names"), and systemd's
        Restart=on-failure looped. Closing the socket would not do either: systemd keeps its own
        copy listening, so an adapter would connect and wait for an answer."""
        grpc_socket = unix_listener(self, self.path)
        direct_socket = unix_listener(self, self.path + ".direct")
        server = ActivatedServer([grpc_socket, direct_socket],
                                 ["--listen=" + self.target, "--max-sessions=0"], self.dir)
        try:
            self.assertTrue(server.ready, server.log())
            self.assertIn("direct sessions are off (--max-sessions=0): unix:%s.direct" % self.path,
                          server.log())
            # An adapter's hello (adapter_pid, CouchDB's two pipes) is answered AT_CAPACITY, so
            # the adapter uses the Session stream at once.
            adapter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(adapter.close)
            adapter.settimeout(30)  # a bound on a broken server, not a wait for it
            adapter.connect(self.path + ".direct")
            hello = b"\x10" + session_wire.varint(os.getpid())
            read_end, write_end = os.pipe()
            self.addCleanup(os.close, read_end)
            self.addCleanup(os.close, write_end)
            adapter.sendmsg([len(hello).to_bytes(4, "little") + hello],
                            [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                              array.array("i", [read_end, write_end]))])
            header = adapter.recv(4, socket.MSG_WAITALL)
            answer = adapter.recv(int.from_bytes(header, "little"), socket.MSG_WAITALL)
            self.assertEqual(answer[:2], b"\x08\x02", answer)  # outcome: AT_CAPACITY
            self.assertIn(b"direct sessions are off on this server (--max-sessions=0)", answer)
            # The gRPC socket serves as ever.
            mapped = harness.cnp_map(CNP, self.target, "pkgfns.by_n", [{"_id": "a", "n": 1}])
            self.assertEqual(harness.rows(mapped), [[[[1, "a"]]]])
        finally:
            self.assertEqual(server.stop(), 0, server.log())

    def test_without_direct_sessions_the_direct_sockets_directory_is_not_checked(self):
        """With max-sessions: 0 and only P passed, nothing binds P.direct, so its directory (the
        unit's, which a server not run as root does not own) is none of the server's business;
        a review found the start-up check of socket directories refusing it (exit 2). Played
        by a passed socket in a directory of another user's, which the server may not bind in."""
        theirs = os.path.join(self.dir, "theirs")
        os.mkdir(theirs, 0o755)
        try:
            os.chown(theirs, 65534, 65534)
        except PermissionError:
            self.skipTest("needs root to give a directory to another user")
        path = os.path.join(theirs, "cnp.sock")
        grpc_socket = unix_listener(self, path)
        server = ActivatedServer([grpc_socket], ["--listen=unix:" + path, "--max-sessions=0"],
                                 self.dir)
        try:
            self.assertTrue(server.ready, server.log())
            self.assertNotIn("socket directory", server.log())
        finally:
            self.assertEqual(server.stop(), 0, server.log())


if __name__ == "__main__":
    unittest.main()
