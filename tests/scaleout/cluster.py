"""cnp-server replicas and nginx on loopback, and the scale-out client, for the scale-out tests
and the load benchmark.

Every port is a free loopback port; each process is waited for by what it says when it is ready
(the server's --ready-fd line, nginx's "start worker process" notice), never by a sleep. Each
keeps its files in a directory of its own under /tmp, removed by its stop()."""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import cnp_testing

# The addresses packaging/nginx/cnp.conf is written with: nginx's, then the two replicas'.
EXAMPLE_LISTEN = "127.0.0.1:7070"
EXAMPLE_REPLICAS = ("127.0.0.1:7071", "127.0.0.1:7072")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_until(stream_fd, needle, deadline, what, collected):
    """Reads `stream_fd` into `collected` (a bytearray) until it holds `needle`."""
    while needle not in collected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError("%s did not start in time:\n%s" % (what, collected.decode()))
        ready, _, _ = select.select([stream_fd], [], [], remaining)
        if ready:
            chunk = os.read(stream_fd, 65536)
            if not chunk:
                raise RuntimeError("%s exited before it was ready:\n%s" % (what, collected.decode()))
            collected += chunk


class Replica:
    """One cnp-server on 127.0.0.1:<port>, which knows its name through the module replica_name
    on a --python-path of its own (scalefns reports it)."""

    def __init__(self, server, worker, functions_dir, name, workers=2, extra=()):
        self.name = name
        self.port = free_port()
        self.dir = cnp_testing.short_temp_dir("cnp-%s-" % name)
        os.makedirs(os.path.join(self.dir, "py"))
        with open(os.path.join(self.dir, "py", "replica_name.py"), "w") as f:
            f.write("NAME = %r\n" % name)
        self.log_path = os.path.join(self.dir, "server.log")
        with open(self.log_path, "w") as log:
            try:
                self.process, ready = cnp_testing.start_server(
                    [server, "--listen=127.0.0.1:%d" % self.port,
                     "--listen=unix:" + os.path.join(self.dir, "cnp.sock"),
                     "--worker-binary=" + worker, "--python-path=" + functions_dir,
                     "--python-path=" + os.path.join(self.dir, "py"),
                     "--workers=%d" % workers] + list(extra),
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except BaseException:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise
        if not ready:
            why = self.log()
            self.stop()
            raise RuntimeError("replica %s did not start: %s" % (name, why))

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def pids(self):
        """The server and its workers (every process of its session)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[3]) == self.process.pid:  # the session id
                    pids.append(int(entry))
        return pids

    def kill(self):
        """SIGKILL to the server and its workers at once, as when its machine dies."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self):
        """SIGTERM (a drain), SIGKILL if it is not gone in 30 s; then its directory is removed."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Nginx:
    """nginx as an unprivileged-style foreground process with its own prefix directory, serving
    the example configuration (packaging/nginx/cnp.conf) with our ports, in an nginx.conf that
    adds only what a test's prefix needs (temp paths, no pid file of Debian's). The replicas
    replace the example's two upstream addresses in order (name one replica twice for nginx in
    front of a single replica)."""

    def __init__(self, example_conf, replicas, worker_processes=1, nginx="/usr/sbin/nginx"):
        self.port = free_port()
        self.dir = cnp_testing.short_temp_dir("cnp-nginx-")
        with open(example_conf) as f:
            conf = f.read()
        for old, new in zip((EXAMPLE_LISTEN,) + EXAMPLE_REPLICAS,
                            [self.address] + [r.address for r in replicas]):
            if conf.count(old) != 1:
                raise RuntimeError("%s should name %s exactly once" % (example_conf, old))
            conf = conf.replace(old, new)
        with open(os.path.join(self.dir, "cnp.conf"), "w") as f:
            f.write(conf)
        temp = "".join("%s_temp_path %s/%s;\n    " % (kind, self.dir, kind)
                       for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            # As root, nginx's workers would switch to nobody, whom a test sandbox's user
            # namespace may not know: they stay the test's user.
            f.write(("user root;\n" if os.geteuid() == 0 else "") +
                    "worker_processes %s;\n"
                    "events { worker_connections 8192; }\n"
                    "http {\n    %sinclude %s/cnp.conf;\n}\n"
                    % (worker_processes, temp, self.dir))
        self.process = subprocess.Popen(
            [nginx, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"), "-e", "stderr",
             "-g", "daemon off; pid %s/nginx.pid; error_log stderr notice;" % self.dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        self.stderr = bytearray()
        # The master binds the listening socket before it starts any worker.
        try:
            _read_until(self.process.stderr.fileno(), b"start worker process",
                        time.monotonic() + 30, "nginx", self.stderr)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def log(self):
        """What nginx wrote to stderr so far (without blocking)."""
        fd = self.process.stderr.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.stderr += chunk
        return self.stderr.decode(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Adapter:
    """A cnp-adapter on the stream path, spoken to in lockstep as CouchDB does."""

    def __init__(self, adapter, target, timeout_ms=20000):
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen([adapter, "--target=" + target, "--session=stream"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr)
        self.buffer = b""
        assert self.reply(["reset", {"reduce_limit": True, "timeout": timeout_ms}]) is True
        assert self.reply(["add_fun", "scalefns.triple"]) is True, self.diagnostics()

    def reply(self, command, timeout=60.0):
        """Sends one command, returns the reply (log lines skipped) or raises."""
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while True:
            while b"\n" not in self.buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("cnp-adapter did not answer %r: %s"
                                       % (command, self.diagnostics()))
                if select.select([fd], [], [], remaining)[0]:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise EOFError("cnp-adapter exited: %s" % self.diagnostics())
                    self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\n", 1)
            value = json.loads(line)
            if not (isinstance(value, list) and value[:1] == ["log"]):
                return value

    def diagnostics(self):
        if self.stderr.closed:
            return ""
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def close(self):
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self.process.stdout.close()
            self.stderr.close()


class ClientRun:
    """tests/scaleout:scaleout_client running; its per-call lines collected as they come."""

    def __init__(self, argv):
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(json.loads(line))
                self.changed.notify_all()
        with self.changed:
            self.lines.append(None)  # end of output
            self.changed.notify_all()

    def wait_for_calls(self, count, timeout):
        """Waits until `count` calls have completed (or the client ended); the count so far."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.lines) >= count or None in self.lines,
                                  timeout)
            return len(self.lines)

    def wait_for_answers(self, calls, timeout):
        """The outcome lines of `calls` (ids), once all have come (or the client ended)."""
        def answered():
            got = {line["call"]: line for line in self.lines if line and "call" in line}
            return {c: got[c] for c in calls if c in got} if all(c in got for c in calls) \
                else (None in self.lines and {c: got.get(c) for c in calls})
        with self.changed:
            return self.changed.wait_for(answered, timeout)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join(30)
        self.process.stdout.close()
        self.process.stderr.close()

    def finish(self, timeout=180):
        self.process.wait(timeout=timeout)
        self.reader.join(timeout)
        with self.process.stdout, self.process.stderr:
            return self.process.returncode, self.process.stderr.read(), self.lines[:-1]
