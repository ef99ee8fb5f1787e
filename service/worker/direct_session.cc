#include "service/worker/direct_session.h"

#include <fcntl.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/synchronization/mutex.h"
#include "common/couchdb/line_io.h"
#include "service/common/framing.h"
#include "service/common/log.h"
#include "service/couchdb/json_text.h"
#include "service/common/function_log.h"
#include "service/couchdb/query_session.h"
#include "service/worker/answered_task.h"
#include "service/worker/call_context.h"
#include "service/worker/forked_child.h"
#include "service/worker/function_error_tally.h"
#include "service/worker/in_process_runner.h"
#include "service/worker/session_stop.h"
#include "service/worker/task_support.h"

namespace cnp::worker {
namespace {

using v1::SessionEnd;

// The session's v1::CouchDbTurn, kept in the server's word when it gave one (direct_session.h).
class CouchDbTurnMark {
 public:
  explicit CouchDbTurnMark(SharedFlag* word) : word_(word) {}

  void Set(v1::CouchDbTurn turn) {
    if (word_ != nullptr) word_->Set(static_cast<uint32_t>(turn));
  }

  // Writes `bytes` (whole lines) to CouchDB, after which the turn is `after`. A write of at
  // most PIPE_BUF is whole or not at all, so `after` holds from before it: a worker that dies
  // with its answer unwritten leaves no line then (CouchDB sees the process end), rather than
  // one after its answer. A longer one may leave CouchDB part of a line.
  absl::Status Write(int output, std::string_view bytes, v1::CouchDbTurn after) {
    Set(bytes.size() > PIPE_BUF ? v1::COUCHDB_HOLDS_PART_OF_A_LINE : after);
    absl::Status written = couchdb::WriteAll(output, bytes);
    Set(after);
    return written;
  }

 private:
  SharedFlag* const word_;
};

int64_t CoarseNowNs() {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);  // vDSO: no system call
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// Ends the worker when a command outlives its budget. The session thread marks each command's
// start and end with a clock read (vDSO) and two atomic operations, so the hot path makes no
// system call for it; the watchdog sleeps until the running command would be due and looks.
// Whoever of the two first moves the command's sequence number on owns its answer: the session
// thread finishing it, or the watchdog declaring it timed out.
//
// The budget is CouchDB's: how long it waits for a line. A log() line is one (CouchDB restarts
// its timeout on each), so the session thread writes it through Heartbeat(), which restarts the
// budget; the server's --call-timeout (`cap`) still bounds the command as a whole.
class CommandWatchdog {
 public:
  CommandWatchdog(int output, CouchDbTurnMark& turn, std::string session_id,
                  absl::Duration budget, std::string cap_note, absl::Duration cap,
                  std::string cap_setting)
      : output_(output),
        turn_(turn),
        session_id_(std::move(session_id)),
        cap_setting_(std::move(cap_setting)),
        cap_ns_(cap == absl::InfiniteDuration() ? kNoCap : absl::ToInt64Nanoseconds(cap)) {
    SetBudget(budget, std::move(cap_note));
    thread_ = std::thread([this] { Watch(); });
  }

  ~CommandWatchdog() {
    {
      absl::MutexLock lock(&mutex_);
      stop_ = true;
    }
    wake_.SignalAll();
    thread_.join();
  }

  // After a reset: rare, so it may wake the watchdog to re-plan with the new budget.
  // `cap_note`: QueryProtocol::ServerCapNote(), for the timeout's message.
  void SetBudget(absl::Duration budget, std::string cap_note) {
    {
      absl::MutexLock lock(&mutex_);
      budget_ns_.store(absl::ToInt64Nanoseconds(budget), std::memory_order_relaxed);
      cap_note_ = std::move(cap_note);
    }
    wake_.SignalAll();
  }

  void Begin() {
    const int64_t now = CoarseNowNs();
    started_ns_.store(now, std::memory_order_relaxed);
    heard_ns_.store(now, std::memory_order_relaxed);
    seq_.store(++local_seq_, std::memory_order_release);  // odd: a command runs
  }

  // Writes `bytes` (whole lines) to CouchDB in the middle of the running command and restarts
  // its budget, unless the watchdog has claimed the command. Under the watchdog's lock, so a
  // timeout line is never written into the middle of it; CouchDB reads while it waits for an
  // answer, so the write does not hold the lock for long.
  void Heartbeat(std::string_view bytes) ABSL_LOCKS_EXCLUDED(mutex_) {
    // Before the lock: a forked child has no watchdog thread, and the lock may have been held
    // by it when the function forked.
    LeaveIfForkedChild();
    absl::MutexLock lock(&mutex_);
    if (seq_.load(std::memory_order_acquire) != local_seq_) return;  // claimed: ending
    // A CouchDB gone is found by the answer's write.
    turn_.Write(output_, bytes, v1::COUCHDB_OWED_AN_ANSWER).IgnoreError();
    heard_ns_.store(CoarseNowNs(), std::memory_order_relaxed);
  }

  // False when the watchdog has claimed the command: it writes the timeout line and ends the
  // process, so the caller must write nothing more.
  bool End() {
    uint64_t running = local_seq_;
    if (!seq_.compare_exchange_strong(running, local_seq_ + 1, std::memory_order_acq_rel)) {
      return false;
    }
    ++local_seq_;
    return true;
  }

 private:
  static constexpr uint64_t kFired = ~uint64_t{0};
  static constexpr int64_t kNoCap = std::numeric_limits<int64_t>::max();
  // CLOCK_MONOTONIC_COARSE advances in ticks; waking a tick late is better than a tick early.
  static constexpr int64_t kClockSlackNs = 10'000'000;

  void Watch() ABSL_LOCKS_EXCLUDED(mutex_) {
    absl::MutexLock lock(&mutex_);
    while (!stop_) {
      const int64_t budget = budget_ns_.load(std::memory_order_relaxed);
      uint64_t seq = seq_.load(std::memory_order_acquire);
      int64_t wait_ns = budget;  // idle: nothing can be due sooner than a full budget from now
      if (seq % 2 == 1) {
        const int64_t started = started_ns_.load(std::memory_order_acquire);
        // Heartbeat() moves it under this lock, so it is current here.
        const int64_t heard = heard_ns_.load(std::memory_order_relaxed);
        if (seq_.load(std::memory_order_acquire) != seq) continue;  // moved on: look again
        const bool capped = cap_ns_ != kNoCap && started + cap_ns_ <= heard + budget;
        const int64_t late_ns = CoarseNowNs() - (capped ? started + cap_ns_ : heard + budget);
        if (late_ns >= 0) {
          if (seq_.compare_exchange_strong(seq, kFired, std::memory_order_acq_rel)) {
            Fire(budget, capped);
          }
          continue;
        }
        wait_ns = -late_ns;
      }
      wake_.WaitWithTimeout(&mutex_, absl::Nanoseconds(wait_ns + kClockSlackNs));
    }
  }

  [[noreturn]] void Fire(int64_t budget_ns, bool capped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    std::string reason;
    // Which limit fired, for the server to tell the adapter (and the adapter its stderr).
    const bool cap_fired = !cap_note_.empty() || capped;
    if (!cap_note_.empty()) {
      // The cap is shorter than CouchDB's timeout: it is the budget.
      reason = absl::StrCat("cnp-worker: the command ran longer than the ", budget_ns / 1'000'000,
                            " ms it may take", cap_note_);
    } else if (capped) {
      reason = absl::StrCat("cnp-worker: the command ran longer than the ", cap_ns_ / 1'000'000,
                            " ms ", cap_setting_, " lets any command take, although "
                            "its log() lines kept CouchDB waiting");
    } else {
      reason = absl::StrCat("cnp-worker: the command ran longer than CouchDB's timeout allows (",
                            budget_ns / 1'000'000, " ms without a line to CouchDB)");
    }
    absl::StrAppend(&reason, "; the worker running it was stopped and is being replaced");
    const std::string line = couchdb::ErrorLine("timeout", reason) + "\n";
    // Best effort, never blocking (CouchDB may not be reading): the process ends either way,
    // and CouchDB sees its pipe close.
    ::fcntl(output_, F_SETFL, ::fcntl(output_, F_GETFL) | O_NONBLOCK);
    // This line is the command's answer: a worker killed before it exits has no other one
    // written after it.
    turn_.Write(output_, line, v1::COUCHDB_OWED_NOTHING).IgnoreError();
    // Through the log (one line, in --log-format's form: a collector reading JSON lines must
    // not meet a raw one), once: the process ends here. The log names the program itself;
    // the reason's "cnp-worker: " is for CouchDB's reader.
    LogEvent(LogLevel::kError, absl::StripPrefix(reason, "cnp-worker: "),
             {{"session", session_id_}});
    ::_exit(cap_fired ? v1::SESSION_CALL_TIMEOUT_EXIT : v1::SESSION_TIMEOUT_EXIT);
  }

  const int output_;
  CouchDbTurnMark& turn_;
  const std::string session_id_;
  const std::string cap_setting_;  // the setting that raises the cap, for the message
  const int64_t cap_ns_;  // kNoCap: none
  std::atomic<uint64_t> seq_{0};
  std::atomic<int64_t> started_ns_{0};
  std::atomic<int64_t> heard_ns_{0};  // the command's start, or its last log() line
  std::atomic<int64_t> budget_ns_{0};
  uint64_t local_seq_ = 0;  // the session thread's copy of seq_
  absl::Mutex mutex_;
  absl::CondVar wake_;  // stop_ or the budget changed
  std::string cap_note_ ABSL_GUARDED_BY(mutex_);
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

// The log lines for CouchDB's lines over the session's limit: the first at once, then at most
// one per kTooLongLogInterval saying how many came since. Each such line is answered to
// CouchDB, so the session goes on, and a peer sending them as fast as it can would otherwise
// write a log line each to the server's log.
class TooLongLines {
 public:
  static constexpr absl::Duration kTooLongLogInterval = absl::Seconds(10);

  void Log(absl::string_view session_id, absl::string_view message) {
    ++unlogged_;
    const absl::Time now = absl::Now();
    if (now < next_) return;
    next_ = now + kTooLongLogInterval;
    LogEvent(LogLevel::kWarning,
             unlogged_ == 1
                 ? std::string(message)
                 : absl::StrCat(message, " (and ", unlogged_ - 1,
                                " more lines over the limit since the last such line)"),
             {{"session", session_id}});
    unlogged_ = 0;
  }

 private:
  absl::Time next_ = absl::InfinitePast();
  int64_t unlogged_ = 0;
};

// The log() lines the last command's functions made, written to the service's log by this
// worker (its stderr is the server's): CouchDB got them in the answer; this is the operator's
// attributed copy, the same event the server writes for calls it serves.
void LogCommandLines(const v1::DirectSession& session,
                     google::protobuf::RepeatedPtrField<v1::FunctionLog>& scratch) {
  if (Context().attributed_logs.empty()) return;
  TakeAttributedLogs(scratch);
  LogFunctionLines(scratch, session.id(), session.peer());
  scratch.Clear();
}

// A direct session's log() lines, written to CouchDB as they are made (call_context.h), and
// their attributed copies to the service's log with them: held to the command's end, a function
// logging in a loop would hold a copy of every line (and its document's id) until then.
class CouchLog final : public EagerLog {
 public:
  CouchLog(CommandWatchdog& watchdog, const v1::DirectSession& session)
      : watchdog_(watchdog), session_(session) {}
  void Write(std::string_view message) override {
    line_ = couchdb::LogLine(message);
    line_ += '\n';
    watchdog_.Heartbeat(line_);
    LogCommandLines(session_, scratch_);
  }

 private:
  CommandWatchdog& watchdog_;
  const v1::DirectSession& session_;
  std::string line_;
  google::protobuf::RepeatedPtrField<v1::FunctionLog> scratch_;
};

// How many bytes AppendLines writes for `output`.
int64_t OutputBytes(const cnp::v1::SessionOutput& output) {
  int64_t bytes = 0;
  for (const std::string& line : output.lines()) bytes += static_cast<int64_t>(line.size()) + 1;
  return bytes;
}

// The bytes of one answer: every line, each with its newline, for a single write().
void AppendLines(const cnp::v1::SessionOutput& output, std::string& out) {
  for (const std::string& line : output.lines()) {
    out += line;
    out += '\n';
  }
}

// The session's loop; ServeDirectSession's, which owns the pipes and answers a bad_alloc from
// anywhere in it. `answer_owed`: set while a line of CouchDB's is being read or answered and
// its answer is not yet written.
v1::Reply ServeLines(FunctionRegistry& registry, const v1::DirectSession& session, int input,
                     int output, int server, CouchDbTurnMark& turn, bool& answer_owed) {
  couchdb::QuerySession::Options options;
  // Every task runs here, in this process: a reduce's values are walked once, by the parse that
  // builds them for Python.
  options.reduce_values_checked_by_worker = true;
  if (session.default_timeout_ms() > 0) {
    options.default_timeout = absl::Milliseconds(session.default_timeout_ms());
  }
  // The server's --call-timeout bounds a command here as on the Session stream. This session's
  // worker is its own, so a list that waits for CouchDB holds no worker of the pool: it needs
  // no idle limit.
  if (session.max_call_timeout_ms() > 0) {
    options.max_call_timeout = absl::Milliseconds(session.max_call_timeout_ms());
  }
  options.call_timeout_setting =
      std::string(couchdb::CallTimeoutSetting(session.call_timeout_set_by_adapter()));
  // Each answer is bounded as the server bounds a Session line, so that no line CouchDB sends
  // can make this worker build an answer hundreds of times its size (and die of bad_alloc).
  const int64_t answer_limit = session.max_answer_bytes() > 0
                                   ? session.max_answer_bytes()
                                   : static_cast<int64_t>(couchdb::kDefaultMaxLineBytes);
  options.max_answer_bytes = answer_limit;
  Context().memory_error = false;  // a worker that had one was recycled before it got here
  InProcessRunner runner(registry);
  FunctionErrorTally function_errors(server);
  auto protocol = std::make_unique<couchdb::QuerySession>(
      runner, options, [&function_errors](absl::string_view f) { function_errors.Count(f); });
  CommandWatchdog watchdog(output, turn, session.id(), protocol->CallBudget(),
                           protocol->ServerCapNote(), options.max_call_timeout,
                           options.call_timeout_setting);
  CouchLog couch_log(watchdog, session);
  Context().eager_log = &couch_log;
  absl::Cleanup no_eager_log = [] { Context().eager_log = nullptr; };
  // The adapter's --max-line-bytes or the server's --max-call-bytes, whichever is lower (the
  // server bounds it so); a worker reads whole lines only up to 256 MiB in any case.
  constexpr int64_t kMostLineBytes = int64_t{256} << 20;
  const size_t line_limit =
      session.max_line_bytes() > 0
          ? static_cast<size_t>(std::min(session.max_line_bytes(), kMostLineBytes))
          : couchdb::kDefaultMaxLineBytes;
  // cnp-server stopping asks the session to end (SIGTERM): it does so when it next waits for
  // CouchDB between commands; a line partly read or a list still open is a command in flight.
  SessionStop stop(input);
  couchdb::LineReader* reader = nullptr;
  couchdb::LineReader lines(input, line_limit, [&](int fd) {
    LeaveIfForkedChild();  // CouchDB's next line is the worker's to read
    // Part of a line read is a command under way; nothing read, CouchDB is owed nothing.
    turn.Set(reader->mid_line() ? v1::COUCHDB_OWED_AN_ANSWER : v1::COUCHDB_OWED_NOTHING);
    function_errors.BeforeWaiting(fd);
    stop.BeforeWaiting(!reader->mid_line() && !protocol->list_in_progress());
  });
  reader = &lines;
  if (session.announce_start()) {
    v1::Reply started;
    started.mutable_session_started();
    StampAnswer(started);
    // A server gone is found when the session ends; CouchDB is served meanwhile.
    WriteFrame(server, started.SerializeAsString()).IgnoreError();
  }

  v1::Reply reply;
  SessionEnd& end = *reply.mutable_session_end();
  std::string answer;
  google::protobuf::RepeatedPtrField<v1::FunctionLog> function_logs;
  int64_t commands = 0;
  TooLongLines too_long;
  for (;;) {
    answer_owed = true;  // a line growing in the reader's buffer is a command under way
    absl::StatusOr<std::optional<std::string_view>> line = lines.Next();
    answer_owed = line.ok() && line->has_value();
    if (answer_owed) turn.Set(v1::COUCHDB_OWED_AN_ANSWER);
    stop.Busy(/*took_line=*/answer_owed);
    if (absl::IsUnavailable(line.status()) && stop.InputCut()) {
      // Between two commands: everything CouchDB sent has been answered.
      end.set_reason(SessionEnd::SERVER_STOPPING);
      end.set_message(
          "cnp-server is stopping; this query server ends, and CouchDB starts a new one for its "
          "next request");
      break;
    }
    if (!line.ok() && absl::IsResourceExhausted(line.status())) {
      // Answered in the stream path's shape (cnp-adapter's --max-line-bytes); newlines still
      // frame the input, so the session goes on, except inside a list whose row went missing.
      ++commands;
      const std::string message = absl::StrCat(
          "cnp-worker: ", line.status().message(),
          session.line_limit_is_servers()
              ? " (cnp-server's --max-call-bytes, the longest line it takes on either path, "
                "raises the limit)"
              : " (cnp-adapter --max-line-bytes raises the limit)");
      too_long.Log(session.id(), line.status().message());
      if (absl::Status written = turn.Write(
              output, couchdb::ErrorLine("too_large", message) + "\n", v1::COUCHDB_OWED_NOTHING);
          !written.ok()) {
        end.set_reason(SessionEnd::IO_ERROR);
        end.set_message(std::string(written.message()));
        break;
      }
      if (protocol->list_in_progress()) {
        end.set_reason(SessionEnd::PROTOCOL_EXIT);
        end.set_message(absl::StrCat(message, std::string(couchdb::kListRowLost)));
        break;
      }
      continue;
    }
    if (!line.ok()) {
      end.set_reason(SessionEnd::IO_ERROR);
      end.set_message(std::string(line.status().message()));
      break;
    }
    if (!line->has_value()) {
      end.set_reason(SessionEnd::INPUT_CLOSED);
      end.set_message("CouchDB closed the session");
      break;
    }

    answer.clear();
    Context().answer.Start(answer_limit);
    Context().eager_log_held = false;
    watchdog.Begin();
    cnp::v1::SessionOutput* out;
    cnp::v1::SessionOutput out_of_memory;
    try {
      out = protocol->HandleInPlace(**line);
    } catch (const std::bad_alloc&) {
      // The worker's own C++ could not grow a buffer under its memory cap: answered as a
      // MemoryError is, below (the line put here is replaced), and the session ends.
      PyErr_Clear();
      Context().memory_error = true;
      out_of_memory.add_lines("");
      out = &out_of_memory;
    }
    if (!watchdog.End()) {
      for (;;) ::pause();  // the watchdog has answered and is ending the process
    }
    ++commands;
    LogCommandLines(session, function_logs);
    bool exit = false;
    if (out == nullptr) {
      // A reset: over gRPC the adapter answers it; here nobody else does.
      answer = "true\n";
      watchdog.SetBudget(protocol->CallBudget(), protocol->ServerCapNote());
      // A list the reset ended ran out of memory as it was unwound: the reset is answered, and
      // the session ends there so that the worker is replaced (left set, the flag turned the
      // next command's answer into a memory error).
      exit = Context().memory_error;
    } else {
      if (Context().memory_error && protocol->answering_filter_batch()) {
        // As couchjs out of memory: no line, and the process exits with status 1 (the adapter
        // does, with this session's end), on which CouchDB filters the batch again one
        // document at a time, with a new query server; one document may fit where the batch
        // did not. Any other answer fails the _changes request.
        out->clear_lines();
        out->set_exit(true);
      } else if (Context().memory_error && out->lines_size() > 0) {
        out->mutable_lines()->RemoveLast();
        out->add_lines(couchdb::ErrorLine(
            "memory_error",
            "cnp-worker: MemoryError: the command asked for more memory than the worker could get "
            "(one allocation too large, or its cap, --worker-memory-mb, reached); the worker "
            "is being replaced"));
        out->set_exit(true);
      } else if (Context().answer.exceeded() || OutputBytes(*out) > answer_limit) {
        // Whatever the protocol made of it (the worker's Failure is already this line; a
        // handler's own fallback, a render_error, is not), the answer is this one line: the
        // lines built for it were part of what did not fit.
        out->clear_lines();
        out->add_lines(couchdb::ErrorLine("too_large", absl::StrCat("cnp-worker: ",
                                                                    Context().answer.Message())));
        // A list whose step was lost cannot go on (CouchDB stops the process after a ddoc
        // error anyway).
        if (protocol->list_in_progress()) out->set_exit(true);
      }
      AppendLines(*out, answer);
      exit = out->exit();
    }
    Context().answer.Start(0);
    LeaveIfForkedChild();  // a child's answer would be taken for the next command's
    absl::Status written = turn.Write(output, answer, v1::COUCHDB_OWED_NOTHING);
    answer_owed = false;
    if (!written.ok()) {
      end.set_reason(SessionEnd::IO_ERROR);
      end.set_message(std::string(written.message()));
      break;
    }
    if (exit) {
      end.set_reason(SessionEnd::PROTOCOL_EXIT);
      if (out == nullptr) {
        end.set_message("a list ended by a reset raised MemoryError as it was unwound; recycle "
                        "the worker");
      } else if (Context().memory_error) {
        end.set_message(out->lines().empty()
                            ? "a filter batch raised MemoryError: the session ends without a "
                              "line, for CouchDB to filter the batch one document at a time; "
                              "recycle the worker"
                            : "a command raised MemoryError; recycle the worker");
      } else {
        end.set_message(couchdb::ProtocolEndedReason(out->lines(out->lines_size() - 1)));
      }
      break;
    }
  }
  end.set_commands(commands);
  // An open list is unwound while the watchdog still guards it; its log() lines go with the
  // session's end to the operator's log only, as CouchDB has left.
  Context().eager_log = nullptr;
  watchdog.Begin();
  protocol.reset();
  if (!watchdog.End()) {
    for (;;) ::pause();
  }
  LogCommandLines(session, function_logs);
  function_errors.Flush();  // before the session_end, which the server reads as the end
  return reply;
}

}  // namespace

v1::Reply ServeDirectSession(FunctionRegistry& registry, const v1::DirectSession& session,
                             int input, int output, int server, SharedFlag* couchdb_turn) {
  // Closed however the session ends: a descriptor left open would keep CouchDB's pipe open.
  absl::Cleanup close_pipes = [input, output] {
    ::close(input);
    ::close(output);
  };
  // A child a function forks and leaves running must not keep CouchDB's pipes open (given up
  // before they are closed).
  const ChildMustNotHold child_input(input), child_output(output);
  // Built while memory is there to build it.
  const std::string out_of_memory_line =
      couchdb::ErrorLine("memory_error",
                         "cnp-worker: MemoryError: the worker ran out of memory reading or "
                         "answering the command (one allocation too large, or its cap, "
                         "--worker-memory-mb, reached); the worker is being replaced") +
      "\n";
  bool answer_owed = false;
  CouchDbTurnMark turn(couchdb_turn);
  try {
    return ServeLines(registry, session, input, output, server, turn, answer_owed);
  } catch (const std::bad_alloc&) {
    // Outside a command's own run (which QuerySession answers itself): a line too long to
    // hold, or an answer too large to put together. The session must still end as a session
    // does, with its pipes closed and a session_end: any other reply would tell the server the
    // pipes were never touched, and the adapter would read CouchDB's input from mid-line.
    PyErr_Clear();
    Context().memory_error = true;  // the worker is recycled (task_loop.cc)
    Context().answer.Start(0);
    // Nothing was written of the answer, which is this line; the session ends either way.
    if (answer_owed) turn.Write(output, out_of_memory_line, v1::COUCHDB_OWED_NOTHING).IgnoreError();
    v1::Reply reply;
    reply.mutable_session_end()->set_reason(SessionEnd::PROTOCOL_EXIT);
    reply.mutable_session_end()->set_message(
        answer_owed ? "reading or answering a command ran out of memory; recycle the worker"
                    : "the session ran out of memory as it ended; recycle the worker");
    return reply;
  }
}

}  // namespace cnp::worker
