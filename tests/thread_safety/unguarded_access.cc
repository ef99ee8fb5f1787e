// Deliberately wrong: each function below breaks a rule clang's thread-safety analysis
// enforces. scripts/thread_safety_check.sh compiles this file with the flags of our own code
// and fails unless the compiler refuses it for exactly these reasons, so the check cannot lose
// -Wthread-safety or -Werror without anyone noticing. Not part of any binary.
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace cnp::thread_safety_check {

class Counter {
 public:
  // A write without the lock.
  void IncrementUnlocked() { ++count_; }

  // A read without the lock.
  int ReadUnlocked() const { return count_; }

  // A call to a function that needs the lock, without it.
  void ResetUnlocked() { ResetLocked(); }

 private:
  void ResetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { count_ = 0; }

  mutable absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cnp::thread_safety_check
