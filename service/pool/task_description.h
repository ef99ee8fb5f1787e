// Short human descriptions of worker tasks for logs and error messages.
#pragma once

#include <string>

#include "worker.pb.h"

namespace cnp::pool {

// "Map of myviews.townmap on 3 documents", "Validate of myviews.validate", ...
std::string DescribeTask(const worker::v1::Task& task);

// The functions a task runs, for a log line's `function` field: the name when there is one, else
// the names joined with ", " (the first kMaxLoggedFunctions, then "and N more"); empty for a task
// that names none (a list's next row, a direct session).
std::string TaskFunctions(const worker::v1::Task& task);
inline constexpr int kMaxLoggedFunctions = 8;

}  // namespace cnp::pool
