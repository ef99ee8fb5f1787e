#include "service/http2_guard/guarded_connections.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "service/http2_guard/frame_guard.h"

namespace cnp::http2_guard {
namespace {

struct Guarded {
  ino_t socket = 0;  // the socket's inode: a descriptor number is reused once closed
  absl::Mutex mu;
  FrameGuard guard ABSL_GUARDED_BY(mu);
  Closing closing ABSL_GUARDED_BY(mu);
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
    absl::MutexLock lock(&mu_);
    by_fd_[fd] = std::move(guarded);
    count_.store(by_fd_.size(), std::memory_order_relaxed);
  }

  // The guard of `fd`, when it is the socket that was guarded; a stale entry (the socket was
  // closed, its number reused) is dropped. Entries of closed connections stay until their
  // number is looked up again, at most one per descriptor number.
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
    absl::MutexLock lock(&mu_);
    if (auto it = by_fd_.find(fd); it != by_fd_.end() && it->second == found) by_fd_.erase(it);
    count_.store(by_fd_.size(), std::memory_order_relaxed);
    return nullptr;
  }

  void Remove(int fd, const std::shared_ptr<Guarded>& guarded) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (auto it = by_fd_.find(fd); it != by_fd_.end() && it->second == guarded) by_fd_.erase(it);
    count_.store(by_fd_.size(), std::memory_order_relaxed);
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<int, std::shared_ptr<Guarded>> by_fd_ ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> count_{0};
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

}  // namespace cnp::http2_guard

// The process's sendmsg and recvmsg (see guarded_connections.h): libgrpc's calls resolve
// here, ahead of libc's.
extern "C" ssize_t sendmsg(int fd, const msghdr* message, int flags) {
  // Before the bytes go: gRPC has marked its SETTINGS sent by the time it writes them, so an
  // acknowledgement read from now on is of those settings.
  if (std::shared_ptr<cnp::http2_guard::Guarded> guarded =
          cnp::http2_guard::TheRegistry().Find(fd)) {
    absl::MutexLock lock(&guarded->mu);
    guarded->guard.ServerSpoke();
  }
  return ::syscall(SYS_sendmsg, fd, message, flags);
}

extern "C" ssize_t recvmsg(int fd, msghdr* message, int flags) {
  using cnp::http2_guard::Guarded;
  const ssize_t got = cnp::http2_guard::KernelRecvmsg(fd, message, flags);
  if (got <= 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)) != 0) return got;
  std::shared_ptr<Guarded> guarded = cnp::http2_guard::TheRegistry().Find(fd);
  if (guarded == nullptr) return got;
  std::string broken;
  cnp::http2_guard::Closing closing;
  {
    absl::MutexLock lock(&guarded->mu);
    const absl::Time now = absl::Now();
    size_t left = static_cast<size_t>(got);
    for (size_t i = 0; i < message->msg_iovlen && left > 0 && broken.empty(); ++i) {
      const size_t n = std::min(left, message->msg_iov[i].iov_len);
      broken = guarded->guard.Read(
          absl::string_view(static_cast<const char*>(message->msg_iov[i].iov_base), n), now);
      left -= n;
    }
    if (!broken.empty()) closing = std::exchange(guarded->closing, nullptr);
  }
  if (broken.empty()) return got;
  if (closing) {
    cnp::http2_guard::TheRegistry().Remove(fd, guarded);
    closing(broken);
  }
  ::shutdown(fd, SHUT_RDWR);
  errno = ECONNRESET;
  return -1;
}
