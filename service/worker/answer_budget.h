// How many bytes the answer to the task (or direct-session command) in progress may still take.
//
// The server says how large an answer may be (Task.max_answer_bytes, DirectSession's
// max_answer_bytes: its --max-call-bytes). Without a bound, a small request can make the worker
// build an answer hundreds of times its size (500 map functions that each emit a 1 MB document
// answer 500 MB for one document) and the server read it. So every place an answer grows asks
// here first: the JSON writer (rows, results, list steps) stops when its buffer would pass
// room(), log() refuses a line that does not fit, and a handler that moves a finished piece into
// its reply counts it with Take(). Once past, the answer is abandoned: the task is answered
// Failure ANSWER_TOO_LARGE (a direct session answers ["error","too_large",..]).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

namespace cnp::worker {

class AnswerBudget {
 public:
  // A new answer of at most `limit` bytes (0 or less: unbounded).
  void Start(int64_t limit) {
    limit_ = limit > 0 ? limit : 0;
    used_ = 0;
    exceeded_ = false;
  }

  // Bytes the answer may still grow by: what a buffer of not yet counted answer bytes may hold.
  size_t room() const {
    if (limit_ == 0) return std::numeric_limits<size_t>::max();
    return used_ >= limit_ ? 0 : static_cast<size_t>(limit_ - used_);
  }

  // Counts `bytes` moved into the answer; false (and exceeded() from now on) past the limit.
  bool Take(size_t bytes) {
    used_ += static_cast<int64_t>(bytes);
    if (limit_ != 0 && used_ > limit_) exceeded_ = true;
    return !exceeded_;
  }

  // A piece did not fit (the JSON writer stopped, a log line was refused).
  void MarkExceeded() { exceeded_ = true; }

  bool exceeded() const { return exceeded_; }
  int64_t limit() const { return limit_; }

  // Why the answer was abandoned, for the Failure, the error line and a Python exception.
  std::string Message() const {
    return "the answer would be larger than the " + std::to_string(limit_) +
           " bytes a call may carry (cnp-server's --max-call-bytes): emit less per document, "
           "send fewer functions or documents per call, or raise the flag";
  }

 private:
  int64_t limit_ = 0;
  int64_t used_ = 0;
  bool exceeded_ = false;
};

}  // namespace cnp::worker
