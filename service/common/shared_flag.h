// One word of memory shared between cnp-server and a worker through a memfd, for a state the
// worker changes on its hot path and the server reads after the worker has died: a plain store
// on one side, a load on the other, no system call and no message per change. The server
// creates it (Create) and hands the descriptor over with the task; the worker maps it (Map).
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"

namespace cnp {

class SharedFlag {
 public:
  // A new flag, zero, with its own descriptor (close-on-exec) to hand to the worker.
  static absl::StatusOr<SharedFlag> Create();
  // Maps the flag behind `fd` (a Create()'s, received), which it takes and closes.
  static absl::StatusOr<SharedFlag> Map(int fd);

  SharedFlag(SharedFlag&& other) noexcept;
  SharedFlag& operator=(SharedFlag&& other) noexcept;
  SharedFlag(const SharedFlag&) = delete;
  SharedFlag& operator=(const SharedFlag&) = delete;
  ~SharedFlag();

  // -1 once the descriptor has been closed (Map, CloseDescriptor).
  int fd() const { return fd_; }
  void CloseDescriptor();

  void Set(uint32_t value) { word_->store(value, std::memory_order_relaxed); }
  uint32_t Get() const { return word_->load(std::memory_order_relaxed); }

 private:
  SharedFlag(int fd, std::atomic<uint32_t>* word) : fd_(fd), word_(word) {}
  void Release();  // the descriptor and the mapping

  int fd_ = -1;
  std::atomic<uint32_t>* word_ = nullptr;
};

}  // namespace cnp
