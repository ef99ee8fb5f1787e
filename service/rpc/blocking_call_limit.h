// How many calls may hold or wait for the threads of a blocking executor (the upload threads)
// at once. The executor's own queue is unbounded: without this, every call admitted while its
// threads are busy (a staged build can take hours) would wait there holding its request, with
// no answer. A call over the limit is refused at once instead, with `refusal` as its message.
#pragma once

#include <atomic>
#include <optional>
#include <string>
#include <utility>

namespace cnp::rpc {

class BlockingCallLimit {
 public:
  // Held by a call from the moment it is let in until its blocking work has returned.
  class Slot {
   public:
    explicit Slot(BlockingCallLimit& limit) : limit_(&limit) {}
    Slot(Slot&& other) noexcept : limit_(std::exchange(other.limit_, nullptr)) {}
    Slot& operator=(Slot&&) = delete;
    ~Slot() {
      if (limit_ != nullptr) limit_->held_.fetch_sub(1, std::memory_order_acq_rel);
    }

   private:
    BlockingCallLimit* limit_;
  };

  BlockingCallLimit(int limit, std::string refusal)
      : limit_(limit), refusal_(std::move(refusal)) {}

  // A slot, or nothing when `limit` calls already hold one.
  std::optional<Slot> TryEnter() {
    int held = held_.load(std::memory_order_relaxed);
    do {
      if (held >= limit_) return std::nullopt;
    } while (!held_.compare_exchange_weak(held, held + 1, std::memory_order_acq_rel));
    return Slot(*this);
  }

  const std::string& refusal() const { return refusal_; }

 private:
  const int limit_;
  const std::string refusal_;
  std::atomic<int> held_{0};
};

}  // namespace cnp::rpc
