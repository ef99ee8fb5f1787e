"""Drives the real binaries for the adapter tests: a cnp-server on a unix socket in a temporary
directory, and cnp-adapter processes spoken to exactly as CouchDB speaks to a query server (one
line, then the reply lines, in lockstep)."""

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import cnp_testing

REPO_FUNCTIONS = "tests/functions"


def parse_binaries(argv):
    """--adapter, --server, --worker and --python-package paths from the sh_test args."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--functions", required=True, help="fixture_fns.py")
    parser.add_argument("--testdata", default="")
    parser.add_argument("--cli", default="", help="the cnp command line, for tests that use it")
    args, rest = parser.parse_known_args(argv)
    for name in ("adapter", "server", "worker", "functions"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    if args.testdata:
        args.testdata = os.path.abspath(args.testdata)
    if args.cli:
        args.cli = os.path.abspath(args.cli)
    return args, rest


# A temporary directory for unix sockets (a context manager), under /tmp.
socket_dir = cnp_testing.short_temp_directory


class Server:
    """A cnp-server of our own on a unix socket, serving tests/functions."""

    def __init__(self, binaries, socket_path, workers=2, extra=()):
        self.socket_path = socket_path
        self.log_path = socket_path + ".log"
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        self.argv = server_argv(binaries, socket_path, workers) + list(extra)
        self.log = open(self.log_path, "ab")
        self.process, ready = cnp_testing.start_server(
            self.argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True)
        if not ready:
            self.process.wait(timeout=10)
            raise RuntimeError(
                f"cnp-server exited with {self.process.returncode} before it was ready")

    @property
    def target(self):
        return "unix:" + self.socket_path

    def kill(self):
        """SIGKILL to the server and everything in its session (its workers)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def raised_at(binaries, line_text, function):
    """Where fixture_fns.py raised, " (fixture_fns.py:306 in f)", as the worker appends it to an
    exception's message; the line is the one holding `line_text`, found now."""
    with open(binaries.functions, encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if line_text in line:
                return f" (fixture_fns.py:{number} in {function})"
    raise AssertionError(f"fixture_fns.py has no line holding {line_text!r}")


def server_argv(binaries, socket_path, workers):
    return [binaries.server, f"--listen=unix:{socket_path}",
            f"--python-path={os.path.dirname(binaries.functions)}",
            "--allow-module=fixture_fns", f"--workers={workers}",
            f"--worker-binary={binaries.worker}"]


class Adapter:
    """One cnp-adapter process, spoken to as CouchDB does."""

    def __init__(self, binaries, args, env=None, cwd=None):
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen([binaries.adapter] + list(args), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, env=env,
                                        cwd=cwd)
        self._buffer = b""
        self._diagnostics = ""

    def send_line(self, line):
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def read_line(self, timeout=30.0):
        """The next line the adapter wrote, or None at end of output."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("cnp-adapter did not answer in time")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def call(self, command, timeout=30.0):
        """Sends a command (a JSON value or a line) and returns every reply line: the log lines,
        then the reply. [] when the adapter exited without replying."""
        self.send_line(command if isinstance(command, str) else json.dumps(command))
        lines = []
        while True:
            line = self.read_line(timeout)
            if line is None:
                return lines
            lines.append(line)
            value = json.loads(line)
            if not (isinstance(value, list) and len(value) == 2 and value[0] == "log"
                    and isinstance(value[1], str)):
                return lines

    def reply(self, command, timeout=30.0):
        """The reply (the last line) as a JSON value; log lines are dropped."""
        lines = self.call(command, timeout)
        if not lines:
            raise AssertionError(f"no reply to {command!r}: {self.diagnostics()}")
        return json.loads(lines[-1])

    def close(self, timeout=30.0):
        """Closes stdin as CouchDB does and returns the exit status."""
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        return self.exited(timeout)

    def exited(self, timeout=30.0):
        """Waits for the adapter to exit and returns its status."""
        status = self.process.wait(timeout=timeout)
        self.diagnostics()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            if stream and not stream.closed:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        return status

    def diagnostics(self):
        """What the adapter wrote to stderr so far."""
        if not self.stderr.closed:
            self.stderr.seek(0)
            self._diagnostics = self.stderr.read().decode(errors="replace")
        return self._diagnostics


# The two ways an adapter serves CouchDB: "direct" hands CouchDB's pipes to a session worker of
# the server (no process in between), "stream" forwards each line over the gRPC Session stream.
SESSION_PATHS = ("direct", "stream")


def through_each_path(test_class, namespace):
    """Replaces `test_class` in `namespace` (a test module's globals()) by one subclass per
    session path, named e.g. QueryServerSpecTest_direct, so that every test runs through both."""
    for path in SESSION_PATHS:
        name = f"{test_class.__name__}_{path}"
        namespace[name] = type(name, (test_class,), {"session": path})
    del namespace[test_class.__name__]


def daemon_pids(socket_path):
    """The cnp-server processes listening on `socket_path` (started by the adapters, detached
    from the test, so found by their command line)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if f"--listen=unix:{socket_path}".encode() in argv:
            pids.append(int(entry))
    # A server forking a worker shows a child with its command line until the exec: not a server.
    return [pid for pid in pids if parent_pid(pid) not in pids]


def parent_pid(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


class ServerTestCase(unittest.TestCase):
    """A test case with one cnp-server for the whole class, on a socket in a fresh directory."""

    binaries = None
    socket_prefix = "cnp-test-"
    session = "auto"     # the adapter's --session; through_each_path sets it per subclass
    server_extra = ()    # more cnp-server flags

    @classmethod
    def setUpClass(cls):
        cls.tmp = socket_dir(cls.socket_prefix)
        cls.server = Server(cls.binaries, os.path.join(cls.tmp.name, "cnp.sock"),
                            extra=cls.server_extra)

    def adapter(self, *extra, server=None):
        """A cnp-adapter for this class's server (or `server`), on this class's session path."""
        server = server or self.server
        return Adapter(self.binaries,
                       [f"--target={server.target}", f"--session={self.session}", *extra])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()


def module_directory(module, source):
    """A fresh directory holding `module`.py with `source`, for --python-path."""
    directory = tempfile.TemporaryDirectory(prefix=f"{module}-")
    with open(os.path.join(directory.name, module + ".py"), "w") as out:
        out.write(source)
    return directory


class ModuleServerTestCase(ServerTestCase):
    """A ServerTestCase whose server runs one module written for the test: `module` (its name)
    from `module_source`, allowed, with `module_server_extra` as more server flags."""

    module = None
    module_source = ""
    module_server_extra = ()

    @classmethod
    def setUpClass(cls):
        cls.functions = module_directory(cls.module, cls.module_source)
        cls.server_extra = (f"--python-path={cls.functions.name}", f"--allow-module={cls.module}",
                            *cls.module_server_extra)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.functions.cleanup()
