#include "service/couchdb/design_doc_cache.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/common/absl_view.h"
#include "service/couchdb/design_functions.h"

namespace cnp::couchdb {
namespace {

// What a kept string costs beyond its characters: the map node and the string headers.
constexpr size_t kEntryOverhead = 128;

}  // namespace

absl::Status DesignDocCache::Put(std::string_view id, std::string_view json) {
  Entry entry{.id = std::string(id), .bytes = id.size() + kEntryOverhead};
  // The functions are kept as they are read, and the reading stops as soon as they pass the
  // bound: a document of 5 million function names costs what the bound allows, not 5 million
  // entries (a parsed tree and every name cost 797 MB for 64 MB of such a line).
  bool over_bound = false;
  absl::Status read = ReadDesignFunctions(
      json, [&](const std::vector<std::string>& path, std::string_view name) {
        std::string joined = absl::StrJoin(path, absl::string_view(&kPathSeparator, 1));
        entry.bytes += joined.size() + name.size() + kEntryOverhead;
        if (entry.bytes > limits_.max_bytes) {
          over_bound = true;
          return false;
        }
        entry.functions.emplace(std::move(joined), name);  // a key given twice: the first
        return true;
      });
  if (!read.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("design document ", AbslView(id), " is ", read.message()));
  }
  if (over_bound) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "design document ", AbslView(id), " names more than ", limits_.max_bytes,
        " bytes of functions, the most a query-server session keeps for all its design "
        "documents; use shorter function names or fewer functions per design document"));
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
