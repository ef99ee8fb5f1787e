// What the session tests read of a session's answer: its lines.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cnp/v1/functions.pb.h"

namespace cnp::couchdb::session_testing {

// The lines of `output`, or one line "<no output>" when the session answered nothing.
inline std::vector<std::string> LinesOf(const std::optional<v1::SessionOutput>& output) {
  if (!output.has_value()) return {"<no output>"};
  return {output->lines().begin(), output->lines().end()};
}

}  // namespace cnp::couchdb::session_testing
