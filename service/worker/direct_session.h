// A direct session: CouchDB's own stdin/stdout pipes, handed to this worker in a DirectSession
// task (worker.proto), served here with the CouchDB line protocol (service/couchdb's
// QuerySession) over an InProcessRunner, so that a document goes from CouchDB's pipe to Python
// and back with no other process on the way.
//
// The loop reads a line, answers it with one write() (log lines first, then the reply), and
// ends when:
//   - CouchDB closes its end (SessionEnd INPUT_CLOSED, the normal end);
//   - the protocol ends the session where couchjs would exit (an output marked exit: a line
//     that is not JSON, an unknown command) (PROTOCOL_EXIT);
//   - a command raised MemoryError: its reply is replaced by ["error","memory_error",..] (never
//     an empty result for a document that did not get its rows), and the session ends with
//     PROTOCOL_EXIT and the reply asks for the worker to be recycled, because a worker that ran
//     out of memory under its cap is not one to keep feeding (PROTOCOL_EXIT); so does running
//     out of memory outside the command's run, reading its line or putting its answer together;
//   - reading or writing the pipes failed (IO_ERROR);
//   - cnp-server is stopping: it sent the worker SIGTERM, and the session, between two commands,
//     ends without reading or writing anything more (SERVER_STOPPING; session_stop.h). A
//     command in flight is answered first: one running, a line partly read, a list still open.
// Then both descriptors are closed and the worker goes back to serving tasks.
//
// CouchDB's lines are read by common/couchdb/line_io.h's LineReader, one read() per burst of
// lines. A line over couchdb::kDefaultMaxLineBytes (64 MiB, cnp-adapter's default
// --max-line-bytes) is read to its end and dropped, and answered
// ["error","too_large",..] as cnp-adapter answers one over its --max-line-bytes; the session
// goes on, except inside a list (its row is lost: PROTOCOL_EXIT). A last line without its
// newline is answered like any other.
//
// A command that runs longer than CouchDB's timeout (from its reset, less QuerySession's
// margin) is answered by a watchdog thread with ["error","timeout",..], after which the worker
// exits at once with SESSION_TIMEOUT_EXIT: Python code stuck in a loop or in C cannot be
// interrupted safely, and the server replaces the worker.
#pragma once

#include <cstddef>

#include "service/common/shared_flag.h"
#include "service/worker/function_registry.h"
#include "worker.pb.h"

namespace cnp::worker {

// Serves the session on `input` (CouchDB's commands) and `output` (the answers), which it
// closes, and returns the Reply for the task: a session_end (recycle set after a MemoryError).
// Meanwhile the session's function errors go to the server in session_progress frames on
// `server`, the worker's socket (function_error_tally.h), the last before this returns.
// `couchdb_turn` (the server's word, or null) is kept at the session's v1::CouchDbTurn: owed
// nothing between commands, owed an answer from the moment a command's first byte is read
// until its answer is written, and CouchDB holding part of a line while a write longer than
// PIPE_BUF is under way (the kernel writes a shorter one whole or not at all). A worker that
// dies leaves it there for the server: an error line is written to CouchDB only when it is
// owed an answer, never as the rest of part of a line nor as an answer to nothing.
// May not return: see the watchdog above.
v1::Reply ServeDirectSession(FunctionRegistry& registry, const v1::DirectSession& session,
                             int input, int output, int server,
                             SharedFlag* couchdb_turn = nullptr);

}  // namespace cnp::worker
