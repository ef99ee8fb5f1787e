#include "service/worker/session_stop.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>

#include "absl/time/time.h"
#include "service/worker/forked_child.h"

namespace cnp::worker {
namespace {

// Shared with the handler, so lock-free atomics only.
std::atomic<pid_t> g_session_thread{0};  // the thread reading CouchDB's input; 0: no session
std::atomic<int> g_idle_input{-1};  // CouchDB's input while the session waits at a line boundary
std::atomic<bool> g_stop{false};   // the server asked the session to end
std::atomic<bool> g_cut{false};    // CouchDB's input has been replaced by g_unreadable
// Monotonic nanoseconds: when the stop came (0: none yet), and when the session last began to
// wait for CouchDB at a boundary (its last answer written).
std::atomic<int64_t> g_stop_at{0};
std::atomic<int64_t> g_idle_since{0};
// Sends the session's thread SIGTERM again once CouchDB's next line is no longer to be waited
// for (CutDelay); made for each session, before g_session_thread says there is one.
timer_t g_cut_timer{};
std::atomic<bool> g_have_cut_timer{false};
static_assert(std::atomic<pid_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free &&
              std::atomic<bool>::is_always_lock_free &&
              std::atomic<int64_t>::is_always_lock_free);

// Plain numbers for the handler, which calls no library code it need not.
const int64_t kQuietForNs = absl::ToInt64Nanoseconds(SessionStop::kQuietFor);
const int64_t kServeRequestForNs = absl::ToInt64Nanoseconds(SessionStop::kServeRequestFor);

// clock_gettime is async-signal-safe, so the handler reads the clock as the session does.
int64_t MonotonicNow() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// How long yet a session waiting at a boundary at `now`, after a stop, waits for CouchDB's next
// line before it ends: the lines of one request come back to back, each as soon as the answer
// before it (reset, ddoc new, the call; map_doc after map_doc), so a session cut at the first
// boundary after a stop failed the request it was serving (a validate_doc_update's write, an
// index build: 500s for CouchDB's clients; a review). kQuietFor after its last answer, and no
// later than kServeRequestFor after the stop; 0 or less: now.
int64_t CutDelay(int64_t now) {
  const int64_t quiet_ends = g_idle_since.load() + kQuietForNs;
  const int64_t serving_ends = g_stop_at.load() + kServeRequestForNs;
  return std::min(quiet_ends, serving_ends) - now;
}

pid_t g_pid = 0;          // the worker's
int g_unreadable = -1;    // /dev/null opened write-only: a read() of it fails at once (EBADF)
bool g_installed = false;
std::once_flag g_install_once;

// A line came while the timer was armed to end the wait for it: its SIGTERM would interrupt
// the command that line is.
void DisarmCutTimer() {
  if (!g_have_cut_timer.load()) return;
  const itimerspec off{};
  ::timer_settime(g_cut_timer, 0, &off, nullptr);
}

// Points `input` at `source`'s file. Close-on-exec, as CouchDB's pipe was received: a subprocess
// a function starts must not inherit it (dup2 would clear the flag).
bool PointAt(int input, int source) { return ::dup3(source, input, O_CLOEXEC) >= 0; }

void OnSigterm(int signal) {
  const int saved_errno = errno;
  const pid_t session = g_session_thread.load();
  if (session == 0 || InForkedChild()) {
    // Not a session's stop: the default, the process ends. The signal is blocked while its
    // handler runs, so it is delivered again, with its default action, as this returns.
    ::signal(signal, SIG_DFL);
    ::raise(signal);
    errno = saved_errno;
    return;
  }
  const int64_t now = MonotonicNow();
  // The time first: whoever sees the stop sees when it came.
  int64_t none = 0;
  g_stop_at.compare_exchange_strong(none, now);
  g_stop.store(true);
  if (::gettid() != session) {
    // Another thread took it (one a function started): the session's own thread must, to cut
    // a read it may be blocked in. It sees the session's state as it is, being interrupted.
    ::tgkill(g_pid, session, signal);
  } else if (const int input = g_idle_input.load(); input >= 0) {
    // Waiting for CouchDB: cut now, or, while the request's next line may still come, when it
    // no longer may (the timer's SIGTERM comes back here; a line read meanwhile makes the
    // session busy, and its next boundary looks again). A line there already (or CouchDB's
    // end) is read, and the session's next boundary looks again.
    pollfd waiting{.fd = input, .events = POLLIN, .revents = 0};
    if (::poll(&waiting, 1, 0) <= 0) {
      const int64_t delay = CutDelay(now);
      const itimerspec in_a_moment{.it_interval = {},
                                   .it_value = {.tv_sec = delay / 1'000'000'000,
                                                .tv_nsec = delay % 1'000'000'000}};
      const bool later = delay > 0 && g_have_cut_timer.load() &&
                         ::timer_settime(g_cut_timer, 0, &in_a_moment, nullptr) == 0;
      if (!later && PointAt(input, g_unreadable)) g_cut.store(true);
    }
  }
  errno = saved_errno;
}

void Install() {
  g_pid = ::getpid();
  g_unreadable = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (g_unreadable < 0) return;
  struct sigaction action {};
  action.sa_handler = OnSigterm;
  // A function's system calls resume after the handler rather than fail with EINTR; so does a
  // read of CouchDB's input, which the handler may have pointed at g_unreadable meanwhile.
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  g_installed = ::sigaction(SIGTERM, &action, nullptr) == 0;
}

}  // namespace

SessionStop::SessionStop(int input) : input_(input) {
  std::call_once(g_install_once, Install);
  if (!g_installed) return;
  saved_input_ = ::fcntl(input, F_DUPFD_CLOEXEC, 0);
  if (saved_input_ < 0) return;
  child_must_not_hold_.emplace(saved_input_);
  g_stop.store(false);
  g_cut.store(false);
  g_idle_input.store(-1);
  g_stop_at.store(0);
  g_idle_since.store(0);
  sigevent to_this_thread{};
  to_this_thread.sigev_notify = SIGEV_THREAD_ID;
  to_this_thread.sigev_signo = SIGTERM;
  to_this_thread._sigev_un._tid = ::gettid();  // glibc 2.36 names no sigev_notify_thread_id
  // Without it a stop cuts a wait for CouchDB at once, as before the request's next line was
  // waited for.
  g_have_cut_timer.store(::timer_create(CLOCK_MONOTONIC, &to_this_thread, &g_cut_timer) == 0);
  g_session_thread.store(::gettid());
}

SessionStop::~SessionStop() {
  if (saved_input_ < 0) return;
  // Before the session is unmarked: a SIGTERM of the timer's that came after would end the
  // process. One it sent before is delivered to this thread as the call returns.
  if (g_have_cut_timer.exchange(false)) ::timer_delete(g_cut_timer);
  g_session_thread.store(0);
  g_idle_input.store(-1);
  g_cut.store(false);
  // Nothing is put back: the session has closed its input by now (the unreadable duplicate, if
  // it was cut), and its number may already be another descriptor's.
  child_must_not_hold_.reset();
  ::close(saved_input_);
}

void SessionStop::BeforeWaiting(bool idle) {
  if (saved_input_ < 0) return;
  if (!idle) {
    // From here on the handler leaves the input alone; if it cut it before (a read had just
    // returned part of a line), CouchDB's pipe goes back, and the line is read on.
    g_idle_input.store(-1);
    if (g_cut.exchange(false)) PointAt(input_, saved_input_);
    return;
  }
  // Marked before the flag is looked at: a stop that comes after the look deals with the read
  // itself (the handler).
  const int64_t now = MonotonicNow();
  g_idle_since.store(now);
  g_idle_input.store(input_);
  if (!g_stop.load() || g_cut.load()) return;
  // The request's next line, if it comes in time (CutDelay), is read; a query server idle in
  // CouchDB's pool is sent none.
  if (const int64_t delay = CutDelay(now); delay > 0 && InputWithin(delay)) {
    // Read now; a timer still armed to end this wait would interrupt the command the line is.
    DisarmCutTimer();
    return;
  }
  if (PointAt(input_, g_unreadable)) g_cut.store(true);
}

bool SessionStop::InputWithin(int64_t nanoseconds) const {
  const int64_t deadline = MonotonicNow() + nanoseconds;
  for (;;) {
    pollfd entry{.fd = input_, .events = POLLIN, .revents = 0};
    // Rounded up: a poll of 0 ms would not wait for a line due within the millisecond.
    const int64_t left = (deadline - MonotonicNow() + 999'999) / 1'000'000;
    const int ready = ::poll(&entry, 1, static_cast<int>(std::max<int64_t>(left, 0)));
    if (ready > 0) return true;  // a line, or CouchDB's end of file: read either
    if (ready == 0 || errno != EINTR) return false;
  }
}

void SessionStop::Busy(bool took_line) {
  if (saved_input_ < 0) return;
  g_idle_input.store(-1);
  if (!took_line || !g_stop.load()) return;
  // A line came after all: the timer that would have ended the wait for it is not wanted (its
  // SIGTERM would interrupt the command), and a cut that came as the read returned the line
  // is undone: the session's next boundary decides (a review found both ending requests).
  DisarmCutTimer();
  if (g_cut.exchange(false)) PointAt(input_, saved_input_);
}

bool SessionStop::InputCut() const { return saved_input_ >= 0 && g_cut.load(); }

bool SessionStop::Requested() { return g_stop.load(); }

}  // namespace cnp::worker
