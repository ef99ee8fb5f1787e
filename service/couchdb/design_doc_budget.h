// The bytes of design documents every Session stream of a server holds together
// (design_doc_cache.h keeps each stream's own, bounded on its own). One stream may keep up to
// 64 MiB, a connection 100 streams, and a server many connections: without a budget they share,
// an authorized client opening streams could make the server hold that much per stream.
#pragma once

#include <atomic>
#include <cstddef>

namespace cnp::couchdb {

// Thread-safe: the streams that charge it run on several threads.
class DesignDocBudget {
 public:
  explicit DesignDocBudget(size_t limit) : limit_(limit) {}
  DesignDocBudget(const DesignDocBudget&) = delete;
  DesignDocBudget& operator=(const DesignDocBudget&) = delete;

  // Takes `bytes` from the budget; false, taking nothing, when that would pass the limit.
  bool TryCharge(size_t bytes) {
    size_t used = used_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit_ || used > limit_ - bytes) return false;
    } while (!used_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
    return true;
  }
  // Gives back what TryCharge took.
  void Release(size_t bytes) { used_.fetch_sub(bytes, std::memory_order_relaxed); }

  size_t used() const { return used_.load(std::memory_order_relaxed); }
  size_t limit() const { return limit_; }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
};

}  // namespace cnp::couchdb
