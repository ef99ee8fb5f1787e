// The small JSON documents tests send to functions: an _id and a few members.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace cnp::testing {

// {"_id":"<id>"} followed by `fields`, JSON members without the braces ("town":"Oslo","n":1).
// Neither is escaped: the tests write them.
inline std::string Doc(absl::string_view id, absl::string_view fields = "") {
  return absl::StrCat(R"({"_id":")", id, R"(")", fields.empty() ? "" : ",", fields, "}");
}

// {"_id":"<id>","n":<n>}
inline std::string Doc(absl::string_view id, int64_t n) {
  return Doc(id, absl::StrCat(R"("n":)", n));
}

}  // namespace cnp::testing
