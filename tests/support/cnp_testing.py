"""What the Python tests share (the C++ side is tests/support's library): a short directory for
unix sockets, a cnp-server started and waited for through its --ready-fd pipe (and the TCP
port it logged it listens on), a process's memory from /proc, a process
waited for until a SIGSTOP has stopped it, a function's start signalled on a FIFO, and a log
(or any file) read whole or waited on as it grows, woken by inotify rather than by polling.

run_python_test.sh puts this directory on PYTHONPATH; a test that imports it lists
//tests/support:cnp_testing.py in its data."""

import atexit
import ctypes
import os
import select
import shutil
import subprocess
import tempfile
import time


def short_temp_dir(prefix="cnp-test-"):
    """A fresh directory under /tmp: a unix socket path must fit in 108 bytes, which a path
    under the test's own temporary directory may not. The caller may remove it; whatever is
    left is removed when the test's process exits (tests that kept theirs left a hundred
    directories in /tmp per run)."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    atexit.register(_remove_in, os.getpid(), path)
    return path


def _remove_in(owner, path):
    if os.getpid() == owner:  # not in a forked child that exits normally
        shutil.rmtree(path, ignore_errors=True)


def short_temp_directory(prefix="cnp-test-"):
    """short_temp_dir as a context manager (tempfile.TemporaryDirectory): removed on exit."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp")


def wait_for_ready(ready_fd, timeout=60.0):
    """Waits on the read end of a server's --ready-fd pipe, then closes it: True once the server
    wrote "ready" (it listens), False if the pipe closed first (it exited). TimeoutError if
    neither happened within `timeout` seconds."""
    try:
        readable, _, _ = select.select([ready_fd], [], [], timeout)
        if not readable:
            raise TimeoutError(f"cnp-server was not ready within {timeout} s")
        return os.read(ready_fd, 64) == b"ready\n"
    finally:
        os.close(ready_fd)


def start_server(argv, timeout=60.0, **popen_args):
    """Starts cnp-server `argv` with --ready-fd added and waits for it: (the Popen, whether it
    became ready). popen_args go to subprocess.Popen (stdout, stderr, env, cwd...)."""
    ready_read, ready_write = os.pipe()
    try:
        process = subprocess.Popen(list(argv) + [f"--ready-fd={ready_write}"],
                                   pass_fds=(ready_write,), **popen_args)
    except BaseException:
        os.close(ready_read)
        raise
    finally:
        os.close(ready_write)
    try:
        return process, wait_for_ready(ready_read, timeout)
    except TimeoutError:
        process.kill()  # a server stuck in its start must not outlive the test
        process.wait()
        raise


def listening_port(log_path):
    """The port a cnp-server started with --listen=127.0.0.1:0 logged that it listens on."""
    with open(log_path) as log:
        for line in log:
            if "listening on 127.0.0.1:" in line and "(port " in line:
                return int(line.split("(port ")[1].split(")")[0])
    raise RuntimeError("the server named no port")


class LoggedServer:
    """cnp-server `argv` (with a --listen=127.0.0.1:0 among them) started and ready, its output
    in `directory`/server.log: its port, its log, its memory, and a stop that kills it."""

    def __init__(self, argv, directory):
        self.log_path = os.path.join(directory, "server.log")
        with open(self.log_path, "w") as log:
            self.process, ready = start_server(argv, stdout=log, stderr=subprocess.STDOUT)
        if not ready:
            raise RuntimeError(self.log())
        self.port = listening_port(self.log_path)

    def log(self):
        with open(self.log_path) as log:
            return log.read()

    def peak(self):
        return process_memory(self.process.pid, "VmHWM")

    def rss(self):
        return process_memory(self.process.pid, "VmRSS")

    def stop(self):
        self.process.kill()
        self.process.wait()


def process_memory(pid, field):
    """A memory field of /proc/PID/status ("VmHWM", "VmRSS"), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10
    raise RuntimeError("no " + field)


def wait_until_stopped(pid, timeout=10.0):
    """Polls /proc until process `pid` is stopped (state T), for at most `timeout` seconds: a
    signal is delivered after kill() returns, so a command sent at once to a process being
    frozen could still be answered by it."""
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop")
        time.sleep(0.001)


def started_fifo():
    """A FIFO in a fresh short_temp_dir, for a function the test runs to open for writing (as
    fixture_fns.slow_town opens doc["started"]): the test's os.open(path, os.O_RDONLY) returns
    once it has, the sign that the command is running."""
    path = os.path.join(short_temp_dir(), "started")
    os.mkfifo(path)
    return path


def wait_for_fifo(path, timeout=30.0):
    """Blocks until a function has opened the FIFO at `path` and written its line (select() on
    the FIFO, no polling): TimeoutError if none did within `timeout` seconds, AssertionError if
    the function closed the FIFO without writing a line."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("the function did not start")
            chunk = os.read(fd, 64)
            if not chunk:
                raise AssertionError("the function closed the FIFO without a word")
            data += chunk
    finally:
        os.close(fd)


def read_log(log):
    """The whole of a log: `log` is its path, or what has one as log_path (a test's server)."""
    with open(getattr(log, "log_path", log), encoding="utf-8", errors="replace") as text:
        return text.read()


_IN_MODIFY, _IN_CLOSE_WRITE, _IN_CREATE, _IN_MOVED_TO = 0x2, 0x8, 0x100, 0x80
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_libc = ctypes.CDLL(None, use_errno=True)


def _when(directory, check, timeout, failure):
    """The first true value of check(), called at once and again each time inotify says a file
    in `directory` was written, created or moved there; AssertionError(failure()) after
    `timeout` seconds."""
    inotify = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if inotify < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    try:
        # Watched before the first check: a write after it wakes the select below.
        if _libc.inotify_add_watch(inotify, os.fsencode(directory),
                                   _IN_MODIFY | _IN_CLOSE_WRITE | _IN_CREATE | _IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch " + directory)
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(failure())
            if select.select([inotify], [], [], left)[0]:
                try:
                    while os.read(inotify, 65536):
                        pass
                except BlockingIOError:
                    pass
    finally:
        os.close(inotify)


def _text_of(path):
    try:
        return read_log(path)
    except FileNotFoundError:
        return ""


def wait_for_text(path, holds, timeout=30.0):
    """The text of the file at `path` once `holds(text)` is true, read again each time the file
    is written (inotify on its directory: it may not exist yet, and then its text is "").
    AssertionError, with the text, after `timeout` seconds."""
    seen = []

    def check():
        seen[:] = [_text_of(path)]
        return holds(seen[0])

    _when(os.path.dirname(os.path.abspath(path)), check, timeout,
          lambda: f"{path} did not come to hold what was waited for within {timeout} s; "
                  f"it holds:\n{_text_of(path)}")
    return seen[0]


def wait_for_log(log, wanted, timeout=30.0):
    """The first line of a log (`log`: its path, or what has one as log_path) for which
    `wanted` holds - a str: the line contains it; else a function of the line - waiting for
    the log to grow (wait_for_text) for up to `timeout` seconds."""
    matches = (lambda line: wanted in line) if isinstance(wanted, str) else wanted

    def first(text):
        return next((line for line in text.splitlines() if matches(line)), None)

    return first(wait_for_text(getattr(log, "log_path", log),
                               lambda text: first(text) is not None, timeout))


def wait_for_file(path, timeout=30.0):
    """Returns once a file exists at `path` (created, or moved there), woken by inotify."""
    _when(os.path.dirname(os.path.abspath(path)), lambda: os.path.exists(path), timeout,
          lambda: f"no {path} within {timeout} s")
