"""A replica behind nginx that stops answering without closing anything (SIGSTOP: frozen, or its
host gone without a reset) is given up by cnp-adapter for the other replica within CouchDB's
timeout. On a direct connection the adapter's HTTP/2 pings find such a replica
(tests/adapter/failover_test.py); behind nginx they cannot, as nginx answers them itself. What
finds it is the Session stream's silence: the adapter asks for heartbeats, the server writes one
whenever a command has kept the stream silent for a second, and the adapter gives a stream that
stays silent for 2.5 s up and replays the session on another.

And the converse: a command that runs longer than that on a replica that works is waited for,
its heartbeats reaching the adapter through nginx."""
import os
import shutil
import signal
import sys
import time
import unittest

import cluster
import cnp_testing

SERVER, WORKER, ADAPTER, SCALEFNS, NGINX_CONF = (os.path.abspath(a) for a in sys.argv[1:6])
del sys.argv[1:6]
FUNCTIONS_DIR = os.path.dirname(SCALEFNS)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
COUCHDB_TIMEOUT_MS = 5000   # CouchDB's default os_process_timeout
ADAPTER_SHARE = 0.8         # of it, the adapter's for retries before it answers an error


class FrozenReplicaBehindNginxTest(unittest.TestCase):
    def setUp(self):
        self.assertTrue(os.path.exists(NGINX), "nginx is not installed (scripts/setup.sh)")
        self.replicas = {}
        self.nginx = None
        self.adapters = []
        self.frozen = None
        for name in ("r1", "r2"):
            self.replicas[name] = cluster.Replica(SERVER, WORKER, FUNCTIONS_DIR, name, workers=1)
        # One nginx worker: least_conn, ties taken in turn, so a stream that gives r1 up goes to r2.
        self.nginx = cluster.Nginx(NGINX_CONF, list(self.replicas.values()), nginx=NGINX)

    def tearDown(self):
        if self.frozen is not None:
            os.killpg(self.frozen.process.pid, signal.SIGCONT)
        for adapter in self.adapters:
            adapter.close()
        if self.nginx:
            self.nginx.stop()
        for replica in self.replicas.values():
            replica.stop()

    def session_on(self, replica, timeout_ms):
        """An adapter whose Session stream nginx gave to `replica` (each new adapter's stream
        goes to the replica with fewer streams open, so they alternate)."""
        for number in range(8):
            adapter = cluster.Adapter(ADAPTER, self.nginx.address, timeout_ms=timeout_ms)
            self.adapters.append(adapter)
            reply = adapter.reply(["map_doc", {"_id": "first", "n": number}])
            if reply[0][0][1][0] == replica:
                return adapter
        self.fail("no session reached %s in 8 adapters" % replica)

    def test_a_frozen_replica_is_given_up_for_the_other(self):
        adapter = self.session_on("r1", COUCHDB_TIMEOUT_MS)
        self.frozen = self.replicas["r1"]
        os.killpg(self.frozen.process.pid, signal.SIGSTOP)
        cnp_testing.wait_until_stopped(self.frozen.process.pid)
        started = time.monotonic()
        reply = adapter.reply(["map_doc", {"_id": "after", "n": 7}], timeout=15)
        elapsed = time.monotonic() - started
        # The right answer, from r2, in time for CouchDB to read it (before: after 4.75 s, the
        # adapter's own "unavailable" error, which CouchDB takes as the indexer's failure).
        self.assertEqual(reply, [[[22, ["r2", "after"]]]], adapter.diagnostics())
        self.assertLess(elapsed, COUCHDB_TIMEOUT_MS / 1000 * ADAPTER_SHARE, adapter.diagnostics())

    def test_a_long_command_on_a_working_replica_is_waited_for(self):
        adapter = self.session_on("r1", 12000)
        self.assertIs(adapter.reply(["add_fun", "scalefns.slow_triple"]), True)
        started = time.monotonic()
        reply = adapter.reply(["map_doc", {"_id": "slow", "n": 2, "seconds": 4}], timeout=30)
        # Answered by r1, where the session is, after the 4 s it took: the heartbeats kept the
        # stream from looking silent (given up at 2.5 s, the command would have been replayed
        # on r2, which would have answered).
        self.assertEqual(reply, [[[7, ["r1", "slow"]]], [[7, ["r1", "slow"]]]],
                         adapter.diagnostics())
        self.assertGreaterEqual(time.monotonic() - started, 4)
        self.assertEqual(adapter.close(), 0, adapter.diagnostics())
        self.adapters.remove(adapter)


if __name__ == "__main__":
    unittest.main()
