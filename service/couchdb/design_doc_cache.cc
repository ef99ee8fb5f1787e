#include "service/couchdb/design_doc_cache.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "service/couchdb/absl_view.h"

namespace cnp::couchdb {
namespace {

// Function paths are at most three keys deep (views.<name>.map); anything deeper is data.
constexpr int kMaxFunctionDepth = 3;

void CollectStrings(const rapidjson::Value& value, const std::string& prefix, int depth,
                    char separator, std::map<std::string, std::string, std::less<>>& out) {
  for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
    std::string path = prefix;
    if (!path.empty()) path += separator;
    path.append(it->name.GetString(), it->name.GetStringLength());
    if (it->value.IsString()) {
      out.emplace(std::move(path), std::string(it->value.GetString(), it->value.GetStringLength()));
    } else if (it->value.IsObject() && depth + 1 < kMaxFunctionDepth) {
      CollectStrings(it->value, path, depth + 1, separator, out);
    }
  }
}

}  // namespace

absl::Status DesignDocCache::Put(std::string_view id, std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "design document ", AbslView(id), " is not valid JSON: ",
        rapidjson::GetParseError_En(doc.GetParseError()), " at byte ", doc.GetErrorOffset()));
  }
  if (!doc.IsObject()) {
    return absl::InvalidArgumentError(
        absl::StrCat("design document ", AbslView(id), " is not a JSON object"));
  }
  Functions functions;
  CollectStrings(doc, "", 0, kPathSeparator, functions);
  docs_.insert_or_assign(std::string(id), std::move(functions));
  return absl::OkStatus();
}

bool DesignDocCache::Contains(std::string_view id) const { return docs_.find(id) != docs_.end(); }

std::optional<std::string> DesignDocCache::FindFunction(
    std::string_view id, const std::vector<std::string>& path) const {
  auto doc = docs_.find(id);
  if (doc == docs_.end()) return std::nullopt;
  auto function = doc->second.find(absl::StrJoin(path, absl::string_view(&kPathSeparator, 1)));
  if (function == doc->second.end()) return std::nullopt;
  return function->second;
}

}  // namespace cnp::couchdb
