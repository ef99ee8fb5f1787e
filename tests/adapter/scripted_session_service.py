"""A stand-in for cnp-server's Session RPC, written with Python's gRPC, for the stream path's
tests: it speaks the query protocol just enough, records every line of every stream, and can be
told to misbehave.

reset forgets the functions (no reply: the adapter answers reset itself); add_fun, add_lib and
ddoc new are answered `true`, with `accepted` set only while `sets_accepted` (a server older than
that field never sets it); map_doc gets one row [function, doc id] per function; a design
document call gets [true, id] if this stream was taught that design document, and couchjs's
"Uncached design doc" error otherwise. Pings are accepted as cnp-server accepts them.

Misbehaviour: `fail_streams` aborts every stream at once, as a proxy whose upstream is down does;
`hang_next_map_doc` leaves the next map_doc unanswered until the service stops;
`busy_next_map_doc` leaves it unanswered too, but sends heartbeats (`heartbeat_ms`) meanwhile
(a service alive and too busy to finish the command);
`freeze_first_stream` leaves the first stream's first command other than reset unanswered until
the service stops (a replica frozen before it answered anything, behind a proxy that answers
the adapter's pings itself);
`fail_next_map_doc` aborts the stream that receives the next map_doc (a replica dying);
`slow_large_map_doc` (announced bytes, seconds) answers each map_doc with a partial output
announcing an answer of that many bytes, and the answer that many seconds later (a large answer
crossing a slow link), with `heartbeat_ms` (which every output then says) the interval granted;
`abort_map_docs` (a list of (status code, message, trailers)) aborts the streams that receive
the next map_docs with each in turn (a server overloaded, or refusing the line); `abort_add_funs`
does the same for add_fun (a replica with a smaller --max-call-bytes refusing a replayed line)."""

import json
import os
import threading
from concurrent import futures

import grpc

from session_wire import session_input_line, session_output


class ScriptedSessionService:
    def __init__(self, directory, name="scripted.sock"):
        self.lock = threading.Lock()
        self.streams = []  # the lines each stream received, decoded, in order
        self.sets_accepted = True
        self.fail_streams = False
        self.hang_next_map_doc = threading.Event()
        self.busy_next_map_doc = threading.Event()
        self.freeze_first_stream = False
        self.fail_next_map_doc = threading.Event()
        self.abort_map_docs = []
        self.abort_add_funs = []
        self.heartbeat_ms = 0
        self.slow_large_map_doc = None
        self.stopping = threading.Event()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.http2.min_ping_interval_without_data_ms", 1000)])
        handler = grpc.method_handlers_generic_handler("cnp.v1.Functions", {
            "Session": grpc.stream_stream_rpc_method_handler(self.session),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.target = "unix:" + os.path.join(directory, name)
        self.server.add_insecure_port(self.target)
        self.server.start()

    def stream_count(self):
        with self.lock:
            return len(self.streams)

    def stream_lines(self, index):
        with self.lock:
            return list(self.streams[index])

    def session(self, requests, context):
        received = []
        with self.lock:
            self.streams.append(received)
            first_stream = len(self.streams) == 1
        if self.fail_streams:
            context.abort(grpc.StatusCode.UNAVAILABLE, "upstream connect error (502 Bad Gateway)")
        functions = []
        design_docs = set()
        for request in requests:
            command = json.loads(session_input_line(request))
            with self.lock:
                received.append(command)
            name = command[0]
            if first_stream and self.freeze_first_stream and name != "reset":
                self.stopping.wait()
                return
            if name == "reset":
                functions = []
            elif name in ("add_fun", "add_lib") or command[:2] == ["ddoc", "new"]:
                with self.lock:
                    aborted = self.abort_add_funs.pop(0) if name == "add_fun" and self.abort_add_funs else None
                if aborted is not None:
                    code, message, trailers = aborted
                    context.set_trailing_metadata(trailers)
                    context.abort(code, message)
                if name == "add_fun":
                    functions.append(command[1])
                elif name == "ddoc":
                    design_docs.add(command[2])
                yield session_output([b"true"], accepted=self.sets_accepted,
                                     heartbeat_ms=self.heartbeat_ms)
            elif name == "ddoc":
                if command[1] in design_docs:
                    answer = [True, command[1]]
                else:
                    answer = ["error", "query_protocol_error",
                              "Uncached design doc: " + command[1]]
                yield session_output([json.dumps(answer).encode()], accepted=False)
            elif name == "map_doc":
                if self.hang_next_map_doc.is_set():
                    self.hang_next_map_doc.clear()
                    self.stopping.wait()
                    return
                if self.busy_next_map_doc.is_set():
                    self.busy_next_map_doc.clear()
                    while not self.stopping.wait(self.heartbeat_ms / 2000):
                        yield session_output([], partial=True, heartbeat_ms=self.heartbeat_ms)
                    return
                with self.lock:
                    aborted = self.abort_map_docs.pop(0) if self.abort_map_docs else None
                if aborted is not None:
                    code, message, trailers = aborted
                    context.set_trailing_metadata(trailers)
                    context.abort(code, message)
                if self.fail_next_map_doc.is_set():
                    self.fail_next_map_doc.clear()
                    context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
                rows = [[[f, command[1]["_id"]]] for f in functions]
                if self.slow_large_map_doc is not None:
                    announced, seconds = self.slow_large_map_doc
                    yield session_output([], partial=True, heartbeat_ms=self.heartbeat_ms,
                                         answer_bytes=announced)
                    self.stopping.wait(seconds)  # the answer on its way, slowly
                yield session_output([json.dumps(rows).encode()], accepted=False,
                                     heartbeat_ms=self.heartbeat_ms)
            else:
                yield session_output([b'["error","unknown","not scripted"]'], accepted=False)

    def stop(self):
        self.stopping.set()
        self.server.stop(None)
