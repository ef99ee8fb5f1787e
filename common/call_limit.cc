#include "common/call_limit.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace cnp {
namespace {

// The payload holds the trailer's text: one format on both sides of the wire.
constexpr char kCallLimitPayload[] = "cnp.v1/call-limit";

constexpr struct {
  CallLimit::Kind kind;
  const char* word;
} kKindWords[] = {
    {CallLimit::Kind::kAnswer, "answer"},
    {CallLimit::Kind::kRequest, "request"},
    {CallLimit::Kind::kDocuments, "documents"},
    {CallLimit::Kind::kFunctions, "functions"},
};

}  // namespace

std::string CallLimitText(CallLimit limit) {
  for (const auto& k : kKindWords) {
    if (k.kind == limit.kind) return absl::StrCat(k.word, " ", limit.limit);
  }
  return "";
}

std::optional<CallLimit> ParseCallLimit(absl::string_view text) {
  for (const auto& k : kKindWords) {
    absl::string_view rest = text;
    if (!absl::ConsumePrefix(&rest, k.word) || !absl::ConsumePrefix(&rest, " ")) continue;
    // Digits only: SimpleAtoi would also take a sign and surrounding spaces.
    if (rest.empty() || rest.find_first_not_of("0123456789") != absl::string_view::npos) {
      return std::nullopt;
    }
    int64_t limit = 0;
    if (!absl::SimpleAtoi(rest, &limit)) return std::nullopt;
    return CallLimit{k.kind, limit};
  }
  return std::nullopt;
}

absl::Status WithCallLimit(absl::Status status, CallLimit limit) {
  status.SetPayload(kCallLimitPayload, absl::Cord(CallLimitText(limit)));
  return status;
}

std::optional<CallLimit> CallLimitOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kCallLimitPayload);
  if (!payload.has_value()) return std::nullopt;
  return ParseCallLimit(std::string(*payload));
}

}  // namespace cnp
