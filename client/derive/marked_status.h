// A status marked (with a payload) for a caller that must tell it from others of its code: a
// lost lease from another FAILED_PRECONDITION, a copy behind from another UNAVAILABLE. The
// marks survive InContext (deriver_parts.h), which keeps payloads.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace cnp::derive {

inline absl::Status Marked(absl::Status status, absl::string_view mark) {
  status.SetPayload(mark, absl::Cord());
  return status;
}

inline bool HasMark(const absl::Status& status, absl::string_view mark) {
  return status.GetPayload(mark).has_value();
}

}  // namespace cnp::derive
