// How a call that builds its answer in parts (a Map, or a MapStream message) tells the
// transport what the answer holds as it grows.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"

namespace cnp::calls {

// Told, while a Map's answer is built, how many bytes it holds: after each part's are appended,
// and before each wave of parts runs, what it will hold once that wave's are in (estimated from
// the answer so far). An error it returns ends the call with it (its answer so far dropped).
// The transport counts them against its memory budget (service/rpc/call_memory.h), so that an
// answer many times its request (a document under many function names, or a function that
// answers more than it reads) is counted before it is whole, not after.
using AnswerGrowth = std::function<absl::Status(int64_t answer_bytes)>;

}  // namespace cnp::calls
