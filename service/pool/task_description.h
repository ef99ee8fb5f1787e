// Short human descriptions of worker tasks for logs and error messages.
#pragma once

#include <string>

#include "worker.pb.h"

namespace cnp::pool {

// "Map of myviews.townmap on 3 documents", "Validate of myviews.validate", ...
std::string DescribeTask(const worker::v1::Task& task);

}  // namespace cnp::pool
