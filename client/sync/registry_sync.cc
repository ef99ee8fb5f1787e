#include "client/sync/registry_sync.h"

#include <algorithm>
#include <map>
#include <set>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/couchdb/builtin_reduces.h"
#include "common/couchdb/conflict_retry.h"
#include "common/couchdb/design_diff.h"
#include "common/couchdb/couch_root.h"
#include "common/couchdb/couch_url.h"
#include "common/couchdb/couchdb_languages.h"
#include "common/couchdb/json.h"
#include "common/couchdb/registry_entry.h"
#include "common/couchdb/target_databases.h"
#include "client/sync/ownership_record.h"
#include "client/sync/registry_pages.h"

namespace cnp::client::sync {
namespace {

using ::cnp::couchdb::CouchClient;
using ::cnp::couchdb::HttpError;
using ::cnp::couchdb::HttpResponse;
using ::cnp::couchdb::ParseJson;
using ::cnp::couchdb::ToJson;

// CouchDB as a whole failed: trying the next database would only repeat it.
bool AffectsEverything(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsUnauthenticated(status) ||
         absl::IsResourceExhausted(status);
}

// Of those, what no retry cures: the credentials refused, an answer over the size limit. A
// follower ends on them; CouchDB unreachable (a restart) is waited out.
bool EndsFollowing(const absl::Status& status) {
  return absl::IsUnauthenticated(status) || absl::IsResourceExhausted(status);
}

// What trying again cannot change (two registry entries disagreeing, no permission, CouchDB
// refusing the document itself: HTTP 400 invalid, 413 too large) waits for the next event or
// registry change instead.
bool WorthRetrying(const absl::Status& status) {
  const std::optional<int> http = ::cnp::couchdb::HttpStatusOf(status);
  return !status.ok() && !absl::IsFailedPrecondition(status) &&
         !absl::IsInvalidArgument(status) && !absl::IsPermissionDenied(status) && http != 400 &&
         http != 413;
}

// The next try of something that failed: after a delay that doubles from `first` up to `max`.
void Reschedule(std::optional<absl::Duration> previous, absl::Duration first, absl::Duration max,
                absl::Time& at, absl::Duration& delay) {
  delay = previous.has_value() ? std::min(*previous * 2, max) : first;
  at = absl::Now() + delay;
}

absl::string_view StringField(const rapidjson::Value& object, const char* name) {
  return ::cnp::couchdb::StringMember(object, name);
}

// What a named function looks like: "module.function|version", or a builtin reduce ("_sum").
// Not a name: anything with a space, a bracket, a brace, a quote or a control character in it,
// which is what code looks like. Non-ASCII letters pass (Python identifiers may hold them);
// the service resolves the name and applies its allowlist when it runs.
bool LooksLikeFunctionName(absl::string_view text) {
  if (text.empty()) return false;
  return std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '|' || c == '-' || c >= 0x80;
  });
}

// Anyone who may write the registry could otherwise have cnp sync put code in every database
// it targets: a JavaScript or Erlang design document runs in CouchDB itself. So an entry is
// used only when its language is not one of CouchDB's own (a missing language is JavaScript
// to CouchDB; the names in any case, and Mango's "query", as cnp upload refuses them) and
// every function it holds is a name.
absl::Status CheckNamedFunctions(const rapidjson::Value& design, absl::string_view entry_id) {
  const absl::string_view language = StringField(design, "language");
  if (::cnp::couchdb::IsCouchDbOwnLanguage(language)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "registry entry \"", entry_id, "\" holds a design document in language \"",
        language.empty() ? "javascript (none given)" : language, "\", which is ",
        ::cnp::couchdb::CouchDbOwnLanguageReason(language),
        "; cnp sync puts only named functions in place, so it skipped the entry (register it "
        "with cnp upload --register)"));
  }
  auto refuse = [&](absl::string_view where) {
    return absl::InvalidArgumentError(absl::StrCat(
        "registry entry \"", entry_id, "\" has ", where,
        " that is not a function name (module.function|version); skipped (register it with "
        "cnp upload --register)"));
  };
  auto check = [&](const rapidjson::Value& value, absl::string_view where) {
    return value.IsString() && LooksLikeFunctionName(absl::string_view(
                                   value.GetString(), value.GetStringLength()))
               ? absl::OkStatus()
               : refuse(where);
  };
  for (const char* section : {"shows", "lists", "updates", "filters"}) {
    auto it = design.FindMember(section);
    if (it == design.MemberEnd()) continue;
    if (!it->value.IsObject()) return refuse(section);
    for (const auto& function : it->value.GetObject()) {
      if (absl::Status s = check(function.value, absl::StrCat(section, ".",
                                                              ::cnp::couchdb::StringView(function.name)));
          !s.ok()) {
        return s;
      }
    }
  }
  for (const char* single : {"validate_doc_update", "rewrites"}) {
    auto it = design.FindMember(single);
    if (it == design.MemberEnd()) continue;
    if (std::string_view(single) == "rewrites" && it->value.IsArray()) continue;  // routes
    if (absl::Status s = check(it->value, single); !s.ok()) return s;
  }
  if (auto views = design.FindMember("views"); views != design.MemberEnd()) {
    if (!views->value.IsObject()) return refuse("views");
    for (const auto& view : views->value.GetObject()) {
      const std::string where = absl::StrCat("views.", ::cnp::couchdb::StringView(view.name));
      // views.lib is CommonJS code for JavaScript views; a named function needs none.
      if (!view.value.IsObject() || where == "views.lib") return refuse(where);
      for (const char* part : {"map", "reduce"}) {
        auto it = view.value.FindMember(part);
        if (it == view.value.MemberEnd()) continue;
        if (absl::Status s = check(it->value, absl::StrCat(where, ".", part)); !s.ok()) return s;
        // CouchDB would refuse such a reduce as the document is saved, in every database.
        const absl::string_view name = ::cnp::couchdb::StringView(it->value);
        if (part == std::string_view("reduce") && absl::StartsWith(name, "_") &&
            !::cnp::couchdb::IsBuiltinReduce(name)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "registry entry \"", entry_id, "\" has ", where, ".reduce \"", name, "\", which ",
              ::cnp::couchdb::NotABuiltinReduce(name),
              "; skipped (register it again with cnp upload --register)"));
        }
      }
    }
  }
  return absl::OkStatus();
}

// A registry entry, or why it is not one cnp sync can use.
absl::StatusOr<RegisteredDesignDoc> ReadEntry(const rapidjson::Value& doc) {
  RegisteredDesignDoc entry;
  entry.entry_id = std::string(StringField(doc, "_id"));
  entry.name = std::string(StringField(doc, "name"));
  auto target = doc.FindMember("target");
  auto design = doc.FindMember("design_document");
  if (entry.name.empty() || target == doc.MemberEnd() || !target->value.IsObject() ||
      design == doc.MemberEnd() || !design->value.IsObject() ||
      StringField(design->value, "_id") != absl::StrCat("_design/", entry.name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "registry entry \"", entry.entry_id,
        "\" lacks a name, a target or a design_document with the matching _id; skipped "
        "(register it again with cnp upload --register)"));
  }
  // CouchDB's own fields are instructions, not content: "_deleted" would delete the design
  // document in every target (a hand-made one too), "_attachments" would serve HTML from
  // CouchDB's origin. cnp upload --register writes none; "_rev" (the registry's copy of a
  // revision) means nothing in a target and is dropped below.
  for (const auto& field : design->value.GetObject()) {
    const absl::string_view name = ::cnp::couchdb::StringView(field.name);
    if (absl::StartsWith(name, "_") && name != "_id" && name != "_rev") {
      return absl::InvalidArgumentError(absl::StrCat(
          "registry entry \"", entry.entry_id, "\" has a design document with the field \"",
          name, "\", one of CouchDB's own (cnp sync writes only _id and the design document's "
          "content); skipped (register it again with cnp upload --register)"));
    }
  }
  if (absl::Status named = CheckNamedFunctions(design->value, entry.entry_id); !named.ok()) {
    return named;
  }
  // Read loosely, a list that is not one would target nothing and look like a pattern that
  // matches no database, and a "removed" that is not true or false would keep or take out
  // design documents by accident.
  auto databases = target->value.FindMember("databases");
  const bool databases_listed =
      databases != target->value.MemberEnd() && databases->value.IsArray() &&
      std::all_of(databases->value.Begin(), databases->value.End(),
                  [](const rapidjson::Value& db) { return db.IsString(); });
  auto removed = doc.FindMember("removed");
  if (!databases_listed || (removed != doc.MemberEnd() && !removed->value.IsBool())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "registry entry \"", entry.entry_id, "\" lacks ",
        databases_listed ? "a \"removed\" that is true or false"
                         : "a target.databases that is a list of database names and patterns",
        "; skipped (register it again with cnp upload --register)"));
  }
  for (const auto& db : databases->value.GetArray()) {
    entry.databases.emplace_back(db.GetString(), db.GetStringLength());
  }
  entry.design_document.CopyFrom(design->value, entry.design_document.GetAllocator());
  entry.design_document.RemoveMember("_rev");
  entry.removed = removed != doc.MemberEnd() && removed->value.GetBool();
  return entry;
}

bool Targets(const RegisteredDesignDoc& entry, const std::string& database) {
  for (const std::string& pattern : entry.databases) {
    if (::cnp::couchdb::IsDatabasePattern(pattern)) {
      if (!::cnp::couchdb::MatchDatabases(pattern, {database}).empty()) return true;
    } else if (pattern == database) {
      return true;
    }
  }
  return false;
}

}  // namespace

RegistrySync::RegistrySync(CouchClient& couch, std::string registry, Options options, Emit emit)
    : couch_(couch),
      registry_(std::move(registry)),
      options_(std::move(options)),
      emit_(std::move(emit)) {}

void RegistrySync::EmitProblem(v1::UploadProblem::Severity severity, const absl::Status& status,
                               const std::string& database, const std::string& design_doc) {
  v1::UploadEvent event;
  v1::UploadProblem& problem = *event.mutable_problem();
  problem.set_severity(severity);
  problem.set_message(::cnp::couchdb::RedactCredentials(status.message()));
  problem.set_database(database);
  problem.set_design_doc(design_doc);
  emit_(event);
}

absl::Status RegistrySync::LoadRegistry() {
  std::vector<RegisteredDesignDoc> entries;
  absl::Status read = ForEachRegistryDocument(
      couch_, registry_, absl::StrCat("reading the registry \"", registry_, "\""),
      [&](const rapidjson::Value& doc) {
        if (StringField(doc, "type") != ::cnp::couchdb::kRegistryEntryType) {
          // A document put in by hand, that reads as an entry to its author: said once, rather
          // than ignored without a word (found by a probe). The registry's own design
          // documents are CouchDB's business.
          const std::string id(StringField(doc, "_id"));
          if (!absl::StartsWith(id, "_design/") && warned_untyped_.insert(id).second) {
            EmitProblem(v1::UploadProblem::WARNING,
                        absl::InvalidArgumentError(absl::StrCat(
                            "document \"", id, "\" is no registered design document (it has no "
                            "\"type\": \"", ::cnp::couchdb::kRegistryEntryType,
                            "\"); ignored (cnp upload --register writes entries)")),
                        registry_, "");
          }
          return;
        }
        absl::StatusOr<RegisteredDesignDoc> entry = ReadEntry(doc);
        if (!entry.ok()) {
          EmitProblem(v1::UploadProblem::WARNING, entry.status(), registry_, "");
          return;
        }
        if (!options_.allow_system_databases && !KeepOffSystemTargets(*entry)) return;
        entries.push_back(*std::move(entry));
      });
  if (absl::IsNotFound(read)) {
    // A database's URL given as CouchDB's, or a URL that is not CouchDB at all: every
    // database looks missing under it, and the registry first (cnp upload and cnp derive ask
    // GET / first; a missing registry is the first sign here).
    if (absl::Status root = ::cnp::couchdb::CheckCouchRoot(
            couch_, "the registry database is named on the command line, after the URL");
        !root.ok()) {
      return root;
    }
    return absl::NotFoundError(absl::StrCat(
        "the registry database \"", registry_, "\" does not exist at ", couch_.base_url(),
        "; create it (PUT ", ::cnp::couchdb::DatabasePath(registry_),
        "), then register design documents in it: cnp upload --register ", registry_,
        " COUCHDB_URL FILE.yml"));
  }
  if (!read.ok()) return read;
  entries_ = std::move(entries);
  if (entries_.empty()) {
    EmitProblem(v1::UploadProblem::WARNING,
                absl::NotFoundError(absl::StrCat("the registry \"", registry_,
                                                 "\" holds no registered design documents")),
                registry_, "");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> RegistrySync::ListDatabases() {
  absl::StatusOr<HttpResponse> response = couch_.Get("/_all_dbs");
  if (!response.ok()) return response.status();
  if (response->status != 200) {
    return HttpError(*response, "listing the databases", couch_.base_url());
  }
  absl::StatusOr<rapidjson::Document> list = ParseJson(response->body);
  if (!list.ok() || !list->IsArray()) {
    return absl::UnknownError(
        absl::StrCat("CouchDB at ", couch_.base_url(), " sent a malformed _all_dbs"));
  }
  std::vector<std::string> names;
  for (const auto& name : list->GetArray()) {
    if (name.IsString()) names.emplace_back(name.GetString(), name.GetStringLength());
  }
  return names;
}

bool RegistrySync::KeepOffSystemTargets(RegisteredDesignDoc& entry) {
  const std::string what = absl::StrCat("registry entry \"", entry.entry_id, "\"");
  auto warn = [&](const absl::Status& refused, absl::string_view outcome) {
    EmitProblem(v1::UploadProblem::WARNING,
                absl::Status(refused.code(), absl::StrCat(refused.message(), "; ", outcome)),
                registry_, "");
  };
  if (absl::Status refused = ::cnp::couchdb::CheckNotSystemTarget(what, entry.name, "");
      !refused.ok()) {
    warn(refused, "skipped the entry");
    return false;
  }
  std::erase_if(entry.databases, [&](const std::string& pattern) {
    absl::Status refused = ::cnp::couchdb::CheckNotSystemTarget(what, "", pattern);
    if (!refused.ok()) warn(refused, "skipped that target");
    return !refused.ok();
  });
  return true;
}

std::vector<const RegisteredDesignDoc*> RegistrySync::Matching(const std::string& database,
                                                               bool removed) const {
  std::vector<const RegisteredDesignDoc*> matching;
  if (database == registry_) return matching;  // the registry holds entries, not the designs
  // Whatever an entry says (KeepOffSystemTargets dropped such targets already).
  if (!options_.allow_system_databases && ::cnp::couchdb::IsSystemDatabase(database)) {
    return matching;
  }
  for (const RegisteredDesignDoc& entry : entries_) {
    if (entry.removed == removed && Targets(entry, database)) matching.push_back(&entry);
  }
  return matching;
}

bool RegistrySync::Stopping() const {
  return options_.stop_requested && options_.stop_requested();
}

absl::Status RegistrySync::SyncAll() {
  pass_finished_ = false;
  if (absl::Status loaded = LoadRegistry(); !loaded.ok()) {
    EmitProblem(v1::UploadProblem::ERROR, loaded, registry_, "");
    return loaded;
  }
  absl::StatusOr<std::vector<std::string>> databases = ListDatabases();
  if (!databases.ok()) {
    EmitProblem(v1::UploadProblem::ERROR, databases.status(), "", "");
    return databases.status();
  }
  ReportUnmatched(*databases);
  absl::Status first_error;
  for (const std::string& database : *databases) {
    if (Stopping()) return absl::CancelledError("stopped before the pass was over");
    absl::Status status = SyncDatabase(database, /*full_pass=*/true);
    if (AffectsEverything(status)) return status;
    if (!status.ok() && first_error.ok()) first_error = status;
    // While following, a database that failed now is tried again like one that failed on its
    // event; --once reports it in the exit status and never looks at the retries.
    ScheduleRetry(database, status, /*full_pass=*/true);
  }
  pass_finished_ = true;
  return first_error;
}

void RegistrySync::ReportUnmatched(const std::vector<std::string>& databases) {
  // A typo in a pattern or a classification would otherwise look like success: nothing to do.
  std::map<std::string, std::string> still_warned;
  unmatched_entries_ = 0;
  for (const RegisteredDesignDoc& entry : entries_) {
    if (entry.removed) continue;  // a tombstone that matches nothing has nothing to take out
    const bool matches = std::any_of(databases.begin(), databases.end(),
                                     [&](const std::string& database) {
                                       return database != registry_ && Targets(entry, database);
                                     });
    if (matches) continue;
    ++unmatched_entries_;
    std::string identity = absl::StrCat(absl::StrJoin(entry.databases, "\n"), "\n",
                                        ToJson(entry.design_document));
    auto warned = warned_unmatched_.find(entry.entry_id);
    if (warned == warned_unmatched_.end() || warned->second != identity) {
      const std::string targets = absl::StrJoin(
          entry.databases, ", ",
          [](std::string* out, const std::string& target) { absl::StrAppend(out, "\"", target, "\""); });
      EmitProblem(v1::UploadProblem::WARNING,
                  absl::NotFoundError(absl::StrCat(
                      "registry entry \"", entry.entry_id, "\" matches no database (",
                      entry.databases.empty() ? "it names none" : targets,
                      "): _design/", entry.name, " was written nowhere for it (a database "
                      "created later that it targets gets it while cnp sync follows, or on "
                      "the next pass)")),
                  registry_, "");  // about the registry's entry: marked [REGISTRY]
    }
    still_warned.emplace(entry.entry_id, std::move(identity));
  }
  // An entry that matched, or left the registry, is warned of afresh if it stops matching.
  warned_unmatched_ = std::move(still_warned);
}

absl::Status RegistrySync::SyncDatabase(const std::string& database, bool full_pass) {
  // Two entries may put the same design document in one database (a name and a glob that
  // both match); the same content is fine, different content is the registry's conflict.
  std::map<std::string, std::vector<const RegisteredDesignDoc*>> by_name;
  for (const RegisteredDesignDoc* entry : Matching(database)) by_name[entry->name].push_back(entry);
  absl::Status first_error;
  for (const auto& [name, entries] : by_name) {
    const RegisteredDesignDoc* conflicting = nullptr;
    for (const RegisteredDesignDoc* other : entries) {
      if (!::cnp::couchdb::JsonEqual(other->design_document, entries.front()->design_document)) {
        conflicting = other;
        break;
      }
    }
    absl::Status status;
    if (conflicting != nullptr) {
      status = absl::FailedPreconditionError(absl::StrCat(
          "the registry entries \"", entries.front()->entry_id, "\" and \"",
          conflicting->entry_id, "\" both target ", database, " with different _design/", name,
          "; left as it is (make their targets disjoint and register again)"));
    } else {
      status = WriteDesignDoc(database, *entries.front());
    }
    if (status.ok()) continue;
    if (absl::IsNotFound(status) && DatabaseIsGone(database)) return GoneDuringPass(database);
    EmitProblem(v1::UploadProblem::ERROR, status, database, absl::StrCat("_design/", name));
    if (first_error.ok()) first_error = status;
    if (AffectsEverything(status)) return status;
  }
  // Removed entries take their design document out, unless a live entry still puts it here.
  std::map<std::string, const RegisteredDesignDoc*> removed;
  for (const RegisteredDesignDoc* entry : Matching(database, /*removed=*/true)) {
    if (by_name.count(entry->name) == 0) removed.emplace(entry->name, entry);
  }
  std::set<std::string> handled;
  for (const auto& [name, entries] : by_name) handled.insert(name);
  for (const auto& [name, entry] : removed) {
    handled.insert(name);
    absl::Status status = RemoveDesignDoc(database, *entry, "is removed");
    if (status.ok()) continue;
    if (absl::IsNotFound(status) && DatabaseIsGone(database)) return GoneDuringPass(database);
    EmitProblem(v1::UploadProblem::ERROR, status, database, absl::StrCat("_design/", name));
    if (first_error.ok()) first_error = status;
    if (AffectsEverything(status)) return status;
  }
  // Only a registry change makes copies untargeted, and each one is followed by a full pass:
  // a database's own event need not pay for looking.
  if (!full_pass) return first_error;
  // (It reports its errors itself.)
  if (absl::Status status = RemoveUntargeted(database, handled); !status.ok()) {
    if (first_error.ok()) first_error = status;
  }
  return first_error;
}

bool RegistrySync::DatabaseIsGone(const std::string& database) {
  absl::StatusOr<::cnp::couchdb::HttpResponse> got =
      couch_.Get(::cnp::couchdb::DatabasePath(database));
  return got.ok() && got->status == 404;
}

absl::Status RegistrySync::GoneDuringPass(const std::string& database) {
  // Tenants' databases come and go: one deleted while its design documents were being written
  // needs none, and is no failure of the pass (a cron --once would raise an alarm for it).
  EmitProblem(v1::UploadProblem::WARNING,
              absl::NotFoundError(absl::StrCat(database, " was deleted while cnp sync wrote its "
                                               "design documents; nothing left to do there")),
              database, "");
  return absl::OkStatus();
}

std::set<std::string> RegistrySync::RegisteredNames() const {
  std::set<std::string> names;
  for (const RegisteredDesignDoc& entry : entries_) names.insert(entry.name);
  return names;
}

absl::Status RegistrySync::RemoveUntargeted(const std::string& database,
                                            const std::set<std::string>& handled) {
  // As Matching: the registry, and system databases unless allowed, are never targets.
  if (database == registry_ ||
      (!options_.allow_system_databases && ::cnp::couchdb::IsSystemDatabase(database))) {
    return absl::OkStatus();
  }
  // Only names the registry still has an entry for: an entry deleted from the registry by
  // hand (or a registry emptied by mistake) takes nothing out.
  std::vector<std::string> candidates;
  for (const std::string& name : RegisteredNames()) {
    if (handled.count(name) == 0) candidates.push_back(name);
  }
  // A failure is reported here; the database deleted meanwhile is a warning, and OK.
  const auto failed = [&](const absl::Status& status, const std::string& name) {
    if (absl::IsNotFound(status) && DatabaseIsGone(database)) return GoneDuringPass(database);
    EmitProblem(v1::UploadProblem::ERROR, status, database,
                name.empty() ? "" : absl::StrCat("_design/", name));
    return status;
  };
  absl::StatusOr<std::vector<std::string>> recorded =
      NamesWithOwnershipRecords(couch_, database, candidates);
  if (!recorded.ok()) return failed(recorded.status(), "");
  absl::Status first_error;
  for (const std::string& name : *recorded) {
    absl::StatusOr<std::optional<OwnershipRecord>> record =
        ReadOwnershipRecord(couch_, database, name);
    if (!record.ok()) return failed(record.status(), name);
    if (!record->has_value() || (*record)->registry != registry_) continue;
    auto entry = std::find_if(entries_.begin(), entries_.end(), [&](const RegisteredDesignDoc& e) {
      return e.entry_id == (*record)->entry && e.name == name;
    });
    // An entry the registry no longer holds (or a malformed one, skipped with a warning) says
    // nothing about where its design document belongs.
    if (entry == entries_.end()) continue;
    absl::Status status = RemoveDesignDoc(
        database, *entry, absl::StrCat("no longer targets ", database));
    if (status.ok()) continue;
    status = failed(status, name);
    if (status.ok()) return status;  // the database is gone
    if (first_error.ok()) first_error = status;
    if (AffectsEverything(status)) return status;
  }
  return first_error;
}

absl::Status RegistrySync::RemoveDesignDoc(const std::string& database,
                                           const RegisteredDesignDoc& entry,
                                           const std::string& why_it_goes) {
  const std::string id = absl::StrCat("_design/", entry.name);
  const std::string path = ::cnp::couchdb::DesignDocPath(database, entry.name);
  // With its conflicting revisions: deleting the one cnp sync wrote makes one of them the
  // design document, which must not be reported as removed with nothing more said.
  absl::StatusOr<HttpResponse> got = couch_.Get(absl::StrCat(path, "?conflicts=true"));
  if (!got.ok()) return got.status();
  if (got->status == 404) return absl::OkStatus();  // not there (any more)
  if (got->status != 200) {
    return HttpError(*got, absl::StrCat("reading ", id, " from ", database), couch_.base_url());
  }
  absl::StatusOr<rapidjson::Document> doc = ParseJson(got->body);
  if (!doc.ok() || !doc->IsObject()) {
    return absl::UnknownError(absl::StrCat("CouchDB sent a malformed ", id, " from ", database));
  }
  const std::string rev(StringField(*doc, "_rev"));
  absl::StatusOr<std::optional<OwnershipRecord>> owner =
      ReadOwnershipRecord(couch_, database, entry.name);
  if (!owner.ok()) return owner.status();
  const std::string left_in_place = "left in place; delete it yourself if it should go";
  if (!owner->has_value() || (*owner)->registry != registry_) {
    // Two different stories: nobody recorded writing it, or cnp sync from another registry did.
    const std::string why =
        !owner->has_value()
            ? absl::StrCat("no _local/cnp-sync:", entry.name, " record")
            : absl::StrCat("its _local/cnp-sync:", entry.name, " record says cnp sync from ",
                           (*owner)->registry, " wrote it");
    EmitProblem(v1::UploadProblem::WARNING,
                absl::FailedPreconditionError(absl::StrCat(
                    "the registry entry \"", entry.entry_id, "\" ", why_it_goes, ", but ", id,
                    " in ", database, " was not put there by cnp sync from ", registry_, " (",
                    why, "): ", left_in_place)),
                database, id);
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> vouched =
      VouchedRevision(couch_, database, entry.name, **owner, rev);
  if (!vouched.ok()) return vouched.status();
  if (*vouched != rev) {
    EmitProblem(v1::UploadProblem::WARNING,
                absl::FailedPreconditionError(absl::StrCat(
                    "the registry entry \"", entry.entry_id, "\" ", why_it_goes, ", but ", id,
                    " in ", database, " was changed by someone else after cnp sync wrote it (rev ",
                    vouched->empty() ? "none" : *vouched, ", now ", rev,
                    "; a copy someone else changed stays theirs to remove, even if cnp sync has "
                    "written the registry's content over it since): ", left_in_place)),
                database, id);
    return absl::OkStatus();
  }
  v1::UploadEvent event;
  v1::DesignDocOutcome& outcome = *event.mutable_outcome();
  outcome.set_database(database);
  outcome.set_id(id);
  if (options_.dry_run) {
    outcome.set_action(v1::DesignDocOutcome::WOULD_REMOVE);
    emit_(event);
    return absl::OkStatus();
  }
  absl::StatusOr<HttpResponse> deleted =
      couch_.Delete(absl::StrCat(path, "?rev=", CouchClient::EscapeSegment(rev)));
  if (!deleted.ok()) return deleted.status();
  if (deleted->status == 409) {
    EmitProblem(v1::UploadProblem::WARNING,
                absl::AbortedError(absl::StrCat(id, " in ", database,
                                                " was changed while cnp sync was removing it; "
                                                "left in place")),
                database, id);
    return absl::OkStatus();
  }
  if (deleted->status != 200 && deleted->status != 202) {
    return HttpError(*deleted, absl::StrCat("deleting ", id, " from ", database),
                     couch_.base_url());
  }
  absl::StatusOr<rapidjson::Document> answer = ParseJson(deleted->body);
  if (answer.ok()) outcome.set_rev(std::string(StringField(*answer, "rev")));
  outcome.set_action(v1::DesignDocOutcome::REMOVED);
  emit_(event);
  if (auto conflicts = doc->FindMember("_conflicts");
      conflicts != doc->MemberEnd() && conflicts->value.IsArray() && !conflicts->value.Empty()) {
    EmitProblem(v1::UploadProblem::WARNING,
                absl::FailedPreconditionError(absl::StrCat(
                    id, " in ", database, " also had ", conflicts->value.Size(),
                    " conflicting revision(s) (replication?), which this database's record does "
                    "not vouch for; one of them is ", id, " now: ", left_in_place)),
                database, id);
  }
  // The record has done its work; a failure to delete it only leaves a stale record behind.
  DeleteOwnershipRecord(couch_, database, entry.name, **owner);
  return absl::OkStatus();
}

absl::Status RegistrySync::WriteDesignDoc(const std::string& database,
                                          const RegisteredDesignDoc& entry) {
  // Another cnp sync (a cron --once beside a follower, another host) may announce its write of
  // the same document between this one's reading of the record and its announcement: that is a
  // conflict on the record, after which both are read again, as a conflict on the design
  // document is, rather than the database failing.
  for (int conflicts = 0;; ++conflicts) {
    bool record_changed = false;
    absl::Status written = WriteDesignDocOnce(database, entry, record_changed);
    if (!record_changed || conflicts >= options_.max_conflict_retries) return written;
    EmitProblem(v1::UploadProblem::WARNING,
                absl::AbortedError(absl::StrCat(
                    "_local/cnp-sync:", entry.name, " in ", database,
                    " changed concurrently (another cnp sync?); reading it and _design/",
                    entry.name, " again")),
                database, absl::StrCat("_design/", entry.name));
  }
}

absl::Status RegistrySync::WriteDesignDocOnce(const std::string& database,
                                              const RegisteredDesignDoc& entry,
                                              bool& record_changed) {
  const std::string id = absl::StrCat("_design/", entry.name);
  const std::string path = ::cnp::couchdb::DesignDocPath(database, entry.name);
  // Ownership: a design document cnp sync created is its own, and stays so while cnp sync is
  // the only one to change it; one it merely updated (hand-made before) never becomes so.
  // Each write of its own is announced in the record first (ownership_record.h), so that no
  // interruption between the two writes leaves it disowned.
  absl::StatusOr<std::optional<OwnershipRecord>> owner =
      ReadOwnershipRecord(couch_, database, entry.name);
  if (!owner.ok()) return owner.status();
  OwnershipRecord record = owner->has_value() ? std::move(**owner) : OwnershipRecord{};
  const bool recorded_here = owner->has_value() && record.registry == registry_;
  // Whether the stored design document (rev `stored_rev`) is this registry's sync's.
  const auto ours = [&](const std::string& stored_rev) -> absl::StatusOr<bool> {
    if (!recorded_here) return false;
    absl::StatusOr<std::string> vouched =
        VouchedRevision(couch_, database, entry.name, record, stored_rev);
    if (!vouched.ok()) return vouched.status();
    return *vouched == stored_rev;
  };
  bool announced = false;
  bool settle_unchanged = false;
  v1::UploadEvent event;
  absl::StatusOr<::cnp::couchdb::WriteResult> written = ::cnp::couchdb::WriteWithConflictRetry(
      couch_,
      {.path = path,
       .id = id,
       .database = database,
       .activity = "syncing",
       .max_conflict_retries = options_.max_conflict_retries,
       .with_conflicts = true,
       .on_retry =
           [&](const std::string& message) {
             EmitProblem(v1::UploadProblem::WARNING, absl::AbortedError(message), database, id);
           }},
      [&](const ::cnp::couchdb::StoredDocument& stored,
          int attempt) -> absl::StatusOr<::cnp::couchdb::WriteDecision> {
        if (attempt == 0 && !stored.conflicts.empty()) {
          EmitProblem(v1::UploadProblem::WARNING,
                      absl::FailedPreconditionError(absl::StrCat(
                          id, " in ", database, " has ", stored.conflicts.size(),
                          " conflicting revision(s) (replication?), left as they are: CouchDB "
                          "serves one of them again if the winning revision is deleted; delete "
                          "them (DELETE ", path, "?rev=", stored.conflicts.front(),
                          stored.conflicts.size() > 1 ? ", and the others" : "",
                          ")")),
                      database, id);
        }
        ::cnp::couchdb::DesignDocPlan plan = ::cnp::couchdb::PlanDesignDoc(
            entry.design_document, stored.doc ? &*stored.doc : nullptr,
            options_.drop_unknown_fields);
        event.Clear();
        announced = false;
        settle_unchanged = false;
        v1::DesignDocOutcome& outcome = *event.mutable_outcome();
        outcome.set_database(database);
        outcome.set_id(id);
        ::cnp::couchdb::DescribePlan(plan, outcome);
        outcome.set_conflict_retries(attempt);
        if (plan.changes.empty()) {
          outcome.set_action(v1::DesignDocOutcome::UNCHANGED);
          outcome.set_rev(stored.rev);
          // A write announced and made, whose record was never settled (stopped in between):
          // settled now, or a removal would leave it in place as someone else's.
          if (!options_.dry_run && recorded_here && record.writing) {
            absl::StatusOr<bool> mine = ours(stored.rev);
            if (!mine.ok()) return mine.status();
            settle_unchanged = *mine;
          }
          return std::nullopt;
        }
        if (options_.dry_run) {
          outcome.set_action(stored.doc ? v1::DesignDocOutcome::WOULD_UPDATE
                                        : v1::DesignDocOutcome::WOULD_CREATE);
          return std::nullopt;
        }
        bool claim = !stored.doc;
        if (!claim) {
          absl::StatusOr<bool> mine = ours(stored.rev);
          if (!mine.ok()) return mine.status();
          claim = *mine;
        }
        if (claim) {
          record.registry = registry_;
          record.entry = entry.entry_id;
          record.design_rev = stored.doc ? stored.rev : "";
          record.writing.emplace();
          record.writing->CopyFrom(plan.document, record.writing->GetAllocator());
          if (absl::Status announcing = WriteOwnershipRecord(couch_, database, entry.name, record);
              !announcing.ok()) {
            record_changed = absl::IsAborted(announcing);
            return absl::Status(announcing.code(),
                                absl::StrCat(announcing.message(), "; ", id, " left unwritten "
                                             "so that it does not become a copy cnp sync cannot "
                                             "tell from a hand-made one"));
          }
          announced = true;
        }
        return std::move(plan.document);
      });
  if (!written.ok()) return written.status();
  v1::DesignDocOutcome& outcome = *event.mutable_outcome();
  if (written->written) {
    outcome.set_rev(written->written_rev);
    outcome.set_action(written->existed ? v1::DesignDocOutcome::UPDATED
                                        : v1::DesignDocOutcome::CREATED);
  }
  emit_(event);
  if (!announced && !settle_unchanged) return absl::OkStatus();
  record.design_rev = written->written ? written->written_rev : written->stored_rev;
  record.writing.reset();
  if (absl::Status settled = WriteOwnershipRecord(couch_, database, entry.name, record);
      !settled.ok()) {
    EmitProblem(v1::UploadProblem::WARNING,
                absl::Status(settled.code(),
                             absl::StrCat(settled.message(),
                                          "; the record still announces this write, so cnp "
                                          "sync still knows the design document for its own "
                                          "and settles the record on its next pass")),
                database, id);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RegistrySync::CurrentUpdateSeq() {
  absl::StatusOr<HttpResponse> response = couch_.Get("/_db_updates?since=now");
  if (!response.ok()) return response.status();
  if (response->status == 400 || response->status == 404 || response->status == 405) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CouchDB at ", couch_.base_url(), " offers no _db_updates (HTTP ", response->status,
        "), so databases created later cannot be followed; run cnp sync --once (from cron, "
        "say) instead"));
  }
  if (response->status != 200) {
    return HttpError(*response, "reading _db_updates (following it needs a server admin)",
                     couch_.base_url());
  }
  absl::StatusOr<rapidjson::Document> doc = ParseJson(response->body);
  if (!doc.ok() || !doc->IsObject() || !doc->HasMember("last_seq")) {
    return absl::UnknownError(
        absl::StrCat("CouchDB at ", couch_.base_url(), " sent a malformed _db_updates"));
  }
  const rapidjson::Value& seq = (*doc)["last_seq"];
  return seq.IsString() ? std::string(seq.GetString(), seq.GetStringLength()) : ToJson(seq);
}

absl::Status RegistrySync::CheckDatabase(const std::string& database, bool just_created) {
  last_checked_[database] = absl::Now();
  recheck_at_.erase(database);
  const auto retry = retry_.find(database);
  const bool full_pass = retry != retry_.end() && retry->second.full_pass;
  just_created = just_created || (retry != retry_.end() && retry->second.just_created);
  if (just_created && DatabaseIsGone(database)) {
    // Announced, and not served yet: a "deleted" event, should it come, ends the retries; a
    // database still not served once they are --max-retry-delay apart (its deletion missed)
    // waits, as any database does, for an event that names it.
    if (retry != retry_.end() && retry->second.delay >= options_.max_retry_delay) {
      retry_.erase(retry);
      EmitProblem(v1::UploadProblem::WARNING,
                  absl::NotFoundError(absl::StrCat(
                      database, " was announced created by _db_updates but is still not served; "
                      "left until an event names it")),
                  database, "");
      return absl::OkStatus();
    }
    ScheduleRetry(database, absl::UnavailableError("not served yet"), full_pass);
    auto& again = retry_[database];
    again.just_created = true;
    EmitProblem(v1::UploadProblem::WARNING,
                absl::NotFoundError(absl::StrCat(
                    database, " was announced created by _db_updates but is not served yet; "
                    "trying again in ", absl::FormatDuration(again.delay))),
                database, "");
    return absl::OkStatus();
  }
  absl::Status status = SyncDatabase(database, full_pass);
  ScheduleRetry(database, status, full_pass);
  return AffectsEverything(status) ? status : absl::OkStatus();
}

void RegistrySync::ScheduleRetry(const std::string& database, const absl::Status& status,
                                 bool full_pass) {
  if (!WorthRetrying(status)) {
    retry_.erase(database);
    return;
  }
  auto [it, first] = retry_.try_emplace(database);
  Reschedule(first ? std::nullopt : std::optional(it->second.delay), options_.first_retry_delay,
             options_.max_retry_delay, it->second.at, it->second.delay);
  it->second.full_pass = it->second.full_pass || full_pass;
}

absl::Status RegistrySync::PassWhileFollowing() {
  absl::Status status = SyncAll();
  // A database that failed in a finished pass has its own retry; a registry (or anything)
  // not found waits for its creation, an event of its own.
  if (pass_finished_ || Stopping() || !WorthRetrying(status) || absl::IsNotFound(status)) {
    pass_retry_.reset();
  } else {
    if (EndsFollowing(status)) return status;
    Retry next;
    Reschedule(pass_retry_.has_value() ? std::optional(pass_retry_->delay) : std::nullopt,
               options_.first_retry_delay, options_.max_retry_delay, next.at, next.delay);
    pass_retry_ = next;
    EmitProblem(v1::UploadProblem::WARNING,
                absl::Status(status.code(),
                             absl::StrCat("the pass over every database did not finish (",
                                          status.message(), "); it is done again in ",
                                          absl::FormatDuration(next.delay))),
                "", "");
  }
  return absl::OkStatus();
}

absl::Time RegistrySync::NextDue() const {
  absl::Time next = pass_retry_.has_value() ? pass_retry_->at : absl::InfiniteFuture();
  for (const auto& [database, at] : recheck_at_) next = std::min(next, at);
  for (const auto& [database, retry] : retry_) next = std::min(next, retry.at);
  return next;
}

absl::Status RegistrySync::CheckDue() {
  const absl::Time now = absl::Now();
  // A pass goes through every database: what was due is done with it.
  if (pass_retry_.has_value() && pass_retry_->at <= now) return PassWhileFollowing();
  std::set<std::string> due;
  for (const auto& [database, at] : recheck_at_) {
    if (at <= now) due.insert(database);
  }
  for (const auto& [database, retry] : retry_) {
    if (retry.at <= now) due.insert(database);
  }
  for (const std::string& database : due) {
    if (Stopping()) return absl::OkStatus();
    // CouchDB gone: the rest stay due, for the next time round.
    if (absl::Status status = CheckDatabase(database); !status.ok()) {
      return EndsFollowing(status) ? status : absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

absl::Status RegistrySync::Follow(const std::function<bool()>& keep_going) {
  // Taken before the first pass: a database created during it is then seen twice at worst,
  // never missed.
  absl::StatusOr<std::string> since = CurrentUpdateSeq();
  if (!since.ok()) {
    EmitProblem(v1::UploadProblem::ERROR, since.status(), "", "");
    return since.status();
  }
  if (absl::Status first = PassWhileFollowing(); !first.ok()) return first;
  Note("the first pass is done; following _db_updates, so that databases created from now on "
       "get their design documents too");
  const int64_t timeout_ms = absl::ToInt64Milliseconds(options_.poll_timeout);
  absl::Duration retry_delay = options_.first_retry_delay;
  absl::Time failing_since = absl::InfiniteFuture();  // the first poll of a run that failed
  bool warned_no_last_seq = false;
  // Sleeps until `until` unless following is to stop; false then.
  const auto wait_until = [&](absl::Time until) {
    for (absl::Time now = absl::Now(); now < until; now = absl::Now()) {
      if (!keep_going() || Stopping()) return false;
      absl::SleepFor(std::min(until - now, absl::Milliseconds(100)));
    }
    return true;
  };
  while (keep_going() && !Stopping()) {
    if (absl::Status status = CheckDue(); !status.ok()) return status;
    // Not past the next check that is due.
    const absl::Duration until_due = NextDue() - absl::Now();
    const int64_t wait_ms =
        until_due < options_.poll_timeout
            ? std::max<int64_t>(1, absl::ToInt64Milliseconds(std::max(until_due, absl::ZeroDuration())))
            : timeout_ms;
    // CouchDB answers by wait_ms at the latest; the margin covers a slow answer.
    const absl::Time asked = absl::Now();
    absl::StatusOr<HttpResponse> response = couch_.Get(
        absl::StrCat("/_db_updates?feed=longpoll&timeout=", wait_ms,
                     "&since=", CouchClient::EscapeSegment(*since)),
        absl::Milliseconds(wait_ms) + absl::Seconds(30));
    absl::Status failed;
    // A CouchDB restarting (no answer, 5xx), a proxy's timeout or page: tried again. An
    // answer retrying cannot change (the credentials refused, no server admin, no
    // _db_updates) ends following.
    bool retry = true;
    if (!response.ok()) {
      failed = response.status();
      // An answer over the size limit would be as long again.
      retry = !absl::IsCancelled(failed) && !absl::IsResourceExhausted(failed);
    } else if (response->status != 200) {
      failed = HttpError(*response, "following _db_updates", couch_.base_url());
      retry = response->status != 400 && response->status != 401 && response->status != 403 &&
              response->status != 404 && response->status != 405;
    }
    absl::StatusOr<rapidjson::Document> updates =
        failed.ok() ? ParseJson(response->body) : absl::StatusOr<rapidjson::Document>(failed);
    if (failed.ok() && (!updates.ok() || !updates->IsObject() ||
                        !updates->HasMember("results") || !(*updates)["results"].IsArray())) {
      failed = absl::UnknownError(
          absl::StrCat("CouchDB at ", couch_.base_url(), " sent a malformed _db_updates"));
    }
    if (!failed.ok() && !retry) {
      EmitProblem(v1::UploadProblem::ERROR, failed, "", "");
      return failed;
    }
    if (!failed.ok()) {
      failing_since = std::min(failing_since, asked);
      // From the same position: nothing created meanwhile is missed.
      EmitProblem(v1::UploadProblem::WARNING,
                  absl::Status(failed.code(), absl::StrCat(failed.message(), "; following _db_updates again in ",
                                                           absl::FormatDuration(retry_delay))),
                  "", "");
      if (!wait_until(absl::Now() + retry_delay)) return absl::OkStatus();
      retry_delay = std::min(retry_delay * 2, options_.max_retry_delay);
      continue;
    }
    retry_delay = options_.first_retry_delay;
    if (failing_since != absl::InfiniteFuture()) {
      Note(absl::StrCat("CouchDB answers _db_updates again (after ",
                        absl::FormatDuration(absl::Trunc(absl::Now() - failing_since,
                                                         absl::Milliseconds(100))),
                        "); nothing created meanwhile is missed"));
      failing_since = absl::InfiniteFuture();
    }
    bool registry_changed = false;
    for (const auto& update : (*updates)["results"].GetArray()) {
      // Stopping: the database in hand is done; the rest is seen again by the next run.
      if (Stopping()) return absl::OkStatus();
      std::string database(StringField(update, "db_name"));
      absl::string_view type = StringField(update, "type");
      if (database == registry_) {
        registry_changed = registry_changed || type == "created" || type == "updated";
      } else if (type == "deleted") {
        last_checked_.erase(database);
        recheck_at_.erase(database);
        retry_.erase(database);
      } else if (type == "created") {
        if (absl::Status status = CheckDatabase(database, /*just_created=*/true); EndsFollowing(status)) {
          return status;
        }
      } else if (type == "updated" && (!Matching(database).empty() || !Matching(database, true).empty())) {
        // A design document edited or deleted by hand is put back; a database that changes
        // all the time is looked at once per recheck_interval.
        auto last = last_checked_.find(database);
        if (last == last_checked_.end() || absl::Now() - last->second >= options_.recheck_interval) {
          if (absl::Status status = CheckDatabase(database); EndsFollowing(status)) return status;
        } else if (retry_.count(database) == 0) {
          recheck_at_.emplace(database, last->second + options_.recheck_interval);
        }
      }
    }
    if (registry_changed) {
      if (absl::Status status = PassWhileFollowing(); !status.ok()) return status;
    }
    const std::string before = *since;
    if (!updates->HasMember("last_seq") && !warned_no_last_seq) {
      warned_no_last_seq = true;
      EmitProblem(v1::UploadProblem::WARNING,
                  absl::UnknownError(absl::StrCat(
                      "CouchDB at ", couch_.base_url(), " answered _db_updates without its "
                      "last_seq: following from the same place, so the same updates come again "
                      "(is the URL a CouchDB?)")),
                  "", "");
    }
    if (updates->HasMember("last_seq")) {
      const rapidjson::Value& seq = (*updates)["last_seq"];
      *since = seq.IsString() ? std::string(seq.GetString(), seq.GetStringLength()) : ToJson(seq);
    }
    // A longpoll that comes back at once with nothing new, or without moving on (no last_seq,
    // the same one), would be asked again at once, and again: CouchDB never answers so, but a
    // proxy or a server that only looks like CouchDB may. The next one waits up to a second.
    if ((*updates)["results"].Empty() || *since == before) {
      const absl::Duration pause = std::min(absl::Milliseconds(wait_ms), absl::Seconds(1));
      if (!wait_until(asked + pause)) return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

}  // namespace cnp::client::sync
