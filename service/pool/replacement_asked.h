#ifndef CNP_SERVICE_POOL_REPLACEMENT_ASKED_H_
#define CNP_SERVICE_POOL_REPLACEMENT_ASKED_H_

#include "service/worker/protocol/worker.pb.h"

namespace cnp::pool {

// Why a worker's reply asked for the worker to be replaced once the reply is handled (the
// reply itself stands either way). The pool logs and counts each cause in its own words: an
// operator chasing a leak and one chasing a function that starts threads look in different
// places.
enum class ReplacementAsked {
  kNo,
  kOutOfMemory,         // a MemoryError was raised in the worker
  kThreadsLeftRunning,  // Python threads a function started were still running after it
};

inline ReplacementAsked ReplacementAskedBy(const worker::v1::Reply& reply) {
  if (!reply.recycle()) return ReplacementAsked::kNo;
  return reply.threads_left_running() ? ReplacementAsked::kThreadsLeftRunning
                                      : ReplacementAsked::kOutOfMemory;
}

}  // namespace cnp::pool

#endif  // CNP_SERVICE_POOL_REPLACEMENT_ASKED_H_
