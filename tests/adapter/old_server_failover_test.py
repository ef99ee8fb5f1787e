"""Failover of the stream path against a server older than SessionOutput.accepted (an older
cnp-server, or a replica in the middle of an upgrade): such a server answers add_lib, add_fun and
ddoc new with exactly `true` and never sets `accepted`. The adapter must still remember those
lines and replay them on a new stream, or map_doc there runs with no functions and CouchDB
indexes every document with no rows.

The service is a stand-in written with Python's gRPC (scripted_session_service.py), told not to
set `accepted`."""

from scripted_adapter_fixture import ScriptedAdapterTestCase, main

DDOC = {"_id": "_design/f", "filters": {"by_town": "m.by_town"}}
RESET = ["reset", {"reduce_limit": True, "timeout": 20000}]


class OldServerFailoverTest(ScriptedAdapterTestCase):
    temp_prefix = "cnp-old-failover-"
    socket_name = "old.sock"

    def setUp(self):
        super().setUp()
        self.service.sets_accepted = False
        self.start_adapter(self.service.target)

    def start_session(self):
        self.assertIs(self.reply(RESET), True)
        self.assertIs(self.reply(["ddoc", "new", DDOC["_id"], DDOC]), True)
        self.assertIs(self.reply(["add_fun", "m.town"]), True)
        self.assertEqual(self.reply(["map_doc", {"_id": "d1"}]), [[["m.town", "d1"]]])

    def break_stream_and_map(self):
        self.service.fail_next_map_doc.set()
        # The command in flight is retried on a new stream once the session is replayed there.
        self.assertEqual(self.reply(["map_doc", {"_id": "d2"}]), [[["m.town", "d2"]]])
        self.assertEqual(self.service.stream_count(), 2)
        self.assertEqual(self.service.stream_lines(1), [
            RESET, ["add_fun", "m.town"], ["map_doc", {"_id": "d2"}]])
        # The design document is taught to the new stream before the first command naming it.
        call = ["ddoc", DDOC["_id"], ["filters", "by_town"], [[], {}]]
        self.assertEqual(self.reply(call), [True, DDOC["_id"]])
        # Taught as its functions, all the service keeps of it (not its _id).
        functions = {"filters": DDOC["filters"]}
        self.assertEqual(self.service.stream_lines(1)[3:],
                         [["ddoc", "new", DDOC["_id"], functions], call])

    def test_session_taught_to_an_old_server_is_replayed_after_a_break(self):
        self.start_session()
        self.break_stream_and_map()

    def test_replay_onto_a_replica_that_does_not_set_accepted_yet(self):
        # Taught to a server that marks what it accepted, replayed onto one that does not.
        self.service.sets_accepted = True
        self.start_session()
        self.service.sets_accepted = False
        self.break_stream_and_map()


if __name__ == "__main__":
    main()
