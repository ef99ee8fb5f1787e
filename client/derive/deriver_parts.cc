#include "client/derive/deriver_parts.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/derive/couch_db.h"
#include "client/derive/marked_status.h"
#include "client/lib/cnp_client.h"
#include "common/call_limit.h"
#include "common/couchdb/json.h"

namespace cnp::derive {

using rapidjson::Document;
using rapidjson::Value;

bool OverCallLimit(const absl::Status& status) {
  return CallLimitOf(status).has_value() || client::ClientLimitOf(status).has_value();
}

std::optional<CallLimitError> OneOverCallLimit(const absl::Status& status, const CallLimitWords& words) {
  if (std::optional<CallLimit> own = client::ClientLimitOf(status)) {
    // No flag of cnp-server's helps: this side sends and takes no more than that in one call.
    if (own->kind == CallLimit::Kind::kRequest) {
      return CallLimitError{kRequestTooLargeType,
                            absl::StrCat(words.request, " than cnp derive sends in one call (",
                                         own->limit, " bytes, the client library's limit)")};
    }
    return CallLimitError{kAnswerTooLargeType,
                          absl::StrCat(words.answer, " larger than cnp derive takes in one answer (",
                                       own->limit, " bytes, the client library's limit); ",
                                       words.remedy, " to derive it")};
  }
  std::optional<CallLimit> refused = CallLimitOf(status);
  if (!refused.has_value() || refused->kind == CallLimit::Kind::kDocuments) return std::nullopt;
  const std::string limit = refused->limit > 0 ? absl::StrCat(", ", refused->limit, " bytes") : "";
  if (refused->kind == CallLimit::Kind::kRequest) {
    return CallLimitError{kRequestTooLargeType,
                          absl::StrCat(words.request, " than cnp-server takes in one call (its --max-call-bytes",
                                       limit, "); raise that flag to derive it")};
  }
  return CallLimitError{kAnswerTooLargeType,
                        absl::StrCat(words.answer, " larger than cnp-server's answer limit (its --max-call-bytes",
                                     limit, "); raise that flag, or ", words.remedy, ", to derive it")};
}

std::string Text(const Value& object, const char* field) {
  return std::string(couchdb::StringMember(object, field));
}

const Value* Member(const Value& object, const char* field) {
  if (!object.IsObject()) return nullptr;
  auto it = object.FindMember(field);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

std::string SeqText(const Value& seq) {
  if (seq.IsString()) return std::string(couchdb::StringView(seq));
  if (seq.IsNull()) return "0";
  return couchdb::ToJson(seq);
}

int64_t SeqNumber(absl::string_view seq) {
  size_t end = 0;
  while (end < seq.size() && seq[end] >= '0' && seq[end] <= '9') ++end;
  int64_t n = -1;
  if (!absl::SimpleAtoi(seq.substr(0, end), &n)) return -1;
  return n;
}

absl::Status InContext(const absl::Status& status, absl::string_view context) {
  absl::Status out(status.code(), absl::StrCat(context, status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

namespace {
constexpr char kIndexBehindPayload[] = "type.cnp.dev/derive.IndexBehind";
}  // namespace

absl::Status IndexBehindError(absl::string_view message) {
  return Marked(absl::UnavailableError(message), kIndexBehindPayload);
}

bool IsIndexBehind(const absl::Status& status) { return HasMark(status, kIndexBehindPayload); }

namespace {
constexpr char kSourceRecreatedPayload[] = "type.cnp.dev/derive.SourceRecreated";
}  // namespace

absl::Status SourceRecreatedError(absl::string_view message) {
  return Marked(absl::AbortedError(message), kSourceRecreatedPayload);
}

bool IsSourceRecreated(const absl::Status& status) { return HasMark(status, kSourceRecreatedPayload); }

bool IsDesign(absl::string_view id) { return absl::StartsWith(id, "_design/"); }

int64_t Generation(absl::string_view rev) {
  int64_t n = 0;
  size_t dash = rev.find('-');
  if (dash == absl::string_view::npos || !absl::SimpleAtoi(rev.substr(0, dash), &n)) return 0;
  return n;
}

std::string RangeQuery(const std::string& prefix) {
  return absl::StrCat("startkey=", QueryString(prefix), "&endkey=",
                      QueryString(absl::StrCat(prefix, "\xef\xbf\xb0")));  // U+FFF0
}

void FillDerived(Value& doc, Document::AllocatorType& a, const Value& key, const Value& value,
                 int64_t version, const std::string& source_type, std::set<std::string>& dropped) {
  if (value.IsObject()) {
    for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
      absl::string_view name(it->name.GetString(), it->name.GetStringLength());
      if (absl::StartsWith(name, "_") || absl::StartsWith(name, "mr_")) {
        if (name != "_id" && name != "_rev") dropped.emplace(name);
        continue;
      }
      doc.AddMember(Value(it->name, a), Value(it->value, a), a);
    }
    doc.AddMember("mr_value", Value(rapidjson::kNullType), a);
  } else {
    doc.AddMember("mr_value", Value(value, a), a);
  }
  doc.AddMember("mr_key", Value(key, a), a);
  doc.AddMember("mr_source_type", couchdb::StringValue(source_type, a), a);
  doc.AddMember("mr_version", version, a);
}

namespace {

// The tombstone of `existing` at revision `rev`.
std::string TombstoneAt(const Value& existing, const Value& rev) {
  Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  if (const Value* id = Member(existing, "_id")) doc.AddMember("_id", Value(*id, a), a);
  if (!rev.IsNull()) doc.AddMember("_rev", Value(rev, a), a);
  for (const char* field : {"mr_key", "mr_source_id", "mr_source_type", "mr_version"}) {
    if (const Value* v = Member(existing, field)) doc.AddMember(Value(field, a), Value(*v, a), a);
  }
  doc.AddMember("_deleted", true, a);
  return couchdb::ToJson(doc);
}

}  // namespace

std::string Tombstone(const Value& existing) {
  static const Value kNoRevision;
  const Value* rev = Member(existing, "_rev");
  return TombstoneAt(existing, rev != nullptr ? *rev : kNoRevision);
}

bool IsDerivedFrom(const Value& doc, absl::string_view source) {
  const Value* source_type = Member(doc, "mr_source_type");
  const Value* version = Member(doc, "mr_version");
  return source_type != nullptr && source_type->IsString() &&
         absl::string_view(source_type->GetString(), source_type->GetStringLength()) == source &&
         version != nullptr && version->IsInt64();
}

void AppendTombstones(const Value& existing, std::vector<std::string>& writes) {
  writes.push_back(Tombstone(existing));
  const Value* conflicts = Member(existing, "_conflicts");
  if (conflicts == nullptr || !conflicts->IsArray()) return;
  // Each with the winner's mr_key: whichever of them CouchDB makes the deleted winner, the
  // reduce stage reads from it the key that counted the row.
  for (const Value& rev : conflicts->GetArray()) {
    if (rev.IsString()) writes.push_back(TombstoneAt(existing, rev));
  }
}

std::string Desired(Value& desired, Document::AllocatorType& a, Value* existing) {
  if (existing != nullptr && existing->IsObject()) {
    std::string rev = Text(*existing, "_rev");
    existing->RemoveMember("_rev");
    existing->RemoveMember("_conflicts");
    if (couchdb::JsonEqual(*existing, desired)) return "";
    desired.AddMember("_rev", couchdb::StringValue(rev, a), a);
  }
  return couchdb::ToJson(desired);
}

std::string CheckpointId(const std::string& name, const Stage& s) {
  return absl::StrCat("cnp-derive:", name, ":source:", s.source);
}

std::optional<std::string> OldCheckpointId(const std::string& name, const Stage& s) {
  if (s.source == "lease" || s.source == "status" || s.source == "errors") return std::nullopt;
  return absl::StrCat("cnp-derive:", name, ":", s.source);
}

}  // namespace cnp::derive
