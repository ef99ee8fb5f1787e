#include "client/sync/registry_removal.h"

#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/sync/registry_pages.h"
#include "common/closest_name.h"
#include "common/couchdb/conflict_retry.h"
#include "common/couchdb/couch_root.h"
#include "common/couchdb/couch_url.h"
#include "common/couchdb/json.h"
#include "common/couchdb/registry_entry.h"

namespace cnp::client::sync {
namespace {

using ::cnp::couchdb::CouchClient;

std::string Field(const rapidjson::Value& doc, const char* name) {
  return std::string(::cnp::couchdb::StringMember(doc, name));
}

bool IsRemoved(const rapidjson::Value& doc) {
  auto it = doc.FindMember("removed");
  return it != doc.MemberEnd() && it->value.IsBool() && it->value.GetBool();
}

void EmitError(const RegistrySync::Emit& emit, const absl::Status& status,
               const std::string& registry, const std::string& entry) {
  v1::UploadEvent event;
  v1::UploadProblem& problem = *event.mutable_problem();
  problem.set_severity(v1::UploadProblem::ERROR);
  problem.set_message(::cnp::couchdb::RedactCredentials(status.message()));
  problem.set_database(registry);
  problem.set_design_doc(entry);
  emit(event);
}

// Marks one entry removed, re-reading it after a concurrent edit.
absl::Status MarkEntry(CouchClient& couch, const std::string& registry, const std::string& id,
                       bool dry_run, int max_conflict_retries, const RegistrySync::Emit& emit) {
  v1::UploadEvent event;
  absl::StatusOr<::cnp::couchdb::WriteResult> written = ::cnp::couchdb::WriteWithConflictRetry(
      couch,
      {.path = absl::StrCat(::cnp::couchdb::DatabasePath(registry), "/",
                            CouchClient::EscapeSegment(id)),
       .id = id,
       .database = registry,
       .activity = "marking it removed",
       .max_conflict_retries = max_conflict_retries,
       .must_exist = true,
       .writing = absl::StrCat("marking ", id, " removed in ", registry)},
      [&](const ::cnp::couchdb::StoredDocument& stored,
          int attempt) -> absl::StatusOr<::cnp::couchdb::WriteDecision> {
        event.Clear();
        v1::DesignDocOutcome& outcome = *event.mutable_outcome();
        outcome.set_database(registry);
        outcome.set_id(id);
        outcome.set_conflict_retries(attempt);
        if (IsRemoved(*stored.doc)) {
          outcome.set_action(v1::DesignDocOutcome::UNCHANGED);
          outcome.set_rev(stored.rev);
          return std::nullopt;
        }
        v1::FieldChange& change = *outcome.add_changes();
        change.set_path("removed");
        change.set_new_json("true");
        if (dry_run) {
          outcome.set_action(v1::DesignDocOutcome::WOULD_REMOVE);
          return std::nullopt;
        }
        rapidjson::Document entry;
        auto& a = entry.GetAllocator();
        entry.CopyFrom(*stored.doc, a);
        entry.RemoveMember("removed");
        entry.RemoveMember("removed_at_ms");
        entry.AddMember("removed", true, a);
        entry.AddMember("removed_at_ms", absl::ToUnixMillis(absl::Now()), a);
        return entry;
      });
  if (!written.ok()) return written.status();
  if (written->written) {
    v1::DesignDocOutcome& outcome = *event.mutable_outcome();
    outcome.set_rev(written->written_rev);
    outcome.set_action(v1::DesignDocOutcome::REMOVED);
  }
  emit(event);
  return absl::OkStatus();
}

}  // namespace

absl::Status RemoveRegistered(CouchClient& couch, const std::string& registry,
                              const std::vector<std::string>& names, bool dry_run,
                              int max_conflict_retries, const RegistrySync::Emit& emit) {
  if (max_conflict_retries <= 0) max_conflict_retries = kDefaultMaxConflictRetries;
  struct Entry {
    std::string id, name;
  };
  std::vector<Entry> entries;  // the registry's entries, in id order
  absl::Status failed = ForEachRegistryDocument(
      couch, registry, absl::StrCat("reading the registry \"", registry, "\""),
      [&](const rapidjson::Value& doc) {
        if (Field(doc, "type") != ::cnp::couchdb::kRegistryEntryType) return;
        entries.push_back({Field(doc, "_id"), Field(doc, "name")});
      });
  if (absl::IsNotFound(failed)) {
    // As cnp sync says it (registry_sync.cc): a URL that is not CouchDB's root first, since
    // every database looks missing under it.
    if (absl::Status root = ::cnp::couchdb::CheckCouchRoot(
            couch, "the registry database is named on the command line, after the URL");
        !root.ok()) {
      failed = root;
    } else {
      failed = absl::NotFoundError(absl::StrCat("the registry database \"", registry,
                                                "\" does not exist at ", couch.base_url(),
                                                ": nothing is registered there to remove"));
    }
  }
  if (!failed.ok()) {
    EmitError(emit, failed, registry, "");
    return failed;
  }
  absl::Status first_error;
  for (std::string name : names) {
    if (absl::StartsWith(name, "_design/")) name = name.substr(8);
    std::set<std::string> ids;  // sorted: the same order on every run
    for (const Entry& entry : entries) {
      if (entry.id == name || entry.name == name) ids.insert(entry.id);
    }
    if (ids.empty()) {
      std::vector<std::string> known;  // names and ids alike, as either is taken
      for (const Entry& entry : entries) {
        known.push_back(entry.name);
        known.push_back(entry.id);
      }
      const std::optional<std::string> meant = ClosestName(name, known);
      absl::Status missing = absl::NotFoundError(absl::StrCat(
          "the registry \"", registry, "\" has no entry for \"", name,
          "\" (a design document's name, or an entry's id such as towns@classification:account)",
          meant.has_value() ? absl::StrCat("; did you mean \"", *meant, "\"?") : ""));
      EmitError(emit, missing, registry, name);
      if (first_error.ok()) first_error = missing;
      continue;
    }
    for (const std::string& id : ids) {
      absl::Status status = MarkEntry(couch, registry, id, dry_run, max_conflict_retries, emit);
      if (status.ok()) continue;
      EmitError(emit, status, registry, id);
      if (first_error.ok()) first_error = status;
    }
  }
  return first_error;
}

}  // namespace cnp::client::sync
