// How cnp-server asks a direct session to end when it stops (SIGTERM to the server): it sends
// the session's worker SIGTERM, and the session ends at its next line boundary, as a gRPC call
// in flight ends after its answer.
//
// While a session runs, SIGTERM to the worker sets a flag; it never ends a command (the handler
// is installed with SA_RESTART, so most system calls a function makes are resumed; those the
// kernel never restarts - poll, sleeps - return EINTR, which Python retries, as C code that
// handles signals does). The session looks at the flag each time it is about to wait for CouchDB's
// next line (BeforeWaiting): when it is idle there - no part of a line read, no list open - and
// no line comes within kQuietFor of its last answer (the next line of the request it is
// serving: CouchDB sends them back to back), it ends the session without reading or writing
// anything more; a command in flight (a line partly read, a list between its rows, a command
// running) goes on to its answer first. Lines are taken until kServeRequestFor after the stop,
// then the session ends at the next boundary (an index build's map_docs never pause).
//
// The signal may also come while the session already waits, blocked in read() on CouchDB's
// pipe. The handler then makes that read fail, at once or, within kQuietFor of the last answer,
// when a timer's SIGTERM to the session's thread comes back to it at the end of that wait: it
// puts a descriptor that cannot be read (a write-only /dev/null) in place of CouchDB's input
// with dup3(), and the read, restarted by the kernel after the handler, fails at once with
// EBADF. So there is no gap between looking at the flag and blocking in read() in which a stop
// could be missed. If the read had already returned
// part of a line just before the handler ran (the boundary is marked before a read, and the
// handler cannot know the read has returned), the next BeforeWaiting sees a line in progress
// and puts CouchDB's pipe back (a duplicate kept for that), so the line is read on and answered.
//
// Outside a session (a worker between tasks, a batch worker, a child a function forked without
// exec) SIGTERM keeps its default meaning: the process ends.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/time/time.h"

#include "service/worker/forked_child.h"

namespace cnp::worker {

class SessionStop {
 public:
  // Marks a session on this thread reading CouchDB's commands from `input`, installing the
  // handler the first time. False when the process cannot (no descriptor left): the session
  // then runs without it, and the server's shutdown kills it at the end of its grace.
  explicit SessionStop(int input);
  // Marks the end of the session: SIGTERM ends the process again. The caller closes `input`
  // (whichever descriptor is there now) as it would have.
  ~SessionStop();
  SessionStop(const SessionStop&) = delete;
  SessionStop& operator=(const SessionStop&) = delete;

  // Called right before each read() of CouchDB's input that may block. `idle`: no command is in
  // progress (nothing of a line read, no list open). When idle and a stop was asked for, the
  // read fails at once (EBADF), and requested_here() tells why.
  void BeforeWaiting(bool idle);
  // After a read of CouchDB's input returned: the session is busy until its next
  // BeforeWaiting. `took_line`: it returned a whole line, which is served whatever a stop that
  // came meanwhile did to the input.
  void Busy(bool took_line);
  // The server asked for the end, and the last read of CouchDB's input failed for that reason
  // (nothing of a command was lost).
  bool InputCut() const;
  // The server asked for the end.
  static bool Requested();

  // After a stop, how long a session waiting for CouchDB waits for the next line of the
  // request it is serving (from its last answer), and how long after the stop it may still
  // take one: well inside the 2 s --shutdown-grace of a server cnp-adapter starts.
  static constexpr absl::Duration kQuietFor = absl::Milliseconds(100);
  static constexpr absl::Duration kServeRequestFor = absl::Milliseconds(500);

 private:
  // Whether CouchDB's input becomes readable within `nanoseconds`.
  bool InputWithin(int64_t nanoseconds) const;

  const int input_;
  int saved_input_ = -1;  // CouchDB's pipe, kept to put back after an untimely cut
  std::optional<ChildMustNotHold> child_must_not_hold_;  // saved_input_
};

}  // namespace cnp::worker
