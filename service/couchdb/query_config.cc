#include "service/couchdb/query_config.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"

namespace cnp::couchdb {

QueryConfig QueryConfig::FromJson(std::string_view json) {
  QueryConfig config;
  // CouchDB's configuration is four small members. A parsed document takes up to about 20
  // times its text: a 63 MB `reset` line of `{}`s held 1.26 GB and stalled the threads of every
  // other call while it was built. One this large is no CouchDB's, and is taken as a malformed
  // one is: the defaults.
  if (json.empty() || json.size() > kMaxJsonBytes) return config;
  rapidjson::Document doc;
  // Iterative: no recursion per level of nesting on the thread's stack.
  doc.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) return config;

  if (auto it = doc.FindMember("reduce_limit"); it != doc.MemberEnd()) {
    const rapidjson::Value& v = it->value;
    if (v.IsTrue()) {
      config.reduce_limit = ReduceLimit::kOn;
    } else if (v.IsString() && std::string_view(v.GetString(), v.GetStringLength()) == "log") {
      config.reduce_limit = ReduceLimit::kLog;
    }
  }
  if (auto it = doc.FindMember("reduce_limit_threshold");
      it != doc.MemberEnd() && it->value.IsNumber() && it->value.GetDouble() >= 0) {
    // Clamped first: a double past size_t's range (1e308) converted is undefined behaviour.
    const double largest = static_cast<double>(std::numeric_limits<uint32_t>::max());
    config.reduce_limit_threshold = static_cast<size_t>(std::min(it->value.GetDouble(), largest));
  }
  if (auto it = doc.FindMember("reduce_limit_ratio");
      it != doc.MemberEnd() && it->value.IsNumber() && it->value.GetDouble() > 0) {
    config.reduce_limit_ratio = it->value.GetDouble();
  }
  if (auto it = doc.FindMember("timeout");
      it != doc.MemberEnd() && it->value.IsNumber() && it->value.GetDouble() > 0) {
    config.timeout = absl::Milliseconds(it->value.GetDouble());
  }
  return config;
}

std::optional<std::string> ReduceOverflow(const QueryConfig& config, size_t output_length,
                                          size_t input_length) {
  if (config.reduce_limit == QueryConfig::ReduceLimit::kOff) return std::nullopt;
  if (output_length <= config.reduce_limit_threshold) return std::nullopt;
  if (static_cast<double>(output_length) * config.reduce_limit_ratio <=
      static_cast<double>(input_length)) {
    return std::nullopt;
  }
  return absl::StrCat("Reduce output must shrink more rapidly: input size: ", input_length,
                      " output size: ", output_length);
}

size_t JavaScriptLength(std::string_view utf8) {
  size_t units = 0;
  for (const char c : utf8) {
    const auto byte = static_cast<unsigned char>(c);
    // A continuation byte (10xxxxxx) adds nothing; a 4-byte sequence's lead (11110xxx) is a
    // surrogate pair.
    if ((byte & 0xC0) != 0x80) ++units;
    if (byte >= 0xF0) ++units;
  }
  return units;
}

}  // namespace cnp::couchdb
