// The few JSON operations the upload needs on top of rapidjson: compact text, parsing with a
// message a user can act on, and equality that ignores the order of object members (CouchDB
// does not keep it, so a reordered object is not a change).
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "absl/status/statusor.h"
#include "rapidjson/document.h"

namespace cnp::upload {

std::string ToJson(const rapidjson::Value& value);

absl::StatusOr<rapidjson::Document> ParseJson(absl::string_view text);

bool JsonEqual(const rapidjson::Value& a, const rapidjson::Value& b);

}  // namespace cnp::upload
