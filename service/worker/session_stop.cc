#include "service/worker/session_stop.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>

#include "absl/time/clock.h"

#include "service/worker/forked_child.h"

namespace cnp::worker {
namespace {

// Shared with the handler, so lock-free atomics only.
std::atomic<pid_t> g_session_thread{0};  // the thread reading CouchDB's input; 0: no session
std::atomic<int> g_idle_input{-1};  // CouchDB's input while the session waits at a line boundary
std::atomic<bool> g_stop{false};   // the server asked the session to end
std::atomic<bool> g_cut{false};    // CouchDB's input has been replaced by g_unreadable
static_assert(std::atomic<pid_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free &&
              std::atomic<bool>::is_always_lock_free);

pid_t g_pid = 0;          // the worker's
int g_unreadable = -1;    // /dev/null opened write-only: a read() of it fails at once (EBADF)
bool g_installed = false;
std::once_flag g_install_once;

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
  g_stop.store(true);
  if (::gettid() != session) {
    // Another thread took it (one a function started): the session's own thread must, to cut
    // a read it may be blocked in. It sees the session's state as it is, being interrupted.
    ::tgkill(g_pid, session, signal);
  } else if (const int input = g_idle_input.load(); input >= 0) {
    if (PointAt(input, g_unreadable)) g_cut.store(true);
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
  g_session_thread.store(::gettid());
}

SessionStop::~SessionStop() {
  if (saved_input_ < 0) return;
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
  // Marked before the flag is looked at: a stop that comes after the look cuts the read itself.
  g_idle_input.store(input_);
  if (!g_stop.load() || g_cut.load()) return;
  if (stop_seen_ == absl::InfiniteFuture()) stop_seen_ = absl::Now();
  // CouchDB sends the lines of one request (reset, ddoc new, the call; map_doc after map_doc)
  // each as soon as the answer before it came: a session cut at the first boundary after a
  // stop failed the request it was serving (a validate_doc_update's write, an index build:
  // 500s for CouchDB's clients; a review). So the next line is waited for a moment, and read
  // if it comes, for a while after the stop; a query server idle in CouchDB's pool sends none.
  if (absl::Now() - stop_seen_ < kServeRequestFor && InputWithin(kQuietFor)) return;
  if (PointAt(input_, g_unreadable)) g_cut.store(true);
}

bool SessionStop::InputWithin(absl::Duration wait) const {
  const absl::Time deadline = absl::Now() + wait;
  for (;;) {
    pollfd entry{.fd = input_, .events = POLLIN, .revents = 0};
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    const int ready = ::poll(&entry, 1, static_cast<int>(std::max<int64_t>(left, 0)));
    if (ready > 0) return true;  // a line, or CouchDB's end of file: read either
    if (ready == 0 || errno != EINTR) return false;
  }
}

void SessionStop::Busy() {
  if (saved_input_ >= 0) g_idle_input.store(-1);
}

bool SessionStop::InputCut() const { return saved_input_ >= 0 && g_cut.load(); }

bool SessionStop::Requested() { return g_stop.load(); }

}  // namespace cnp::worker
