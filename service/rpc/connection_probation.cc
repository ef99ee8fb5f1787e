#include "service/rpc/connection_probation.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cnp::rpc {

ConnectionProbation::~ConnectionProbation() { EndAll(); }

int ConnectionProbation::Watch(const std::string& peer, int fd) {
  if (timeout_ <= Clock::duration::zero()) return -1;
  const int duplicate = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (duplicate < 0) return -1;
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = watched_.try_emplace(peer, Watched{duplicate, Clock::now() + timeout_});
  if (!inserted) {
    // The same address and port again: the earlier connection is gone (a 4-tuple is open
    // once), only its probation was left.
    ::close(it->second.duplicate);
    it->second = Watched{duplicate, Clock::now() + timeout_};
  }
  watched_count_.store(static_cast<int>(watched_.size()), std::memory_order_relaxed);
  return duplicate;
}

void ConnectionProbation::Admitted(const grpc::ServerContext& context) {
  if (watched_count_.load(std::memory_order_relaxed) == 0) return;
  Release(context.peer());
}

void ConnectionProbation::Release(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  auto it = watched_.find(peer);
  if (it == watched_.end()) return;
  ::close(it->second.duplicate);
  watched_.erase(it);
  watched_count_.store(static_cast<int>(watched_.size()), std::memory_order_relaxed);
}

std::vector<std::string> ConnectionProbation::CloseExpired() {
  std::vector<std::string> closed;
  if (watched_count_.load(std::memory_order_relaxed) == 0) return closed;
  const Clock::time_point now = Clock::now();
  absl::MutexLock lock(&mu_);
  for (auto it = watched_.begin(); it != watched_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    // gRPC sees the connection end and lets go of it; the peer sees it closed.
    ::shutdown(it->second.duplicate, SHUT_RDWR);
    ::close(it->second.duplicate);
    closed.push_back(it->first);
    it = watched_.erase(it);
  }
  watched_count_.store(static_cast<int>(watched_.size()), std::memory_order_relaxed);
  return closed;
}

void ConnectionProbation::EndAll() {
  absl::MutexLock lock(&mu_);
  for (auto& [peer, watched] : watched_) ::close(watched.duplicate);
  watched_.clear();
  watched_count_.store(0, std::memory_order_relaxed);
}

}  // namespace cnp::rpc
