"""The stream path against services that fail in ways a plain restart does not show: a proxy
that accepts every stream and fails it at once (its upstream down), a service that stops
answering in the middle of a command, a connection slow to set up. Also: a quiet session keeps
its stream although the adapter pings it, and design documents are taught to a new stream when a
command names them. The service is a stand-in written with Python's gRPC
(scripted_session_service.py), which records the streams it was sent and can be told how to
misbehave."""

import os
import socket
import threading
import time

from scripted_adapter_fixture import ScriptedAdapterTestCase, main


class SlowProxy:
    """A unix-socket proxy to `upstream` that holds back the service's first bytes on each
    connection for `delay` seconds: a connection slow to set up (a far proxy, a TLS handshake
    over a long path)."""

    def __init__(self, upstream, path, delay):
        self.upstream = upstream
        self.delay = delay
        self.connections = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self.target = "unix:" + path
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            threading.Thread(target=self.pipe, args=(client, upstream, 0),
                             daemon=True).start()
            threading.Thread(target=self.pipe, args=(upstream, client, self.delay),
                             daemon=True).start()

    @staticmethod
    def pipe(source, sink, first_delay):
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if first_delay:
                    time.sleep(first_delay)  # the latency simulated, not a synchronisation
                    first_delay = 0
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


class StreamResilienceTest(ScriptedAdapterTestCase):
    temp_prefix = "cnp-resilience-"

    def start_session(self, timeout_ms):
        """The adapter, straight to the service, in a session (CouchDB's `timeout` given) that
        maps with one function, m.town."""
        self.start_adapter(self.service.target)
        self.assertIs(self.reply(["reset", {"timeout": timeout_ms}]), True)
        self.assertIs(self.reply(["add_fun", "m.town"]), True)

    def test_streams_failed_at_once_are_retried_with_backoff(self):
        # nginx with its only upstream down accepted each stream and failed it: the adapter
        # opened 551 streams in 4 s for one add_fun, and told CouchDB "cannot connect".
        self.service.fail_streams = True
        self.start_adapter(self.service.target)
        self.assertIs(self.reply(["reset", {"timeout": 2000}]), True)
        started = time.monotonic()
        reply = self.reply(["add_fun", "m.town"])
        elapsed = time.monotonic() - started
        self.assertEqual(reply[:2], ["error", "unavailable"], reply)
        # Within 80% of the 2 s timeout, backoff from 10 ms doubling to 250 ms allows about a
        # dozen streams.
        self.assertLess(self.service.stream_count(), 20)
        self.assertIn("502 Bad Gateway", reply[2])
        self.assertLess(elapsed, 2.0)

    def test_an_unreachable_service_is_given_up_after_30_s_whatever_couchdbs_timeout(self):
        # Found by a review: with CouchDB's os_process_timeout raised to hours (users set
        # 5,000,000 ms), a service that failed every stream was tried again for 80% of it,
        # and CouchDB's request hung for over an hour before its error.
        self.service.fail_streams = True
        self.start_adapter(self.service.target)
        self.assertIs(self.reply(["reset", {"timeout": 5000000}]), True)
        started = time.monotonic()
        reply = self.reply(["add_fun", "m.town"], timeout=60)
        elapsed = time.monotonic() - started
        self.assertEqual(reply[:2], ["error", "unavailable"], reply)
        self.assertIn("502 Bad Gateway", reply[2])
        self.assertLess(elapsed, 32.0)

    def test_a_service_that_stops_answering_is_answered_for_in_time(self):
        # A replica frozen (SIGSTOP) or whose host vanished quietly left the adapter blocked in
        # its read until CouchDB killed it at its timeout.
        self.start_session(timeout_ms=2000)
        self.service.hang_next_map_doc.set()
        started = time.monotonic()
        reply = self.reply(["map_doc", {"_id": "d1"}], timeout=10)
        elapsed = time.monotonic() - started
        self.assertEqual(reply[:2], ["error", "unavailable"], reply)
        self.assertIn("stopped answering", reply[2])
        # Not before the service's own budget (2 s less its 0.5 s margin), and in time for
        # CouchDB to read it.
        self.assertGreaterEqual(elapsed, 1.5)
        self.assertLess(elapsed, 2.0)
        # The next command goes to a new stream, taught the session again.
        self.assertEqual(self.reply(["map_doc", {"_id": "d2"}]), [[["m.town", "d2"]]])
        self.assertEqual(self.service.stream_count(), 2)

    def test_a_service_alive_but_too_busy_to_answer_in_time_is_told_apart(self):
        # Its heartbeats came, but not the answer: CouchDB's log said the service had "stopped
        # answering (frozen, or its host gone)", sending the operator after the wrong cause.
        self.service.heartbeat_ms = 200
        self.start_session(timeout_ms=2000)
        self.service.busy_next_map_doc.set()
        started = time.monotonic()
        reply = self.reply(["map_doc", {"_id": "d1"}], timeout=10)
        elapsed = time.monotonic() - started
        self.assertEqual(reply[:2], ["error", "timeout"], reply)
        self.assertIn("still working on the command", reply[2])
        self.assertNotIn("stopped answering", reply[2])
        self.assertGreaterEqual(elapsed, 1.5)
        self.assertLess(elapsed, 2.0)
        self.assertEqual(self.reply(["map_doc", {"_id": "d2"}]), [[["m.town", "d2"]]])

    def test_an_announced_large_answer_is_waited_for_past_the_silence_limit(self):
        # On a slow link a large answer takes longer to cross than 2.5 heartbeats of silence:
        # the adapter took the server for stopped and replayed the command on another stream,
        # to cross the same link again. Announced (answer_bytes: 4 MiB, 4 s more at 1 MiB/s),
        # it is waited for.
        self.service.heartbeat_ms = 1000
        self.service.slow_large_map_doc = (4 << 20, 3.5)
        self.start_session(timeout_ms=20000)
        started = time.monotonic()
        self.assertEqual(self.reply(["map_doc", {"_id": "d1"}], timeout=15), [[["m.town", "d1"]]])
        self.assertGreaterEqual(time.monotonic() - started, 3.4)
        self.assertEqual(self.service.stream_count(), 1)

    def test_a_first_stream_frozen_before_its_first_answer_is_given_up_in_time(self):
        # A new adapter's first stream reached a replica that had stopped (behind a proxy that
        # answers pings itself). Its silence limit came from the stream's first output, so with
        # none it had no limit: the command waited until the adapter's share of CouchDB's
        # timeout was spent and was answered unavailable instead of replayed on another stream.
        self.service.freeze_first_stream = True
        self.start_adapter(self.service.target)
        self.assertIs(self.reply(["reset", {"timeout": 5000}]), True)
        started = time.monotonic()
        self.assertIs(self.reply(["add_fun", "m.town"], timeout=10), True)
        # Silent for 2.5 of the heartbeats the adapter asks for (1 s), then replayed.
        self.assertLess(time.monotonic() - started, 3.5)
        self.assertEqual(self.service.stream_count(), 2)
        self.assertEqual(self.reply(["map_doc", {"_id": "d1"}]), [[["m.town", "d1"]]])

    def test_design_documents_are_taught_to_a_new_stream_when_named(self):
        # All of a session's design documents were replayed on every new stream before the
        # command in flight: 20,000 of them took 3 s of CouchDB's 5 s timeout.
        self.start_session(timeout_ms=5000)
        for name in ("a", "b", "c"):
            self.assertIs(self.reply(["ddoc", "new", "_design/" + name, {"_id": name}]), True)
        self.assertEqual(self.reply(["ddoc", "_design/b", ["filters", "f"], [[], {}]]),
                         [True, "_design/b"])
        self.service.fail_next_map_doc.set()
        self.assertEqual(self.reply(["map_doc", {"_id": "d1"}]), [[["m.town", "d1"]]])
        self.assertEqual(self.service.stream_count(), 2)
        # The new stream was taught the functions, and none of the design documents yet.
        self.assertEqual(self.service.stream_lines(1), [
            ["reset", {"timeout": 5000}], ["add_fun", "m.town"], ["map_doc", {"_id": "d1"}]])
        # A command naming one teaches it first, once; the one CouchDB never taught is left to
        # the service's own answer.
        self.assertEqual(self.reply(["ddoc", "_design/c", ["filters", "f"], [[], {}]]),
                         [True, "_design/c"])
        self.assertEqual(self.reply(["ddoc", "_design/c", ["filters", "f"], [[], {}]]),
                         [True, "_design/c"])
        self.assertEqual(self.reply(["ddoc", "_design/x", ["filters", "f"], [[], {}]])[:2],
                         ["error", "query_protocol_error"])
        # Taught as its functions (none here), all the service keeps of a design document.
        self.assertEqual(self.service.stream_lines(1)[3:], [
            ["ddoc", "new", "_design/c", {}],
            ["ddoc", "_design/c", ["filters", "f"], [[], {}]],
            ["ddoc", "_design/c", ["filters", "f"], [[], {}]],
            ["ddoc", "_design/x", ["filters", "f"], [[], {}]]])
        self.assertEqual(self.service.stream_count(), 2)

    def test_a_quiet_session_keeps_its_stream(self):
        # The adapter pings every 1.25 s, also while it waits for CouchDB and polls nothing: the
        # pings' answers must still be read in time, and the service must not take them for
        # abuse. Quiet for longer than three pings.
        self.start_session(timeout_ms=5000)
        time.sleep(9)  # the quiet time under test, not a wait for something to happen
        self.assertEqual(self.reply(["map_doc", {"_id": "d1"}]), [[["m.town", "d1"]]])
        self.assertEqual(self.service.stream_count(), 1)

    def test_a_connection_slow_to_set_up_is_waited_for(self):
        # Through a proxy adding 150 ms per hop, `cnp map` worked in 0.65 s and the adapter
        # answered `unavailable` after 4 s every time: it dropped each attempt's channel after
        # 500 ms, and gRPC gave up a connection attempt after at most 250 ms anyway.
        upstream = self.service.target[len("unix:"):]
        proxy = SlowProxy(upstream, os.path.join(self.dir, "slow.sock"), delay=0.8)
        self.addCleanup(proxy.close)
        self.start_adapter(proxy.target)
        self.assertIs(self.reply(["reset", {"timeout": 5000}]), True)
        started = time.monotonic()
        self.assertIs(self.reply(["add_fun", "m.town"], timeout=10), True)
        self.assertLess(time.monotonic() - started, 4.0)
        self.assertEqual(self.reply(["map_doc", {"_id": "d1"}]), [[["m.town", "d1"]]])


if __name__ == "__main__":
    main()
