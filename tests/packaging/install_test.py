"""The installed layout works on its own: `//:install` into a temporary prefix, then the
installed cnp-server (finding its installed cnp-worker and Python package, no runfiles) serves
the installed `cnp map`; the example config is one cnp-server accepts; the units verify."""
import os
import shutil
import subprocess
import sys
import socket
import tempfile
import unittest
import urllib.request

import cnp_testing

INSTALL = sys.argv.pop(1)
# Nothing of Bazel's may leak into the installed programs: they must find everything by the
# installed layout alone.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("RUNFILES", "TEST_", "BUILD_", "JAVA_RUNFILES", "PYTHON"))}


def functions_dir(root):
    path = os.path.join(root, "functions")
    os.makedirs(path)
    with open(os.path.join(path, "pkgfns.py"), "w") as f:
        f.write("def by_n(doc):\n    yield doc['n'], doc['_id']\n")
    return path


class InstalledServer:
    """The installed cnp-server on a unix socket under /tmp, waited for through --ready-fd."""

    def __init__(self, prefix, args, env=CLEAN_ENV):
        self.dir = cnp_testing.short_temp_dir("cnp-pkg-")
        self.target = "unix:" + os.path.join(self.dir, "s", "cnp.sock")
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        self.process, self.ready = cnp_testing.start_server(
            [os.path.join(prefix, "bin", "cnp-server"), "--listen=" + self.target] + args,
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)

    def output(self):
        with open(self.log.name) as log:
            return log.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
        status = self.process.wait(timeout=60)
        self.log.close()
        output = self.output()
        shutil.rmtree(self.dir, ignore_errors=True)
        return status, output


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        cls.prefix = os.path.join(cls.root, "prefix")
        run = subprocess.run([INSTALL, "--prefix=" + cls.prefix], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        cls.functions = functions_dir(cls.root)

    def path(self, *parts):
        return os.path.join(self.prefix, *parts)

    def test_lays_out_binaries_package_help_units_and_config(self):
        for program in ("cnp-server", "cnp-worker", "cnp-adapter", "cnp"):
            self.assertTrue(os.access(self.path("bin", program), os.X_OK), program)
            # Real files, not links back into the build tree.
            self.assertFalse(os.path.islink(self.path("bin", program)), program)
        self.assertTrue(os.path.isfile(
            self.path("share", "cnp", "python", "couch_named_python", "__init__.py")))
        with open(self.path("share", "doc", "cnp", "cnp-server.txt")) as f:
            self.assertIn("--shutdown-grace", f.read())
        with open(self.path("share", "doc", "cnp", "cnp-adapter.txt")) as f:
            self.assertIn("--target", f.read())
        with open(self.path("share", "doc", "cnp", "cnp.txt")) as f:
            help_text = f.read()
        # The commands' own help, not only the list of them.
        for usage in ("usage: cnp map FUNCTION", "Usage: cnp derive", "--staged-settle-timeout"):
            self.assertIn(usage, help_text)
        with open(self.path("share", "cnp", "systemd", "cnp-server.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=%s --config=" % self.path("bin", "cnp-server"), unit)
        self.assertNotIn("/usr/local/", unit)

    def test_examples_are_installed(self):
        self.assertTrue(os.path.isfile(self.path("share", "cnp", "grafana", "cnp.json")))
        self.assertTrue(os.path.isfile(self.path("share", "cnp", "nginx", "cnp.conf")))

    def test_destdir_stages_every_file_for_the_prefix(self):
        # A package build: everything under DESTDIR (the units and /etc included), naming the
        # prefix the package installs to, and no user created on the build machine.
        destdir = os.path.join(self.root, "stage")
        run = subprocess.run([INSTALL, "--prefix=/opt/cnp", "--systemd"], capture_output=True,
                             text=True, env=dict(os.environ, DESTDIR=destdir))
        self.assertEqual(run.returncode, 0, run.stderr)
        staged = os.path.join(destdir, "opt", "cnp")
        self.assertTrue(os.access(os.path.join(staged, "bin", "cnp-server"), os.X_OK))
        with open(os.path.join(destdir, "etc", "systemd", "system", "cnp-server.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=/opt/cnp/bin/cnp-server --config=", unit)
        self.assertNotIn(destdir, unit)
        self.assertTrue(os.path.isfile(os.path.join(destdir, "etc", "cnp", "cnp-server.yaml")))
        self.assertIn("the package must create the system user cnp", run.stderr)

    def test_units_name_a_prefix_with_sed_characters_as_it_is(self):
        # A probe: a prefix with "&" had sed write the matched text in its place.
        destdir = os.path.join(self.root, "stage-amp")
        run = subprocess.run([INSTALL, "--prefix=/opt/a&b|c", "--systemd"], capture_output=True,
                             text=True, env=dict(os.environ, DESTDIR=destdir))
        self.assertEqual(run.returncode, 0, run.stderr)
        with open(os.path.join(destdir, "etc", "systemd", "system", "cnp-server.service")) as f:
            self.assertIn("ExecStart=/opt/a&b|c/bin/cnp-server --config=", f.read())

    def test_a_prefix_systemd_would_read_as_syntax_is_refused(self):
        # An operator's trial: "/tmp/inst sp&x" installed units whose ExecStart= ran
        # "/tmp/inst" (systemd splits at spaces); quotes, "\\", "%" and "$" are its syntax too.
        for prefix in ["/opt/c n p", "/opt/cnp%i", "/opt/cnp$HOME", '/opt/"cnp"']:
            destdir = os.path.join(self.root, "stage-syntax")
            run = subprocess.run([INSTALL, "--prefix=" + prefix, "--systemd"],
                                 capture_output=True, text=True,
                                 env=dict(os.environ, DESTDIR=destdir))
            self.assertEqual(run.returncode, 2, prefix)
            self.assertIn("which systemd's unit lines would read as syntax", run.stderr)
            self.assertFalse(os.path.exists(destdir), prefix)

    def install_staged(self, destdir, prefix):
        run = subprocess.run([INSTALL, "--prefix=" + prefix, "--systemd"], capture_output=True,
                             text=True, env=dict(os.environ, DESTDIR=destdir))
        self.assertEqual(run.returncode, 0, run.stderr)
        return run.stderr

    def test_reinstall_keeps_the_operators_drop_in(self):
        # A package (--prefix=/usr): the units are the package's, in /usr/lib/systemd/system,
        # and the operator's change is a drop-in in /etc (`systemctl edit cnp-server.socket`).
        # Before, the units went to /etc/systemd/system and a reinstall overwrote them.
        destdir = os.path.join(self.root, "stage-usr")
        self.install_staged(destdir, "/usr")
        units = os.path.join(destdir, "usr", "lib", "systemd", "system")
        for unit in ("cnp-server.socket", "cnp-server.service"):
            self.assertTrue(os.path.isfile(os.path.join(units, unit)), unit)
            self.assertFalse(os.path.exists(os.path.join(destdir, "etc", "systemd", "system", unit)))
        drop_in_dir = os.path.join(destdir, "etc", "systemd", "system", "cnp-server.socket.d")
        os.makedirs(drop_in_dir)
        drop_in = os.path.join(drop_in_dir, "override.conf")
        with open(drop_in, "w") as f:
            f.write("[Socket]\nListenStream=127.0.0.1:7070\n")
        self.install_staged(destdir, "/usr")
        with open(drop_in) as f:
            self.assertEqual(f.read(), "[Socket]\nListenStream=127.0.0.1:7070\n")
        self.assertEqual(os.listdir(drop_in_dir), ["override.conf"])

    def test_reinstall_keeps_the_mode_the_operator_gave_etc_cnp(self):
        # Found by a review: `install -d -m 0755` chmods a directory that exists, so every
        # reinstall reopened an /etc/cnp the operator had closed to hold a token and keys.
        destdir = os.path.join(self.root, "stage-mode")
        self.install_staged(destdir, "/usr")
        etc_cnp = os.path.join(destdir, "etc", "cnp")
        os.chmod(etc_cnp, 0o750)
        self.install_staged(destdir, "/usr")
        self.assertEqual(os.stat(etc_cnp).st_mode & 0o777, 0o750)

    def test_usr_local_units_go_below_etc(self):
        # /usr/local: systemd's directory for units the administrator installs, which /etc
        # (drop-ins and whole units alike) overrides.
        destdir = os.path.join(self.root, "stage-local")
        self.install_staged(destdir, "/usr/local")
        with open(os.path.join(destdir, "usr", "local", "lib", "systemd", "system",
                               "cnp-server.service")) as f:
            self.assertIn("ExecStart=/usr/local/bin/cnp-server --config=", f.read())
        self.assertFalse(os.path.exists(
            os.path.join(destdir, "etc", "systemd", "system", "cnp-server.service")))

    def test_reinstall_keeps_an_edited_unit_in_etc(self):
        # Another prefix: systemd does not look there, so the units go to /etc/systemd/system.
        # One the operator edited (as the README once said to) is kept, the new one left in
        # <prefix>/share/cnp/systemd and named; one left as installed is updated.
        destdir = os.path.join(self.root, "stage-opt")
        self.install_staged(destdir, "/opt/cnp")
        etc_units = os.path.join(destdir, "etc", "systemd", "system")
        socket_unit = os.path.join(etc_units, "cnp-server.socket")
        with open(socket_unit) as f:
            edited = f.read().replace("ListenStream=/run/cnp/cnp.sock\n",
                                      "ListenStream=/run/cnp/cnp.sock\nListenStream=127.0.0.1:7070\n")
        self.assertIn("ListenStream=127.0.0.1:7070", edited)
        with open(socket_unit, "w") as f:
            f.write(edited)
        service_unit = os.path.join(etc_units, "cnp-server.service")
        with open(service_unit, "w") as f:  # as an older installer left it: not edited since
            f.write("[Service]\nExecStart=/bin/false\n")
        shipped = os.path.join(destdir, "opt", "cnp", "share", "cnp", "systemd")
        shutil.copy(service_unit, os.path.join(shipped, "cnp-server.service"))
        stderr = self.install_staged(destdir, "/opt/cnp")
        with open(socket_unit) as f:
            self.assertEqual(f.read(), edited)
        self.assertIn(socket_unit, stderr)
        self.assertIn(os.path.join(shipped, "cnp-server.socket"), stderr)
        with open(service_unit) as f:
            self.assertIn("ExecStart=/opt/cnp/bin/cnp-server --config=", f.read())

    def test_reinstall_moves_units_an_older_installer_left_in_etc(self):
        # An older installer put /usr/local's units in /etc/systemd/system, where they would
        # hide the new ones for good: removed when unchanged, kept (and named) when edited.
        destdir = os.path.join(self.root, "stage-old")
        self.install_staged(destdir, "/usr/local")
        shipped = os.path.join(destdir, "usr", "local", "share", "cnp", "systemd")
        etc_units = os.path.join(destdir, "etc", "systemd", "system")
        os.makedirs(etc_units, exist_ok=True)
        for unit in ("cnp-server.socket", "cnp-server.service"):
            shutil.copy(os.path.join(shipped, unit), os.path.join(etc_units, unit))
        with open(os.path.join(etc_units, "cnp-server.socket"), "r+") as f:
            edited = f.read().replace("ListenStream=/run/cnp/cnp.sock\n",
                                      "ListenStream=/run/cnp/cnp.sock\nListenStream=127.0.0.1:7070\n")
            f.seek(0)
            f.write(edited)
        stderr = self.install_staged(destdir, "/usr/local")
        self.assertFalse(os.path.exists(os.path.join(etc_units, "cnp-server.service")))
        with open(os.path.join(etc_units, "cnp-server.socket")) as f:
            self.assertIn("ListenStream=127.0.0.1:7070", f.read())
        self.assertIn(os.path.join(etc_units, "cnp-server.socket"), stderr)

    def test_installed_server_serves_installed_cli(self):
        server = InstalledServer(self.prefix, ["--workers=1", "--python-path=" + self.functions])
        try:
            self.assertTrue(server.ready, server.output())
            run = subprocess.run(
                [self.path("bin", "cnp"), "map", "--target=" + server.target, "pkgfns.by_n", "-"],
                input='{"_id":"a","n":1}\n{"_id":"b","n":2}\n', capture_output=True, text=True,
                env=CLEAN_ENV, timeout=60)
            self.assertEqual(run.returncode, 0, run.stderr + server.output())
            lines = run.stdout.splitlines()
            self.assertEqual(len(lines), 2, run.stdout)
            self.assertIn('[[[1,"a"]]]', lines[0])
            self.assertIn('[[[2,"b"]]]', lines[1])
        finally:
            status, output = server.stop()
            self.assertEqual(status, 0, output)

    def test_example_config_is_accepted(self):
        # Every key of the example is one cnp-server knows. The lines naming the production
        # host's user, group and directories are left out: they do not exist here. The metrics
        # endpoint moves to a free port and must answer.
        config = os.path.join(self.root, "cnp-server.yaml")
        with open(self.path("share", "cnp", "cnp-server.yaml")) as f:
            text = f.read()
        for line in ("socket-group: cnp", "allow-uid:\n  - couchdb",
                     "python-path:\n  - /srv/cnp/functions"):
            self.assertIn(line, text)
            text = text.replace(line, "")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            metrics = "127.0.0.1:%d" % s.getsockname()[1]
        self.assertIn("metrics-listen: 127.0.0.1:9464", text)
        text = text.replace("metrics-listen: 127.0.0.1:9464", "metrics-listen: " + metrics)
        with open(config, "w") as f:
            f.write(text)
        server = InstalledServer(self.prefix, ["--config=" + config, "--workers=1",
                                               "--python-path=" + self.functions])
        try:
            self.assertTrue(server.ready, server.output())
            with urllib.request.urlopen("http://%s/metrics" % metrics, timeout=30) as answer:
                self.assertIn("cnp_worker_starts_total", answer.read().decode())
        finally:
            status, output = server.stop()
            self.assertEqual(status, 0, output)

    def test_a_bad_setting_is_not_restarted(self):
        # cnp-server exits 2 on a bad setting or flag, which no restart can fix: the unit says
        # so, where before Restart=on-failure started it again every second until systemd's
        # start limit.
        with open(self.path("share", "cnp", "systemd", "cnp-server.service")) as f:
            unit = f.read()
        self.assertIn("\nRestart=on-failure\n", unit)
        self.assertIn("\nRestartPreventExitStatus=2\n", unit)
        config = os.path.join(self.root, "bad.yaml")
        with open(config, "w") as f:
            f.write("workers: lots\n")
        run = subprocess.run([self.path("bin", "cnp-server"), "--config=" + config],
                             capture_output=True, text=True, env=CLEAN_ENV, timeout=60)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("workers", run.stderr)

    def test_units_verify(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed (Debian's systemd package)")
        units = self.path("share", "cnp", "systemd")
        run = subprocess.run(
            [analyze, "verify", "--man=no", os.path.join(units, "cnp-server.socket"),
             os.path.join(units, "cnp-server.service")], capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)
        # Unknown or misspelt settings are only warnings: there must be none.
        self.assertNotIn("Unknown", run.stderr)
        self.assertNotIn("cnp-server.s", run.stderr)


if __name__ == "__main__":
    unittest.main()
