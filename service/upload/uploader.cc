#include "service/upload/uploader.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/couchdb/conflict_retry.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/couch_root.h"
#include "common/couchdb/couch_url.h"
#include "common/couchdb/couchdb_languages.h"
#include "common/couchdb/database_name.h"
#include "common/couchdb/design_diff.h"
#include "common/couchdb/json.h"
#include "common/couchdb/registry_entry.h"
#include "common/couchdb/target_databases.h"
#include "common/printable_text.h"
#include "service/upload/design_yaml.h"
#include "service/upload/problem_list.h"
#include "service/upload/staged_index.h"
#include "service/upload/version_resolver.h"

namespace cnp::upload {
namespace {

constexpr size_t kMaxFileNameBytes = 4096;
constexpr int kDefaultConflictRetries = 3;

// How long the clean-up of a cancelled staged build may take: the upload's thread, and a
// shutdown that joins it, wait for it.
constexpr absl::Duration kStagingCleanupTimeout = absl::Seconds(5);

std::string Where(const v1::SourceLocation& at) {
  return at.line() > 0 ? absl::StrCat(at.file(), ":", at.line()) : at.file();
}

// Stops the run after CouchDB as a whole failed, rather than repeating the same failure for
// every design document.
bool AffectsEverything(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsUnauthenticated(status) ||
         absl::IsCancelled(status) || absl::IsResourceExhausted(status);
}

// One design document bound for one database.
struct Target {
  std::string database;
  const DesignDocSpec* spec;
};

class UploadRun {
 public:
  UploadRun(pool::TaskRunner& runner, const Uploader::Options& options,
            const v1::UploadRequest& request, const Uploader::Emit& emit, std::stop_token stop)
      : runner_(runner), options_(options), request_(request), emit_(emit),
        stop_(std::move(stop)) {}

  absl::Status Execute() {
    // An Upload cancelled while it waited for an upload thread does no work at all: no YAML
    // parsed, no task sent to a worker.
    if (stop_.stop_requested()) return Cancelled();
    if (request_.files_size() == 0) {
      return Fail(absl::InvalidArgumentError("no YAML files to upload"));
    }
    // A file's name is in every event about it: unbounded, a few problems carried it gigabytes
    // over (a security review). A path is at most PATH_MAX.
    for (const v1::UploadFile& file : request_.files()) {
      if (file.name().size() > kMaxFileNameBytes) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            "a file name of ", file.name().size(), " bytes; at most ", kMaxFileNameBytes,
            " (a path)")));
      }
    }
    if (registering() && request_.staged()) {
      return Fail(absl::InvalidArgumentError(
          "staged applies to design documents written in place, not to a registry: "
          "cnp sync writes the registered ones"));
    }
    // 0 means the default for both; a negative number means nothing, and is no default either.
    if (request_.max_conflict_retries() < 0) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "max_conflict_retries is ", request_.max_conflict_retries(),
          ": it may be 0 (the default, 3) or more")));
    }
    if (request_.staged_settle_seconds() < 0) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "staged_settle_seconds is ", request_.staged_settle_seconds(),
          ": it may be 0 (the default, 60) or more")));
    }
    // Empty is the default, "python"; a YAML `language:` is checked at its line instead.
    if (!request_.language().empty() && couchdb::IsCouchDbOwnLanguage(request_.language())) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "language \"", request_.language(), "\" (cnp's --view-server) is ",
          couchdb::CouchDbOwnLanguageReason(request_.language()),
          "; give the name CouchDB knows cnp's query server by: \"python\" "
          "(COUCHDB_QUERY_SERVER_PYTHON, the default) or the operator's own")));
    }
    if (!request_.language().empty() && !couchdb::CanNameAQueryServer(request_.language())) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "language \"", Printable(request_.language()),
          "\" (cnp's --view-server) names no query server: it is the one word CouchDB knows "
          "cnp's query server by, e.g. python")));
    }
    std::optional<couchdb::CouchUrl> url;
    if (!request_.check_only()) {
      absl::StatusOr<couchdb::CouchUrl> parsed = couchdb::ParseCouchUrl(request_.couchdb_url());
      if (!parsed.ok()) return Fail(parsed.status());
      if (absl::Status allowed = options_.couchdb_allow.Check(*parsed); !allowed.ok()) {
        return Fail(allowed);
      }
      const bool with_credentials =
          !parsed->username.empty() || !request_.credentials().username().empty();
      if (with_credentials) {
        if (absl::Status may = options_.couchdb_allow.CheckCredentialsMayGo(*parsed); !may.ok()) {
          return Fail(may);
        }
      }
      url = std::move(*parsed);
    }
    // Nothing is written unless every file reads and every function resolves.
    if (absl::Status read = ReadAndResolve(); !read.ok()) return read;
    if (request_.check_only()) return ReportChecked();

    Connect(*url);
    // Nothing but GET / goes to a server that does not answer as CouchDB: on the default
    // allow list (loopback), a caller could otherwise have this service read and write other
    // HTTP services of its host through their /db/_design/x paths (security review).
    if (absl::Status root = couchdb::CheckCouchRoot(
            *couch_, "the database is named apart from the URL", couchdb::AnswerQuoting::kWithheld);
        !root.ok()) {
      return Fail(root);
    }
    if (registering()) return RegisterAll();
    absl::StatusOr<std::vector<Target>> targets = ExpandTargets();
    if (!targets.ok()) return targets.status();  // already reported
    return UploadAll(*targets);
  }

 private:
  absl::Status ReadAndResolve() {
    ProblemList problems(FileOrder());
    std::string language = request_.language().empty() ? "python" : request_.language();
    YamlBudget budget;  // shared by all the files: many small bombs are one big one
    Classifications classifications;  // likewise: one file may name another's
    for (const v1::UploadFile& file : request_.files()) {
      for (DesignDocSpec& spec : ParseDesignYaml(file, language, options_.yaml_limits, budget,
                                                 problems, classifications)) {
        specs_.push_back(std::move(spec));
      }
    }
    // OK means every design document reached its state: with none at all, an OK would pass a
    // pipeline that uploaded nothing. The per-file warnings would only repeat this error.
    if (specs_.empty() && problems.error_count() == 0) return Fail(NoDesignDocuments());
    ResolveClassifications(classifications, specs_, problems);
    if (stop_.stop_requested()) return Cancelled();
    // The call's own deadline needs no place here: gRPC cancels a call whose deadline passes,
    // which requests `stop_`, which ends the resolve's wait (and its task) at once.
    absl::Status resolved = ResolveVersions(
        runner_, absl::Now() + options_.resolve_timeout, specs_, problems, stop_);
    if (!resolved.ok()) {
      if (!SendProblems(problems)) return Cancelled();
      return Fail(resolved);
    }
    CheckTargetsStatically(problems);
    if (!SendProblems(problems)) return Cancelled();
    if (problems.error_count() > 0) return YamlErrors(problems.error_count());
    return absl::OkStatus();
  }

  absl::Status ReportChecked() {
    for (const DesignDocSpec& spec : specs_) {
      v1::UploadEvent event;
      v1::DesignDocOutcome& outcome = *event.mutable_outcome();
      outcome.set_id(spec.id());
      outcome.set_action(v1::DesignDocOutcome::CHECKED);
      outcome.set_document_json(couchdb::ToJson(spec.body));
      *outcome.mutable_location() = spec.location;
      if (!Send(event)) return Cancelled();
    }
    return absl::OkStatus();
  }

  // Credentials given apart from the URL win over the URL's own.
  void Connect(const couchdb::CouchUrl& url) {
    couchdb::CouchClient::Options options;
    options.base_url = url.base;
    options.username = url.username;
    options.password = url.password;
    if (!request_.credentials().username().empty()) {
      options.username = request_.credentials().username();
      options.password = request_.credentials().password();
    }
    options.ca_pem = request_.ca_pem();
    options.timeout = options_.http_timeout;
    options.max_response_bytes = options_.max_couchdb_response_bytes;
    options.response_limit_advice = "the operator can raise cnp-server's --max-couchdb-response-bytes";
    // Without the stop: the client for clean-up after one (RemoveStagingAfterStop).
    couch_options_ = options;
    options.stop = stop_;
    couch_ = std::make_unique<couchdb::CouchClient>(std::move(options));
  }

  // Every target database is checked before anything is written: one named outright that
  // does not exist (or may not be written) stops the upload with nothing written, as --help
  // promises for any error found before the writes (it was found in the middle of them, after
  // other databases had their design documents). Then goes on past a failed design document,
  // except when CouchDB as a whole failed.
  absl::Status UploadAll(const std::vector<Target>& targets) {
    absl::Status first_error;
    int unusable = 0;
    std::set<std::string> checked;
    for (const Target& target : targets) {
      if (stop_.stop_requested()) return Cancelled();
      if (!checked.insert(target.database).second) continue;
      absl::Status status = CheckDatabase(target.database);
      if (status.ok()) continue;
      if (absl::IsCancelled(status)) return status;
      SendError(status, target);  // once per database
      ++unusable;
      if (first_error.ok()) first_error = status;
      if (AffectsEverything(status)) {
        return StoppedEarly(status, targets.size(), targets.size());
      }
    }
    if (!first_error.ok()) {
      // Each database's error went out as an event already (cnp printed the same line twice);
      // the status counts them, as YamlErrors does, and keeps the first one's code.
      return absl::Status(
          first_error.code(),
          absl::StrCat(unusable, unusable == 1 ? " target database" : " target databases",
                       " could not be used (", unusable == 1 ? "its error" : "their errors",
                       " above); nothing was written"));
    }
    for (size_t i = 0; i < targets.size(); ++i) {
      const Target& target = targets[i];
      if (stop_.stop_requested()) return Cancelled();
      absl::Status status = UploadOne(target);
      if (status.ok()) continue;
      if (absl::IsCancelled(status)) return status;
      SendError(status, target);
      if (first_error.ok()) first_error = status;
      if (AffectsEverything(status)) {
        return StoppedEarly(status, targets.size() - i - 1, targets.size());
      }
    }
    return first_error;
  }

  // CouchDB as a whole failed (a 401 for credentials it stopped taking, CouchDB gone): the run
  // stops, and its status says what that left undone, so that the operator knows what CouchDB
  // holds and that a run is still owed. The outcomes so far are events (and cnp's summary), but
  // the design documents never tried were in no event at all.
  absl::Status StoppedEarly(const absl::Status& status, size_t not_attempted,
                            size_t total) const {
    const size_t done = static_cast<size_t>(written_ + unchanged_);
    // The one that stopped the upload, and any that failed alone before it.
    const size_t failed = total - std::min(total, done + not_attempted);
    std::string left;
    if (done == 0 && failed == 0) {
      // Stopped before any design document was tried (the database itself was refused).
      left = absl::StrCat("nothing was written and ", not_attempted,
                          not_attempted == total ? "" : absl::StrCat(" of the ", total),
                          total == 1 ? " design document" : " design documents",
                          not_attempted == 1 ? " was" : " were", " not attempted");
    } else {
      std::vector<std::string> parts;
      if (written_ > 0) {
        parts.push_back(absl::StrCat(written_, request_.dry_run() ? " would change" : " written"));
      }
      if (unchanged_ > 0) parts.push_back(absl::StrCat(unchanged_, " already up to date"));
      if (failed > 0) {
        // CouchDB was lost mid-write: the write may have been applied, and only CouchDB can
        // say. Not said of a read that failed so: it wrote nothing.
        const bool cut_off = couchdb::MayHaveBeenApplied(status);
        parts.push_back(absl::StrCat(
            failed, " failed",
            cut_off ? " (a write the failure cut off may still have been applied: check "
                      "CouchDB)"
                    : ""));
      }
      if (not_attempted > 0) parts.push_back(absl::StrCat(not_attempted, " not attempted"));
      const std::string last = parts.back();
      parts.pop_back();
      left = absl::StrCat(absl::StrJoin(parts, ", "), parts.empty() ? "" : " and ", last, ", of ",
                          total, total == 1 ? " design document" : " design documents");
    }
    return absl::Status(status.code(),
                        absl::StrCat(status.message(), "; the upload stopped there: ", left));
  }

  bool Send(const v1::UploadEvent& event) {
    if (event.has_outcome()) {
      switch (event.outcome().action()) {
        case v1::DesignDocOutcome::CREATED:
        case v1::DesignDocOutcome::UPDATED:
        case v1::DesignDocOutcome::WOULD_CREATE:
        case v1::DesignDocOutcome::WOULD_UPDATE:
          ++written_;
          break;
        case v1::DesignDocOutcome::UNCHANGED:
          ++unchanged_;
          break;
        default:
          break;
      }
    }
    if (stop_.stop_requested()) cancelled_ = true;
    if (cancelled_) return false;
    if (!emit_(event)) cancelled_ = true;
    return !cancelled_;
  }

  absl::Status Cancelled() {
    return absl::CancelledError(
        "the upload was cancelled (the client went away, its deadline passed, or the server "
        "is shutting down)");
  }

  std::vector<std::string> FileOrder() const {
    std::vector<std::string> names;
    for (const v1::UploadFile& file : request_.files()) names.push_back(file.name());
    return names;
  }

  bool SendProblems(const ProblemList& problems) {
    for (const v1::UploadProblem& problem : problems.problems()) {
      v1::UploadEvent event;
      *event.mutable_problem() = problem;
      if (!Send(event)) return false;
    }
    return true;
  }

  // Reports a failure that is not tied to a line of YAML and returns it.
  absl::Status Fail(const absl::Status& status) {
    v1::UploadEvent event;
    v1::UploadProblem& problem = *event.mutable_problem();
    problem.set_severity(v1::UploadProblem::ERROR);
    problem.set_message(std::string(status.message()));
    if (!Send(event)) return Cancelled();
    return status;
  }

  void SendError(const absl::Status& status, const Target& target) {
    v1::UploadEvent event;
    v1::UploadProblem& problem = *event.mutable_problem();
    problem.set_severity(v1::UploadProblem::ERROR);
    problem.set_message(std::string(status.message()));
    problem.set_database(target.database);
    problem.set_design_doc(target.spec->id());
    *problem.mutable_location() = target.spec->location;
    Send(event);
  }

  void SendWarning(std::string message, const Target& target) {
    v1::UploadEvent event;
    v1::UploadProblem& problem = *event.mutable_problem();
    problem.set_severity(v1::UploadProblem::WARNING);
    problem.set_message(std::move(message));
    problem.set_database(target.database);
    problem.set_design_doc(target.spec->id());
    *problem.mutable_location() = target.spec->location;
    Send(event);
  }

  absl::Status NoDesignDocuments() const {
    const int n = request_.files_size();
    constexpr int kNamed = 3;
    std::vector<std::string> named;
    for (int i = 0; i < std::min(n, kNamed); ++i) named.push_back(request_.files(i).name());
    std::string files = absl::StrJoin(named, ", ");
    if (n > kNamed) absl::StrAppend(&files, " and ", n - kNamed, " more");
    const char* outcome = request_.check_only() ? "nothing was checked"
                          : registering()       ? "nothing was registered"
                                                : "nothing was written";
    if (n == 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          files, " holds no design document: it is empty, comments only or classifications "
          "only; ", outcome));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "none of the ", n, " files holds a design document: ", files,
        " are each empty, comments only or classifications only; ", outcome));
  }

  absl::Status YamlErrors(int count) {
    return absl::InvalidArgumentError(
        absl::StrCat(count, count == 1 ? " error" : " errors", " in the design documents",
                     request_.check_only() ? "" : "; nothing was written"));
  }

  // Problems visible without asking CouchDB: a design document with nowhere to go, and two
  // definitions of one design document for the same database (or the same pattern).
  void CheckTargetsStatically(ProblemList& problems) {
    std::map<std::pair<std::string, std::string>, const DesignDocSpec*> first;
    for (const DesignDocSpec& spec : specs_) {
      if (!request_.allow_system_databases()) CheckNotSystemTargets(spec, problems);
      if (absl::EndsWith(spec.name, StagingName(""))) {
        // A staged upload of NAME takes NAME__staging for its own: it writes its staging
        // document over it and deletes it at the end (a data-safety probe lost a design
        // document a plain upload had written so), and such a document's own staged build
        // would do the same to another's.
        problems.Error(spec.location,
                       absl::StrCat("design document \"", spec.name, "\": names ending in \"",
                                    StagingName(""), "\" are cnp upload --staged's own (it "
                                    "builds NAME's index under NAME", StagingName(""),
                                    " and deletes that document after); rename it"));
      }
      std::vector<std::string> keys;
      // Its classifications are all undefined, which is reported already.
      if (spec.databases.empty() && !spec.classifications.empty()) continue;
      if (spec.databases.empty() && registering()) {
        problems.Error(spec.location,
                       absl::StrCat("design document \"", spec.name,
                                    "\" names no databases: or classification:; a registered "
                                    "design document needs them to tell cnp sync where it goes"));
        continue;
      }
      if (spec.databases.empty()) {
        if (request_.database().empty() && !request_.check_only()) {
          problems.Error(spec.location,
                         absl::StrCat("design document \"", spec.name,
                                      "\" names no databases: and no database was given"));
        }
        keys.push_back(request_.database());
      }
      for (const DatabasePattern& db : spec.databases) keys.push_back(db.pattern);
      for (const std::string& key : keys) {
        auto [it, inserted] = first.emplace(std::make_pair(key, spec.name), &spec);
        if (!inserted && it->second != &spec) {
          problems.Error(spec.location, DuplicateMessage(spec, key, *it->second));
        }
      }
    }
  }

  // CouchDB's own databases and design documents hold its security rules (_users/_design/
  // _auth keeps users from giving themselves roles): only the operator's explicit request
  // reaches them.
  // An error for an upload; for a check (which has no such flag, and no database to write) a
  // warning, so that `cnp check` tells what `cnp upload` will refuse.
  void CheckNotSystemTargets(const DesignDocSpec& spec, ProblemList& problems) const {
    const std::string what = absl::StrCat("design document \"", spec.name, "\"");
    auto report = [&](const v1::SourceLocation& at, const absl::Status& refused) {
      if (refused.ok()) return;
      if (request_.check_only()) {
        problems.Warning(at, absl::StrCat("cnp upload will refuse this: ", refused.message()));
      } else {
        problems.Error(at, std::string(refused.message()));
      }
    };
    report(spec.location, couchdb::CheckNotSystemTarget(what, spec.name, ""));
    if (spec.databases.empty() && !registering()) {
      report(spec.location, couchdb::CheckNotSystemTarget(what, "", request_.database()));
    }
    for (const DatabasePattern& db : spec.databases) {
      report(db.location, couchdb::CheckNotSystemTarget(what, "", db.pattern));
    }
  }

  static std::string DuplicateMessage(const DesignDocSpec& spec, absl::string_view database,
                                      const DesignDocSpec& other) {
    return absl::StrCat("design document \"", spec.name, "\" is also defined at ",
                        Where(other.location),
                        database.empty() ? std::string()
                                         : absl::StrCat(" for database \"", database, "\""));
  }

  absl::StatusOr<std::vector<Target>> ExpandTargets() {
    std::optional<std::vector<std::string>> all_dbs;
    std::vector<Target> targets;
    std::map<std::pair<std::string, std::string>, const DesignDocSpec*> seen;
    ProblemList problems(FileOrder());
    auto add = [&](const std::string& db, const DesignDocSpec& spec) {
      auto [it, inserted] = seen.emplace(std::make_pair(db, spec.name), &spec);
      if (inserted) {
        targets.push_back({db, &spec});
      } else if (it->second != &spec) {
        problems.Error(spec.location, DuplicateMessage(spec, db, *it->second));
      }
    };
    for (const DesignDocSpec& spec : specs_) {
      if (spec.databases.empty()) add(request_.database(), spec);
      for (const DatabasePattern& db : spec.databases) {
        if (!couchdb::IsDatabasePattern(db.pattern)) {
          add(db.pattern, spec);
          continue;
        }
        if (!all_dbs) {
          absl::StatusOr<std::vector<std::string>> listed = ListDatabases();
          if (!listed.ok()) return Fail(listed.status());
          all_dbs = std::move(*listed);
        }
        std::vector<std::string> matched = couchdb::MatchDatabases(db.pattern, *all_dbs);
        if (matched.empty()) {
          problems.Warning(db.location,
                           absl::StrCat("\"", db.pattern, "\" matches no database"));
        }
        for (const std::string& name : matched) add(name, spec);
      }
    }
    if (!SendProblems(problems)) return Cancelled();
    if (problems.error_count() > 0) return YamlErrors(problems.error_count());
    return targets;
  }

  absl::StatusOr<std::vector<std::string>> ListDatabases() {
    absl::StatusOr<couchdb::HttpResponse> response = couch_->Get("/_all_dbs");
    if (!response.ok()) return response.status();
    if (response->status != 200) {
      return couchdb::HttpError(*response, "listing the databases", couch_->base_url());
    }
    absl::StatusOr<rapidjson::Document> list = couchdb::ParseJson(response->body);
    if (!list.ok() || !list->IsArray()) {
      return absl::UnknownError(
          absl::StrCat("CouchDB at ", couch_->base_url(), " sent a malformed _all_dbs"));
    }
    std::vector<std::string> names;
    for (const auto& name : list->GetArray()) {
      if (name.IsString()) names.emplace_back(name.GetString(), name.GetStringLength());
    }
    return names;
  }

  absl::Status CheckDatabase(const std::string& database) {
    absl::StatusOr<couchdb::HttpResponse> response = couch_->Get(couchdb::DatabasePath(database));
    if (!response.ok()) return response.status();
    if (response->status == 200) return absl::OkStatus();
    if (response->status == 404) {
      // A database's URL given as CouchDB's: every database looks missing under it.
      if (absl::Status root = couchdb::CheckNotADatabaseUrl(
              *couch_, "the database is named on the command line, after the URL");
          !root.ok()) {
        return root;
      }
      if (!couchdb::IsDatabaseName(database) && !absl::StartsWith(database, "_")) {
        // Advice to create it would only meet CouchDB's refusal (illegal_database_name).
        return absl::NotFoundError(absl::StrCat(
            "database \"", database, "\" does not exist at ", couch_->base_url(),
            ", and CouchDB would refuse to create it: ", couchdb::kDatabaseNameRule));
      }
      return absl::NotFoundError(absl::StrCat("database \"", database, "\" does not exist at ",
                                              couch_->base_url(),
                                              "; create it first (PUT ",
                                              couchdb::DatabasePath(database), ")"));
    }
    return couchdb::HttpError(*response, absl::StrCat("opening database \"", database, "\""),
                     couch_->base_url());
  }

  int MaxConflictRetries() const {
    return request_.max_conflict_retries() > 0 ? request_.max_conflict_retries()
                                               : kDefaultConflictRetries;
  }

  absl::Status UploadOne(const Target& target) {
    std::optional<StagedIndexBuild> staging;
    std::optional<rapidjson::Document> staged_document;
    bool build_stopped = false;  // the upload was cancelled during the staging build
    bool live_write_sent = false;  // the live document was planned and handed over for writing
    v1::UploadEvent event;
    absl::StatusOr<couchdb::WriteResult> written = couchdb::WriteWithConflictRetry(
        *couch_,
        {.path = couchdb::DesignDocPath(target.database, target.spec->name),
         .id = target.spec->id(),
         .database = target.database,
         .activity = "uploading",
         .max_conflict_retries = MaxConflictRetries(),
         .on_retry = [&](const std::string& message) { SendWarning(message, target); }},
        [&](const couchdb::StoredDocument& stored,
            int attempt) -> absl::StatusOr<couchdb::WriteDecision> {
          couchdb::DesignDocPlan plan = couchdb::PlanDesignDoc(
              target.spec->body, stored.doc ? &*stored.doc : nullptr,
              request_.drop_unknown_fields());
          event.Clear();
          v1::DesignDocOutcome& outcome = *event.mutable_outcome();
          outcome.set_database(target.database);
          outcome.set_id(target.spec->id());
          *outcome.mutable_location() = target.spec->location;
          couchdb::DescribePlan(plan, outcome);
          outcome.set_conflict_retries(attempt);
          if (plan.changes.empty()) {
            outcome.set_action(v1::DesignDocOutcome::UNCHANGED);
            outcome.set_rev(stored.rev);
            return std::nullopt;
          }
          if (request_.dry_run()) {
            outcome.set_action(stored.doc ? v1::DesignDocOutcome::WOULD_UPDATE
                                          : v1::DesignDocOutcome::WOULD_CREATE);
            return std::nullopt;
          }
          if (request_.staged() && plan.index_rebuild &&
              !(staged_document && couchdb::SameIndexInputs(*staged_document, plan.document))) {
            staging.emplace(*couch_, target.database, target.spec->name,
                            options_.staged_poll_interval, options_.staged_heartbeat,
                            [this](const v1::IndexBuildProgress& progress) {
                              v1::UploadEvent e;
                              *e.mutable_progress() = progress;
                              return Send(e);
                            });
            if (absl::Status built = staging->Build(plan.document); !built.ok()) {
              build_stopped = absl::IsCancelled(built);
              return built;
            }
            staged_document.emplace();
            staged_document->CopyFrom(plan.document, staged_document->GetAllocator());
          }
          if (options_.before_write) options_.before_write(target.database, target.spec->id());
          live_write_sent = true;
          return std::move(plan.document);
        });
    if (!written.ok()) {
      // The live document was not written, so the staging document serves nothing, and no
      // later run would come back for it (it stages only what differs from the live
      // document).
      // So too when stopped between the build and the live write, which was then never sent.
      if (staging && (build_stopped || (absl::IsCancelled(written.status()) &&
                                        !couchdb::MayHaveBeenApplied(written.status())))) {
        return RemoveStagingAfterStop(*staging, target, written.status());
      }
      // Stopped while the live document was being written: it may be in place, and then its
      // index is the staging build's, which deleting the staging document now could lose.
      if (staging && absl::IsCancelled(written.status())) {
        return KeptStaging(written.status(), target,
                           "the live document may have been written meanwhile");
      }
      // The live write failed without CouchDB's refusal (no answer, a proxy's 502 or 504, an
      // answer without the revision): it may have been applied, so the same.
      if (staging && live_write_sent && !RefusedByCouchDb(written.status())) {
        return KeptStaging(written.status(), target,
                           "the live document's write may have been applied");
      }
      if (staging) RemoveStaging(*staging, target);
      return written.status();
    }
    v1::DesignDocOutcome& outcome = *event.mutable_outcome();
    if (written->written) {
      outcome.set_rev(written->written_rev);
      outcome.set_action(written->existed ? v1::DesignDocOutcome::UPDATED
                                          : v1::DesignDocOutcome::CREATED);
    }
    if (!Send(event)) return Cancelled();
    // Written, or found already as staged after a conflict (another upload wrote the same
    // document): either way the live document may now use the staged index.
    if (staging) return SwitchOver(*staging, target);
    return absl::OkStatus();
  }

  // Waits until the live document's index has taken over the staged one, then removes the
  // staging document.
  absl::Status SwitchOver(StagedIndexBuild& staging, const Target& target) {
    absl::Duration settle = request_.staged_settle_seconds() > 0
                                ? absl::Seconds(request_.staged_settle_seconds())
                                : options_.staged_settle_timeout;
    if (absl::Status settled = staging.AwaitLiveIndex(settle); !settled.ok()) {
      if (absl::IsCancelled(settled)) {
        return KeptStaging(settled, target, "the live document's index had not settled yet");
      }
      SendWarning(std::string(settled.message()), target);
      // The live document is in place. Unless its index is another one (then the staging
      // document serves nothing), the clean-up waits for a later run.
      if (!absl::IsFailedPrecondition(settled)) return absl::OkStatus();
    } else if (staging.settle_unverifiable()) {
      SendWarning(absl::StrCat("the server reports no index state (GET /", target.database,
                               "/_design/", target.spec->name, "/_info has no view_index, as "
                               "pouchdb-server's), so whether the live document took the built "
                               "index over was not checked (CouchDB reports it)"),
                  target);
    }
    RemoveStaging(staging, target);
    return absl::OkStatus();
  }

  // The upload was cancelled during the staging document's index build, or after it but before
  // the live document's write was sent: nothing uses that index, and a staging document left in place would
  // have CouchDB build and keep up to date an index nobody wants any more (CouchDB 3 indexes
  // design documents by itself). It is deleted, at the revision this run wrote, with a client
  // of its own (the cancelled run's refuses every request) and a short timeout. `stopped`
  // comes back saying what became of it.
  absl::Status RemoveStagingAfterStop(StagedIndexBuild& staging, const Target& target,
                                      const absl::Status& stopped) {
    if (!staging.staging_written()) return stopped;
    couchdb::CouchClient::Options options = couch_options_;
    options.timeout = kStagingCleanupTimeout;
    couchdb::CouchClient cleanup(std::move(options));
    const std::string what =
        absl::StrCat("_design/", StagingName(target.spec->name), " in ", target.database);
    if (absl::Status removed = staging.RemoveAfterStop(cleanup); !removed.ok()) {
      return absl::Status(
          stopped.code(),
          absl::StrCat(stopped.message(), "; its staging document ", what,
                       " may be left: deleting it failed (", removed.message(),
                       "). Delete it, or run the same upload again, which reuses it"));
    }
    return absl::Status(stopped.code(), absl::StrCat(stopped.message(), "; its staging document ",
                                                     what, " was deleted"));
  }

  // Whether a failed write is CouchDB's refusal of it, which applied nothing: a conflict, a
  // refused permission or credentials, a missing database.
  static bool RefusedByCouchDb(const absl::Status& status) {
    return absl::IsAborted(status) || absl::IsPermissionDenied(status) ||
           absl::IsUnauthenticated(status) || absl::IsNotFound(status);
  }

  // Says that the staging document stays after the upload was stopped, and why.
  absl::Status KeptStaging(const absl::Status& stopped, const Target& target,
                           absl::string_view why) {
    return absl::Status(
        stopped.code(),
        absl::StrCat(stopped.message(), "; its staging document _design/",
                     StagingName(target.spec->name), " in ", target.database,
                     " was kept, as ", why, ": delete it once GET /", target.database,
                     "/_design/", target.spec->name,
                     "/_info shows waiting_commit false (deleting it earlier may lose the "
                     "built index)"));
  }

  void RemoveStaging(StagedIndexBuild& staging, const Target& target) {
    if (absl::Status removed = staging.Remove(); !removed.ok()) {
      SendWarning(absl::StrCat("the staging document _design/", StagingName(target.spec->name),
                               " could not be removed: ", removed.message()),
                  target);
    }
  }

  bool registering() const { return !request_.register_database().empty(); }

  // Registration: each design document goes, versions resolved, into the registry database
  // as one document per target rule (a `databases:` entry, or a classification with its
  // patterns), for cnp sync to put in place in every database the rule matches.
  absl::Status RegisterAll() {
    const std::string& registry = request_.register_database();
    if (absl::Status status = CheckDatabase(registry); !status.ok()) return Fail(status);
    absl::Status first_error;
    for (const DesignDocSpec& spec : specs_) {
      // Rules in the order the YAML gives them; a classification's patterns stay together.
      std::vector<std::pair<std::string, std::vector<const DatabasePattern*>>> rules;
      for (const DatabasePattern& db : spec.databases) {
        std::string key = db.classification.empty() ? absl::StrCat("database:", db.pattern)
                                                    : absl::StrCat("classification:",
                                                                   db.classification);
        auto it = std::find_if(rules.begin(), rules.end(),
                               [&](const auto& rule) { return rule.first == key; });
        if (it == rules.end()) {
          rules.push_back({key, {&db}});
        } else {
          it->second.push_back(&db);
        }
      }
      for (const auto& [key, patterns] : rules) {
        absl::Status status = RegisterOne(spec, key, patterns);
        if (status.ok()) continue;
        if (absl::IsCancelled(status)) return status;
        SendError(status, {registry, &spec});
        if (first_error.ok()) first_error = status;
        if (AffectsEverything(status)) return status;
      }
    }
    return first_error;
  }

  absl::Status RegisterOne(const DesignDocSpec& spec, const std::string& rule,
                           const std::vector<const DatabasePattern*>& patterns) {
    const std::string& registry = request_.register_database();
    const std::string id = absl::StrCat(spec.name, "@", rule);
    const std::string path =
        absl::StrCat(couchdb::DatabasePath(registry), "/", couchdb::CouchClient::EscapeSegment(id));
    rapidjson::Document entry(rapidjson::kObjectType);
    auto& alloc = entry.GetAllocator();
    entry.AddMember("_id", rapidjson::Value(id.c_str(), alloc), alloc);
    entry.AddMember("type", rapidjson::StringRef(couchdb::kRegistryEntryType), alloc);
    entry.AddMember("name", rapidjson::Value(spec.name.c_str(), alloc), alloc);
    rapidjson::Value target(rapidjson::kObjectType);
    if (!patterns.front()->classification.empty()) {
      target.AddMember("classification",
                       rapidjson::Value(patterns.front()->classification.c_str(), alloc), alloc);
    }
    rapidjson::Value databases(rapidjson::kArrayType);
    for (const DatabasePattern* db : patterns) {
      databases.PushBack(rapidjson::Value(db->pattern.c_str(), alloc), alloc);
    }
    target.AddMember("databases", databases, alloc);
    entry.AddMember("target", target, alloc);
    entry.AddMember("design_document", rapidjson::Value(spec.body, alloc), alloc);

    v1::UploadEvent event;
    absl::StatusOr<couchdb::WriteResult> written = couchdb::WriteWithConflictRetry(
        *couch_,
        {.path = path,
         .id = id,
         .database = registry,
         .activity = "registering",
         .max_conflict_retries = MaxConflictRetries()},
        [&](const couchdb::StoredDocument& stored,
            int attempt) -> absl::StatusOr<couchdb::WriteDecision> {
          event.Clear();
          v1::DesignDocOutcome& outcome = *event.mutable_outcome();
          outcome.set_database(registry);
          outcome.set_id(id);
          *outcome.mutable_location() = spec.location;
          outcome.set_document_json(couchdb::ToJson(entry));
          outcome.set_conflict_retries(attempt);
          if (stored.doc && couchdb::JsonEqual(*stored.doc, entry)) {
            outcome.set_action(v1::DesignDocOutcome::UNCHANGED);
            outcome.set_rev(stored.rev);
            return std::nullopt;
          }
          // The diff a user cares about is the design document's, field by field.
          const rapidjson::Value* stored_design = nullptr;
          if (stored.doc && stored.doc->HasMember("design_document")) {
            stored_design = &(*stored.doc)["design_document"];
          }
          for (v1::FieldChange& change :
               couchdb::PlanDesignDoc(spec.body, stored_design, /*drop_unknown_fields=*/true)
                   .changes) {
            change.set_path(absl::StrCat("design_document.", change.path()));
            *outcome.add_changes() = std::move(change);
          }
          if (stored.doc && (!stored.doc->HasMember("target") ||
                             !couchdb::JsonEqual((*stored.doc)["target"], entry["target"]))) {
            v1::FieldChange& change = *outcome.add_changes();
            change.set_path("target");
            if (stored.doc->HasMember("target")) {
              change.set_old_json(couchdb::ToJson((*stored.doc)["target"]));
            }
            change.set_new_json(couchdb::ToJson(entry["target"]));
          }
          if (request_.dry_run()) {
            outcome.set_action(stored.doc ? v1::DesignDocOutcome::WOULD_UPDATE
                                          : v1::DesignDocOutcome::WOULD_CREATE);
            return std::nullopt;
          }
          rapidjson::Document to_write;
          to_write.CopyFrom(entry, to_write.GetAllocator());
          if (options_.before_write) options_.before_write(registry, id);
          return to_write;
        });
    if (!written.ok()) return written.status();
    if (written->written) {
      v1::DesignDocOutcome& outcome = *event.mutable_outcome();
      outcome.set_rev(written->written_rev);
      outcome.set_action(written->existed ? v1::DesignDocOutcome::UPDATED
                                          : v1::DesignDocOutcome::CREATED);
    }
    return Send(event) ? absl::OkStatus() : Cancelled();
  }

  pool::TaskRunner& runner_;
  const Uploader::Options& options_;
  const v1::UploadRequest& request_;
  const Uploader::Emit& emit_;
  const std::stop_token stop_;
  std::vector<DesignDocSpec> specs_;
  std::unique_ptr<couchdb::CouchClient> couch_;
  couchdb::CouchClient::Options couch_options_;  // couch_'s, without the stop
  bool cancelled_ = false;
  // Design documents written (or, on a dry run, that would change) and found as they should
  // be, from the outcomes sent (StoppedEarly).
  int written_ = 0;
  int unchanged_ = 0;
};

}  // namespace

Uploader::Uploader(pool::TaskRunner& runner) : Uploader(runner, Options()) {}

Uploader::Uploader(pool::TaskRunner& runner, Options options)
    : runner_(runner), options_(std::move(options)) {}

absl::Status Uploader::Run(const v1::UploadRequest& request, const Emit& emit,
                           std::stop_token stop) const {
  // The one place every message leaves through: whatever built it (a curl error, a URL that
  // did not parse, CouchDB's reason), a password in it does not get out.
  Emit redacting = [&emit](const v1::UploadEvent& event) {
    if (!event.has_problem()) return emit(event);
    v1::UploadEvent copy = event;
    copy.mutable_problem()->set_message(couchdb::RedactCredentials(event.problem().message()));
    return emit(copy);
  };
  absl::Status status =
      UploadRun(runner_, options_, request, redacting, std::move(stop)).Execute();
  if (status.ok()) return status;
  return absl::Status(status.code(), couchdb::RedactCredentials(status.message()));
}

}  // namespace cnp::upload
