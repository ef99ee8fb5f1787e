#include "service/http2_guard/guarded_connections.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "service/http2_guard/frame_guard.h"

namespace cnp::http2_guard {
namespace {

// What a connection holds of gRPC's memory before cnp sees a call, counted over all
// connections: calls awaiting their requests, and PING and SETTINGS frames not yet
// acknowledged.
enum Held { kAwaitingCalls, kUnacknowledged, kHeldKinds };

// How much of `kind` the guard has its connection hold now.
int HeldBy(const FrameGuard& guard, Held kind) {
  return kind == kAwaitingCalls ? guard.awaiting() : guard.unacknowledged();
}

struct Guarded {
  ino_t socket = 0;  // the socket's inode: a descriptor number is reused once closed
  absl::Mutex mu;
  FrameGuard guard ABSL_GUARDED_BY(mu);
  Closing closing ABSL_GUARDED_BY(mu);
  // What this connection adds to the registry's counts, and whether it has left the registry
  // (counted no more).
  int counted[kHeldKinds] ABSL_GUARDED_BY(mu) = {};
  bool gone ABSL_GUARDED_BY(mu) = false;
};

ino_t SocketInode(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

class Registry {
 public:
  void Add(int fd, Closing closing) ABSL_LOCKS_EXCLUDED(mu_) {
    auto guarded = std::make_shared<Guarded>();
    guarded->socket = SocketInode(fd);
    {
      absl::MutexLock lock(&guarded->mu);
      guarded->closing = std::move(closing);
    }
    std::shared_ptr<Guarded> earlier;
    {
      absl::MutexLock lock(&mu_);
      std::shared_ptr<Guarded>& slot = by_fd_[fd];
      earlier = std::exchange(slot, std::move(guarded));
      count_.store(by_fd_.size(), std::memory_order_relaxed);
    }
    // A number closed past close() below (close_range, dup2 over it): its calls count no more.
    if (earlier != nullptr) {
      absl::MutexLock lock(&earlier->mu);
      Uncount(*earlier);
    }
  }

  // The guard of `fd`, when it is the socket that was guarded. Entries leave at close(); one
  // whose socket went another way (the number now holds another file) is dropped here.
  std::shared_ptr<Guarded> Find(int fd) ABSL_LOCKS_EXCLUDED(mu_) {
    if (count_.load(std::memory_order_relaxed) == 0) return nullptr;
    std::shared_ptr<Guarded> found;
    {
      absl::MutexLock lock(&mu_);
      auto it = by_fd_.find(fd);
      if (it == by_fd_.end()) return nullptr;
      found = it->second;
    }
    if (SocketInode(fd) == found->socket) return found;
    Remove(fd, found);
    return nullptr;
  }

  // The connection's calls count no more, and it leaves the registry.
  void Remove(int fd, const std::shared_ptr<Guarded>& guarded) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&guarded->mu);
      Uncount(*guarded);
    }
    absl::MutexLock lock(&mu_);
    if (auto it = by_fd_.find(fd); it != by_fd_.end() && it->second == guarded) by_fd_.erase(it);
    count_.store(by_fd_.size(), std::memory_order_relaxed);
  }

  // close(2) of `fd`: its entry leaves, and the descriptor is closed under the connection's
  // lock, so that a Rebalance on another thread shuts the connection down before the number
  // is closed, or sees it gone, never after another file has taken the number.
  int Close(int fd) ABSL_LOCKS_EXCLUDED(mu_) {
    std::shared_ptr<Guarded> guarded;
    if (count_.load(std::memory_order_relaxed) > 0) {
      absl::MutexLock lock(&mu_);
      if (auto it = by_fd_.find(fd); it != by_fd_.end()) {
        guarded = std::move(it->second);
        by_fd_.erase(it);
        count_.store(by_fd_.size(), std::memory_order_relaxed);
      }
    }
    if (guarded == nullptr) return static_cast<int>(::syscall(SYS_close, fd));
    absl::MutexLock lock(&guarded->mu);
    Uncount(*guarded);
    return static_cast<int>(::syscall(SYS_close, fd));
  }

  // The connection's holdings counted as its guard has them now; which count of all
  // connections has passed its limit with them, if one has.
  std::optional<Held> Count(Guarded& guarded) ABSL_EXCLUSIVE_LOCKS_REQUIRED(guarded.mu) {
    if (guarded.gone) return std::nullopt;
    std::optional<Held> passed;
    for (const Held kind : {kAwaitingCalls, kUnacknowledged}) {
      const int now = HeldBy(guarded.guard, kind);
      const int change = now - guarded.counted[kind];
      const int64_t total = totals_[kind].fetch_add(change) + change;
      guarded.counted[kind] = now;
      if (change > 0 && total > limits_[kind].load(std::memory_order_relaxed) && !passed) {
        passed = kind;
      }
    }
    return passed;
  }

  void set_limit(Held kind, int64_t limit) { limits_[kind].store(limit); }

  // Past a limit: connections closed since are dropped, and if the count is still past it,
  // the connection holding the most of `kind` is closed (`current`, the one whose read added
  // to it, if none holds more), when it holds two or more. One awaiting call or unanswered
  // PING is what any connection may hold (a stream call before its first answer, a large
  // request being sent, a keepalive PING), and costs about what the connection does, which
  // the number of connections bounds: never a reason to close it, or an attacker's thin
  // connections would have every newcomer's closed. Whether the one closed was `current`.
  bool Rebalance(int current_fd, const std::shared_ptr<Guarded>& current, Held kind)
      ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::pair<int, std::shared_ptr<Guarded>>> all;
    {
      absl::MutexLock lock(&mu_);
      all.assign(by_fd_.begin(), by_fd_.end());
    }
    int victim_fd = current_fd;
    std::shared_ptr<Guarded> victim = current;
    int most = 0;
    {
      absl::MutexLock lock(&current->mu);
      most = current->counted[kind];
    }
    for (auto& [fd, guarded] : all) {
      if (SocketInode(fd) != guarded->socket) {
        Remove(fd, guarded);  // its number holds another file now
        continue;
      }
      absl::MutexLock lock(&guarded->mu);
      if (guarded->counted[kind] > most) {
        most = guarded->counted[kind];
        victim_fd = fd;
        victim = guarded;
      }
    }
    const int64_t total = totals_[kind].load();
    const int64_t limit = limits_[kind].load(std::memory_order_relaxed);
    if (total <= limit || most < 2) return false;
    const std::string why =
        kind == kAwaitingCalls
            ? absl::StrCat("held ", most, " calls open without sending their requests, the "
                           "most of any connection, while the server's connections held ",
                           total, " (at most ", limit, ", from --max-grpc-memory)")
            : absl::StrCat("had ", most, " PING and SETTINGS frames not yet acknowledged, "
                           "the most of any connection, while the server's connections had ",
                           total, " (at most ", limit, ", from --max-grpc-memory)");
    Closing closing;
    {
      absl::MutexLock lock(&victim->mu);
      if (victim->gone) return false;  // closed, or closed for, meanwhile
      // Every later read of it fails; its entry stays until gRPC closes it.
      victim->guard.Close(why);
      closing = std::exchange(victim->closing, nullptr);
      Uncount(*victim);
      // Open still (close() takes this lock first): gRPC's next read of it fails, and it
      // closes it. The one that just read is closed by recvmsg itself.
      if (victim != current) ::shutdown(victim_fd, SHUT_RDWR);
    }
    if (closing) closing(why);
    return victim == current;
  }

  void Uncount(Guarded& guarded) ABSL_EXCLUSIVE_LOCKS_REQUIRED(guarded.mu) {
    if (guarded.gone) return;
    for (const Held kind : {kAwaitingCalls, kUnacknowledged}) {
      totals_[kind].fetch_sub(guarded.counted[kind]);
      guarded.counted[kind] = 0;
    }
    guarded.gone = true;
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<int, std::shared_ptr<Guarded>> by_fd_ ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> count_{0};
  // What every guarded connection holds together, of each kind, and how much may be held.
  std::atomic<int64_t> totals_[kHeldKinds] = {};
  std::atomic<int64_t> limits_[kHeldKinds] = {kDefaultAwaitingLimit, kDefaultUnacknowledgedLimit};
};

Registry& TheRegistry() {
  static auto* registry = new Registry();  // never destroyed: reads may come at exit
  return *registry;
}

ssize_t KernelRecvmsg(int fd, msghdr* message, int flags) {
  return ::syscall(SYS_recvmsg, fd, message, flags);
}

}  // namespace

void GuardConnection(int fd, Closing closing) { TheRegistry().Add(fd, std::move(closing)); }

void SetAwaitingCallLimit(int64_t limit) { TheRegistry().set_limit(kAwaitingCalls, limit); }

void SetUnacknowledgedLimit(int64_t limit) {
  TheRegistry().set_limit(kUnacknowledged, limit);
}

}  // namespace cnp::http2_guard

// The process's sendmsg, recvmsg and close (see guarded_connections.h): libgrpc's calls
// resolve here, ahead of libc's.
extern "C" ssize_t sendmsg(int fd, const msghdr* message, int flags) {
  using cnp::http2_guard::Guarded;
  std::shared_ptr<Guarded> guarded = cnp::http2_guard::TheRegistry().Find(fd);
  if (guarded == nullptr) return ::syscall(SYS_sendmsg, fd, message, flags);
  // Before the bytes go: gRPC has marked its SETTINGS sent by the time it writes them, so an
  // acknowledgement read from now on is of those settings.
  {
    absl::MutexLock lock(&guarded->mu);
    guarded->guard.ServerSpoke();
  }
  const ssize_t sent = ::syscall(SYS_sendmsg, fd, message, flags);
  if (sent <= 0) return sent;
  const int saved_errno = errno;
  {
    absl::MutexLock lock(&guarded->mu);
    size_t left = static_cast<size_t>(sent);
    for (size_t i = 0; i < message->msg_iovlen && left > 0; ++i) {
      const size_t n = std::min(left, message->msg_iov[i].iov_len);
      guarded->guard.Wrote(
          absl::string_view(static_cast<const char*>(message->msg_iov[i].iov_base), n));
      left -= n;
    }
    // The server's frames only end calls and acknowledge PINGs and SETTINGS: never past a limit.
    cnp::http2_guard::TheRegistry().Count(*guarded);
  }
  errno = saved_errno;
  return sent;
}

extern "C" ssize_t recvmsg(int fd, msghdr* message, int flags) {
  using cnp::http2_guard::Guarded;
  cnp::http2_guard::Registry& registry = cnp::http2_guard::TheRegistry();
  const ssize_t got = cnp::http2_guard::KernelRecvmsg(fd, message, flags);
  if (got < 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)) != 0) return got;
  std::shared_ptr<Guarded> guarded = registry.Find(fd);
  if (guarded == nullptr) return got;
  std::string broken;
  std::optional<cnp::http2_guard::Held> past_limit;
  cnp::http2_guard::Closing closing;
  {
    absl::MutexLock lock(&guarded->mu);
    if (got == 0) {  // the client has gone: its calls await nothing
      registry.Uncount(*guarded);
      return got;
    }
    const absl::Time now = absl::Now();
    size_t left = static_cast<size_t>(got);
    for (size_t i = 0; i < message->msg_iovlen && left > 0 && broken.empty(); ++i) {
      const size_t n = std::min(left, message->msg_iov[i].iov_len);
      broken = guarded->guard.Read(
          absl::string_view(static_cast<const char*>(message->msg_iov[i].iov_base), n), now);
      left -= n;
    }
    if (!broken.empty()) {
      closing = std::exchange(guarded->closing, nullptr);
      registry.Uncount(*guarded);
    } else {
      past_limit = registry.Count(*guarded);
    }
  }
  if (past_limit) {
    // This connection is closed, or the one that holds the most of what passed its limit.
    if (!registry.Rebalance(fd, guarded, *past_limit)) return got;
  } else if (broken.empty()) {
    return got;
  }
  if (closing) closing(broken);
  ::shutdown(fd, SHUT_RDWR);
  errno = ECONNRESET;
  return -1;
}

// And close: a guarded connection's entry leaves the registry with its number (Registry::Close).
extern "C" int close(int fd) { return cnp::http2_guard::TheRegistry().Close(fd); }
