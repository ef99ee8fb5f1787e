// What calls make the server hold outside gRPC's own quota, all calls together: a unary call's
// request once parsed (and copied into its tasks) while it waits for a worker and runs, and its
// answer from when it is built (a Map's as it grows: Charge::Resize) until gRPC has sent it (or
// the call has ended). gRPC's
// ResourceQuota (--max-grpc-memory) counts only what gRPC itself allocates; these bytes are
// counted here against a budget of the same size, so that many calls queued, or answers their
// clients never read, cannot take the host's memory.
//
//   std::optional<CallMemory::Charge> held = memory.TryCharge(bytes);
//   if (!held) refuse RESOURCE_EXHAUSTED (CallMemory::RefusalMessage);
//   ... the bytes are given back when `held` (moved wherever they go) is destroyed.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace cnp::rpc {

// What a unary call's request is counted as, in multiples of its bytes: once parsed (a Map's
// bytes in one piece) and again as the copy its tasks carry to the workers.
inline constexpr int64_t kRequestCopies = 2;

class CallMemory {
  struct State {
    explicit State(int64_t budget) : budget(budget) {}
    const int64_t budget;
    std::atomic<int64_t> held{0};

    bool Reserve(int64_t bytes) {
      int64_t now = held.load();
      do {
        if (bytes > budget - now) return false;
      } while (!held.compare_exchange_weak(now, now + bytes));
      return true;
    }
  };

 public:
  explicit CallMemory(int64_t budget) : state_(std::make_shared<State>(budget)) {}

  // Bytes counted until it is destroyed (it may outlive the CallMemory).
  class Charge {
   public:
    Charge() = default;
    Charge(Charge&& other) noexcept
        : state_(std::move(other.state_)), bytes_(std::exchange(other.bytes_, 0)) {}
    Charge& operator=(Charge&& other) noexcept {
      if (this != &other) {
        Release();
        state_ = std::move(other.state_);
        bytes_ = std::exchange(other.bytes_, 0);
      }
      return *this;
    }
    ~Charge() { Release(); }
    int64_t bytes() const { return bytes_; }
    // Counts `bytes` instead of what it counted: less always, more only when the budget has
    // room for the difference (false, and the charge as it was, when it has not).
    bool Resize(int64_t bytes) {
      if (state_ == nullptr) return bytes <= 0;
      bytes = std::max<int64_t>(bytes, 0);
      if (bytes > bytes_ && !state_->Reserve(bytes - bytes_)) return false;
      if (bytes < bytes_) state_->held.fetch_sub(bytes_ - bytes);
      bytes_ = bytes;
      return true;
    }
    void Release() {
      if (state_ != nullptr && bytes_ > 0) state_->held.fetch_sub(bytes_);
      state_.reset();
      bytes_ = 0;
    }

   private:
    friend class CallMemory;
    Charge(std::shared_ptr<State> state, int64_t bytes)
        : state_(std::move(state)), bytes_(bytes) {}
    std::shared_ptr<State> state_;
    int64_t bytes_ = 0;
  };

  // `bytes` counted, or nothing when they would take what is held past the budget. A charge of
  // no bytes always succeeds (and may grow later: Charge::Resize).
  std::optional<Charge> TryCharge(int64_t bytes) {
    bytes = std::max<int64_t>(bytes, 0);
    if (bytes > 0 && !state_->Reserve(bytes)) return std::nullopt;
    return Charge(state_, bytes);
  }

  int64_t held() const { return state_->held.load(); }
  int64_t budget() const { return state_->budget; }

  // Why a call that needed `bytes` more was refused: what is held, the budget and its flag.
  std::string RefusalMessage(const char* what, int64_t bytes) const {
    return absl::StrCat(
        "the server is out of memory for calls: ", what, " needs ", MiB(bytes),
        " MiB and calls already hold ", MiB(held()), " MiB of the ", MiB(budget()),
        " MiB that --max-grpc-memory allows for requests waiting for a worker or running and "
        "answers not yet taken by their clients; try again later, or raise --max-grpc-memory");
  }

  // `buffer` (an answer) as a message whose slices keep `charge` until gRPC has let go of the
  // last of them (sent it, or the call ended); the original slices are kept alive with it.
  static grpc::ByteBuffer HoldWhileSent(grpc::ByteBuffer& buffer, Charge charge);

 private:
  static std::string MiB(int64_t bytes) {
    return absl::StrCat((bytes + (1 << 20) - 1) >> 20);
  }

  std::shared_ptr<State> state_;
};

inline grpc::ByteBuffer CallMemory::HoldWhileSent(grpc::ByteBuffer& buffer, Charge charge) {
  struct Held {
    std::vector<grpc::Slice> slices;
    Charge charge;
    std::atomic<size_t> left{0};
    static void Release(void* self) {
      auto* held = static_cast<Held*>(self);
      if (--held->left > 0) return;
      delete held;
    }
  };
  auto* held = new Held{.charge = std::move(charge)};
  if (!buffer.Valid() || !buffer.Dump(&held->slices).ok()) {
    delete held;
    return std::move(buffer);
  }
  std::vector<grpc::Slice> slices;
  for (grpc::Slice& slice : held->slices) {
    if (slice.size() == 0) continue;
    slices.emplace_back(const_cast<uint8_t*>(slice.begin()), slice.size(), &Held::Release,
                        held);
  }
  held->left = slices.size();
  if (slices.empty()) {
    delete held;
    return std::move(buffer);
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace cnp::rpc
