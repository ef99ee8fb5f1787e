#include "common/couchdb/design_diff.h"

#include "absl/strings/str_cat.h"
#include "common/couchdb/json.h"

namespace cnp::couchdb {
namespace {

using Allocator = rapidjson::Document::AllocatorType;

constexpr absl::string_view kMergedSections[] = {"views", "filters", "shows", "lists",
                                                "updates"};
constexpr absl::string_view kIndexInputs[] = {"views", "options", "language"};

bool IsMergedSection(absl::string_view name) {
  for (absl::string_view s : kMergedSections) {
    if (s == name) return true;
  }
  return false;
}

absl::string_view Name(const rapidjson::Value& name) {
  return absl::string_view(name.GetString(), name.GetStringLength());
}

std::string Join(absl::string_view prefix, absl::string_view name) {
  return prefix.empty() ? std::string(name) : absl::StrCat(prefix, ".", name);
}

// Adds what `stored` has and `merged` lacks, one level deep into the sections.
void CarryOver(const rapidjson::Value& stored, rapidjson::Value& merged, absl::string_view prefix,
               bool drop, DesignDocPlan& plan, Allocator& alloc) {
  for (const auto& member : stored.GetObject()) {
    absl::string_view name = Name(member.name);
    if (prefix.empty() && (name == "_id" || name == "_rev")) continue;
    std::string path = Join(prefix, name);
    auto mine = merged.FindMember(member.name);
    if (mine == merged.MemberEnd()) {
      if (drop) {
        plan.dropped_fields.push_back(path);
      } else {
        plan.kept_fields.push_back(path);
        merged.AddMember(rapidjson::Value(member.name, alloc),
                         rapidjson::Value(member.value, alloc), alloc);
      }
    } else if (prefix.empty() && IsMergedSection(name) && member.value.IsObject() &&
               mine->value.IsObject()) {
      CarryOver(member.value, mine->value, path, drop, plan, alloc);
    }
  }
}

void Diff(const rapidjson::Value* before, const rapidjson::Value* after, const std::string& path,
          std::vector<v1::FieldChange>& changes) {
  if (before != nullptr && after != nullptr && before->IsObject() && after->IsObject()) {
    for (const auto& member : before->GetObject()) {
      if (path.empty() && Name(member.name) == "_rev") continue;
      auto other = after->FindMember(member.name);
      Diff(&member.value, other == after->MemberEnd() ? nullptr : &other->value,
           Join(path, Name(member.name)), changes);
    }
    for (const auto& member : after->GetObject()) {
      if (!before->HasMember(member.name)) {
        Diff(nullptr, &member.value, Join(path, Name(member.name)), changes);
      }
    }
    return;
  }
  if (before != nullptr && after != nullptr && JsonEqual(*before, *after)) return;
  v1::FieldChange& change = changes.emplace_back();
  change.set_path(path);
  if (before != nullptr) change.set_old_json(ToJson(*before));
  if (after != nullptr) change.set_new_json(ToJson(*after));
}

// An index input whose content the stored document already has, in another member order or
// number spelling, is written as stored: written as the YAML has it, it would change the
// index's signature and rebuild the index for no change of what it computes.
void KeepStoredIndexInputs(const rapidjson::Value& stored, rapidjson::Value& merged,
                           Allocator& alloc) {
  for (absl::string_view input : kIndexInputs) {
    rapidjson::Value key(rapidjson::StringRef(input.data(), input.size()));
    auto before = stored.FindMember(key);
    auto after = merged.FindMember(key);
    if (before == stored.MemberEnd() || after == merged.MemberEnd()) continue;
    if (JsonEqual(before->value, after->value)) after->value.CopyFrom(before->value, alloc);
  }
}

}  // namespace

bool SameIndexInputs(const rapidjson::Value& a, const rapidjson::Value& b) {
  for (absl::string_view input : kIndexInputs) {
    rapidjson::Value key(rapidjson::StringRef(input.data(), input.size()));
    auto in_a = a.FindMember(key);
    auto in_b = b.FindMember(key);
    bool has_a = in_a != a.MemberEnd();
    bool has_b = in_b != b.MemberEnd();
    if (has_a != has_b) return false;
    // CouchDB hashes the inputs as stored, so their text must be the same, not only their
    // content: views sharing a map are listed in the order of "views", option lists keep
    // their order, and 1 is not 1.0 (ddoc_to_mrst's term_to_binary).
    if (has_a && ToJson(in_a->value) != ToJson(in_b->value)) return false;
  }
  return true;
}

std::vector<std::string> ViewNames(const rapidjson::Value& doc) {
  std::vector<std::string> names;
  auto views = doc.FindMember("views");
  if (views == doc.MemberEnd() || !views->value.IsObject()) return names;
  for (const auto& view : views->value.GetObject()) {
    if (Name(view.name) != "lib") names.emplace_back(Name(view.name));
  }
  return names;
}

DesignDocPlan PlanDesignDoc(const rapidjson::Value& desired, const rapidjson::Value* stored,
                            bool drop_unknown_fields) {
  DesignDocPlan plan;
  Allocator& alloc = plan.document.GetAllocator();
  plan.document.CopyFrom(desired, alloc);
  if (stored != nullptr && stored->IsObject()) {
    CarryOver(*stored, plan.document, "", drop_unknown_fields, plan, alloc);
    KeepStoredIndexInputs(*stored, plan.document, alloc);
    Diff(stored, &plan.document, "", plan.changes);
    plan.index_rebuild = !SameIndexInputs(*stored, plan.document);
  } else {
    rapidjson::Value nothing(rapidjson::kObjectType);
    Diff(&nothing, &plan.document, "", plan.changes);
    plan.index_rebuild = true;
  }
  if (plan.index_rebuild) plan.rebuilt_views = ViewNames(plan.document);
  if (plan.rebuilt_views.empty()) plan.index_rebuild = false;
  return plan;
}

void DescribePlan(const DesignDocPlan& plan, v1::DesignDocOutcome& outcome) {
  for (const v1::FieldChange& change : plan.changes) *outcome.add_changes() = change;
  outcome.set_index_rebuild(plan.index_rebuild);
  for (const std::string& view : plan.rebuilt_views) outcome.add_rebuilt_views(view);
  for (const std::string& field : plan.kept_fields) outcome.add_kept_fields(field);
  for (const std::string& field : plan.dropped_fields) outcome.add_dropped_fields(field);
  outcome.set_document_json(ToJson(plan.document));
}

}  // namespace cnp::couchdb
