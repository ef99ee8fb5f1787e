#include "service/couchdb/design_doc_cache.h"

#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "service/common/absl_view.h"
#include "common/couchdb/large_numbers.h"

namespace cnp::couchdb {
namespace {

// Function paths are at most three keys deep (views.<name>.map); anything deeper is data.
constexpr int kMaxFunctionDepth = 3;

// The top-level members that name functions (the sections a ddoc call can address).
constexpr std::array<std::string_view, 7> kFunctionSections = {
    "filters", "lists", "rewrites", "shows", "updates", "validate_doc_update", "views"};

// What a kept string costs beyond its characters: the map node and the string headers.
constexpr size_t kEntryOverhead = 128;

bool IsFunctionSection(std::string_view name) {
  for (std::string_view section : kFunctionSections) {
    if (name == section) return true;
  }
  return false;
}

void CollectStrings(const rapidjson::Value& value, const std::string& prefix, int depth,
                    char separator, std::map<std::string, std::string, std::less<>>& out,
                    size_t& bytes) {
  for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
    std::string_view name(it->name.GetString(), it->name.GetStringLength());
    if (depth == 0 && !IsFunctionSection(name)) continue;
    std::string path = prefix;
    if (!path.empty()) path += separator;
    path.append(name);
    if (it->value.IsString()) {
      bytes += path.size() + it->value.GetStringLength() + kEntryOverhead;
      out.emplace(std::move(path), std::string(it->value.GetString(), it->value.GetStringLength()));
    } else if (it->value.IsObject() && depth + 1 < kMaxFunctionDepth) {
      CollectStrings(it->value, path, depth + 1, separator, out, bytes);
    }
  }
}

}  // namespace

absl::Status DesignDocCache::Put(std::string_view id, std::string_view json) {
  rapidjson::Document doc;
  // Iterative: no recursion per level of nesting on the thread's stack. UTF-8 checked: the
  // function names go into the worker's tasks as protobuf strings (CouchDB sends only UTF-8).
  constexpr unsigned kFlags = rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag;
  doc.Parse<kFlags>(json.data(), json.size());
  // A number past a double's range (CouchDB stores one anywhere in a design document) is read
  // again quoted: only the document's strings are kept here.
  QuotedNumbers quoted;
  if (doc.HasParseError() && doc.GetParseError() == rapidjson::kParseErrorNumberTooBig) {
    quoted = QuoteLargeNumbers(json);
    doc.Parse<kFlags>(quoted.text.data(), quoted.text.size());
  }
  if (doc.HasParseError()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "design document ", AbslView(id), " is not valid JSON: ",
        rapidjson::GetParseError_En(doc.GetParseError()), " at byte ", doc.GetErrorOffset()));
  }
  if (!doc.IsObject()) {
    return absl::InvalidArgumentError(
        absl::StrCat("design document ", AbslView(id), " is not a JSON object"));
  }
  Entry entry{.id = std::string(id), .bytes = id.size() + kEntryOverhead};
  CollectStrings(doc, "", 0, kPathSeparator, entry.functions, entry.bytes);
  if (entry.bytes > limits_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "design document ", AbslView(id), " names ", entry.bytes,
        " bytes of functions, more than the ", limits_.max_bytes,
        " bytes a query-server session keeps for all its design documents; use shorter "
        "function names or fewer functions per design document"));
  }
  if (limits_.shared != nullptr) {
    // When the budget is spent, this session's own documents make room first (least recently
    // used first, an older revision of this one among them), as they do for max_bytes; only
    // with none of them left is the document refused. A document evicted here is answered
    // later as an uncached one, which makes CouchDB start a fresh process and teach it again.
    bool charged = limits_.shared->TryCharge(entry.bytes);
    while (!charged && !recency_.empty()) {
      EvictOldest();
      charged = limits_.shared->TryCharge(entry.bytes);
    }
    if (!charged) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "design document ", AbslView(id), " names ", entry.bytes, " bytes of functions, and "
          "the server's Session streams hold ", limits_.shared->used(), " of the ",
          limits_.shared->limit(), " bytes of design documents they may hold together "
          "(cnp-server's --max-session-design-memory)"));
    }
  }
  if (auto old = index_.find(id); old != index_.end()) {
    bytes_ -= old->second->bytes;
    if (limits_.shared != nullptr) limits_.shared->Release(old->second->bytes);
    recency_.erase(old->second);
    index_.erase(old);
  }
  bytes_ += entry.bytes;
  recency_.push_front(std::move(entry));
  index_.emplace(recency_.front().id, recency_.begin());
  while (index_.size() > limits_.max_docs || bytes_ > limits_.max_bytes) EvictOldest();
  return absl::OkStatus();
}

void DesignDocCache::EvictOldest() {
  const Entry& oldest = recency_.back();
  bytes_ -= oldest.bytes;
  if (limits_.shared != nullptr) limits_.shared->Release(oldest.bytes);
  index_.erase(oldest.id);
  recency_.pop_back();
}

DesignDocCache::~DesignDocCache() {
  if (limits_.shared != nullptr) limits_.shared->Release(bytes_);
}

const DesignDocCache::Entry* DesignDocCache::Touch(std::string_view id) const {
  auto it = index_.find(id);
  if (it == index_.end()) return nullptr;
  recency_.splice(recency_.begin(), recency_, it->second);
  return &*it->second;
}

bool DesignDocCache::Contains(std::string_view id) const { return Touch(id) != nullptr; }

std::optional<std::string> DesignDocCache::FindFunction(
    std::string_view id, const std::vector<std::string>& path) const {
  const Entry* doc = Touch(id);
  if (doc == nullptr) return std::nullopt;
  auto function = doc->functions.find(absl::StrJoin(path, absl::string_view(&kPathSeparator, 1)));
  if (function == doc->functions.end()) return std::nullopt;
  return function->second;
}

}  // namespace cnp::couchdb
