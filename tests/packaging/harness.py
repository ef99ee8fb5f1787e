"""What the packaging tests share: the programs under test, a clean environment, a server
process whose log is kept, and a call parked in a worker until the test lets it go."""
import json
import os
import subprocess

import cnp_testing

# For installed programs: Bazel's runfiles variables must not reach them, so that they find
# their files by the installed layout alone. (Programs run from the build need them.)
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("RUNFILES", "TEST_", "BUILD_", "JAVA_RUNFILES", "PYTHON"))}

HEALTH_SERVING = b"\x08\x01"      # grpc.health.v1.HealthCheckResponse{status: SERVING}
HEALTH_NOT_SERVING = b"\x08\x02"  # ... NOT_SERVING


def short_temp_dir():
    """A directory under /tmp, for unix sockets."""
    return cnp_testing.short_temp_dir("cnp-pkg-")


read_log = cnp_testing.read_log


def cnp_map(cnp, target, function, docs, **kwargs):
    """Runs `cnp map` on `docs` (dicts); returns the Popen, input already sent."""
    process = subprocess.Popen([cnp, "map", "--target=" + target, function, "-"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, **kwargs)
    process.stdin.write("".join(json.dumps(d) + "\n" for d in docs))
    process.stdin.close()
    return process


def rows(process, timeout=60):
    """The rows of each document `cnp map` printed, once it has exited 0."""
    with process.stdout, process.stderr:
        out, err = process.stdout.read(), process.stderr.read()  # until cnp map exits
    process.wait(timeout=timeout)
    assert process.returncode == 0, "cnp map exited %d: %s" % (process.returncode, err)
    return [json.loads(line)["rows"] for line in out.splitlines()]


class ParkedCall:
    """A `cnp map` of pkgfns.waits, running in a worker until release()."""

    def __init__(self, cnp, target, doc_id):
        self.dir = short_temp_dir()
        self.ready = os.path.join(self.dir, "ready")
        self.release_path = os.path.join(self.dir, "release")
        os.mkfifo(self.ready)
        os.mkfifo(self.release_path)
        self.process = cnp_map(cnp, target, "pkgfns.waits",
                               [{"_id": doc_id, "ready": self.ready, "release": self.release_path}])
        # Returns once the function has opened the write end: the call is in the worker.
        os.close(os.open(self.ready, os.O_RDONLY))

    def running(self):
        return self.process.poll() is None

    def release(self):
        os.close(os.open(self.release_path, os.O_WRONLY))
        return rows(self.process)
