"""nginx keeps its connections to a replica (packaging/nginx/cnp.conf's upstream keepalive):
calls through nginx from a few clients, one after another, reach the replica over as many
connections as there are clients, not over a new connection every few calls.

nginx closes an idle cached upstream connection as soon as the replica sends anything on it. A
gRPC server probing the bandwidth-delay product sends HTTP/2 PINGs after a call's answer; nginx
then closed the connection, and the next call paid a TCP and an HTTP/2 handshake (16 clients
made 35-130 connections in 3 s). cnp-server turns the probe off.

The replica's new connections are counted as the new socket inodes in its descriptor table,
read after every call (a connection opened and closed between two reads would be missed, so a
count at the limit proves less than one over it shows)."""
import os
import shutil
import sys
import threading
import unittest

import grpc

import cluster

SERVER, WORKER, SCALEFNS, NGINX_CONF = (os.path.abspath(a) for a in sys.argv[1:5])
del sys.argv[1:5]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CLIENTS, CALLS = 8, 150


def validate_request(doc_id):
    def field(number, text):
        data = text.encode()
        return bytes([number << 3 | 2, len(data)]) + data
    return field(1, "scalefns.check") + field(2, '{"_id":"%s","n":1}' % doc_id)


def socket_inodes(pid):
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:"):
            inodes.add(target)
    return inodes


class NginxKeepaliveTest(unittest.TestCase):
    def test_calls_through_nginx_reuse_their_connections_to_the_replica(self):
        replica = cluster.Replica(SERVER, WORKER, os.path.dirname(SCALEFNS), "r0", workers=2)
        self.addCleanup(replica.stop)
        # Both upstream entries name this replica: every call reaches it.
        nginx = cluster.Nginx(NGINX_CONF, [replica, replica], nginx=NGINX)
        self.addCleanup(nginx.stop)
        before = socket_inodes(replica.process.pid)
        seen = set()
        lock = threading.Lock()
        failures = []

        def client(number):
            channel = grpc.insecure_channel(nginx.address,
                                            options=[("grpc.use_local_subchannel_pool", 1)])
            call = channel.unary_unary("/cnp.v1.Functions/Validate",
                                       request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
            try:
                for i in range(CALLS):
                    call(validate_request("c%d-%d" % (number, i)), timeout=30)
                    now = socket_inodes(replica.process.pid)
                    with lock:
                        seen.update(now - before)
            except grpc.RpcError as e:
                failures.append(e)
            finally:
                channel.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(failures, [])
        # One connection per client at most (nginx runs one worker process here).
        self.assertLessEqual(len(seen), CLIENTS, nginx.log())


if __name__ == "__main__":
    unittest.main()
