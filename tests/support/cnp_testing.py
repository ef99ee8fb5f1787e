"""What the Python tests share (the C++ side is tests/support's library): a short directory for
unix sockets, a cnp-server started and waited for through its --ready-fd pipe, and a process
waited for until a SIGSTOP has stopped it.

run_python_test.sh puts this directory on PYTHONPATH; a test that imports it lists
//tests/support:cnp_testing.py in its data."""

import os
import select
import subprocess
import tempfile
import time


def short_temp_dir(prefix="cnp-test-"):
    """A fresh directory under /tmp: a unix socket path must fit in 108 bytes, which a path
    under the test's own temporary directory may not. The caller removes it."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


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
