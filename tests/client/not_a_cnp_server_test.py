"""The cnp command line pointed at an HTTP/2 server that answers with an HTTP status instead of
gRPC's: 404 (a web server, a proxy with no route for cnp.v1) or 502 (a proxy whose cnp-server is
down). gRPC says only "Received http2 header with status: N"; the command says what that means.
Written with python3-h2 on a loopback socket."""

import socket
import subprocess
import sys
import threading
import unittest

import h2.config
import h2.connection
import h2.events


class HttpStatusEverywhere:
    """An HTTP/2 server (prior knowledge, no TLS) on loopback that answers every stream with
    the HTTP status `status`."""

    def __init__(self, status):
        self.status = status
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        connection.initiate_connection()
        try:
            client.sendall(connection.data_to_send())
            while True:
                data = client.recv(65536)
                if not data:
                    return
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        connection.send_headers(event.stream_id, [(":status", self.status)],
                                                end_stream=True)
                client.sendall(connection.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            client.close()

    def close(self):
        self.listener.close()


class NotACnpServerTest(unittest.TestCase):
    def map_against(self, status):
        server = HttpStatusEverywhere(status)
        self.addCleanup(server.close)
        run = subprocess.run(
            [CNP, "map", "--target=127.0.0.1:%d" % server.port, "--timeout=20s", "m.f"],
            input='{"_id":"a"}\n', capture_output=True, text=True, timeout=60)
        self.assertNotEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("status: " + status, run.stderr)
        return run.stderr

    def test_an_http2_server_that_is_not_cnp_is_named_as_such(self):
        self.assertIn("is an HTTP/2 server but not a cnp-server", self.map_against("404"))

    def test_a_proxys_502_says_its_cnp_server_is_down_not_that_it_is_no_cnp_server(self):
        # Found by a review: the 404's words were given to every status, nginx's 502 for a
        # cnp-server restarting behind it included.
        said = self.map_against("502")
        self.assertIn("answered 502: the cnp-server behind it is down", said)
        self.assertNotIn("not a cnp-server", said)


if __name__ == "__main__":
    CNP = sys.argv.pop(1)
    unittest.main(argv=sys.argv[:1])
