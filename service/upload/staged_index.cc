#include "service/upload/staged_index.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "service/upload/design_diff.h"
#include "service/upload/json.h"

namespace cnp::upload {
namespace {

// CouchDB 3 names a shard's database "shards/<range>/<db>.<suffix>"; 1.x names the database.
bool SameDatabase(absl::string_view task_database, absl::string_view database) {
  if (task_database == database) return true;
  if (!absl::ConsumePrefix(&task_database, "shards/")) return false;
  size_t slash = task_database.find('/');
  if (slash == absl::string_view::npos) return false;
  task_database.remove_prefix(slash + 1);
  size_t dot = task_database.rfind('.');
  return task_database.substr(0, dot) == database;
}

}  // namespace

std::string StagingName(absl::string_view name) { return absl::StrCat(name, "__staging"); }

StagedIndexBuild::StagedIndexBuild(CouchClient& couch, std::string database, std::string name,
                                   absl::Duration poll_interval,
                                   std::function<bool(const v1::IndexBuildProgress&)> report)
    : couch_(couch),
      database_(std::move(database)),
      name_(std::move(name)),
      poll_interval_(poll_interval),
      report_(std::move(report)) {}

bool StagedIndexBuild::Report(absl::string_view phase, int64_t done, int64_t total) {
  v1::IndexBuildProgress progress;
  progress.set_database(database_);
  progress.set_id(absl::StrCat("_design/", StagingName(name_)));
  progress.set_phase(std::string(phase));
  progress.set_changes_done(done);
  progress.set_total_changes(total);
  return report_(progress);
}

absl::Status StagedIndexBuild::Build(const rapidjson::Value& document) {
  const std::string staging_id = absl::StrCat("_design/", StagingName(name_));
  const std::string path = DesignDocPath(database_, StagingName(name_));

  // Only the index inputs: a staged validate_doc_update would check every write twice.
  rapidjson::Document staging(rapidjson::kObjectType);
  auto& alloc = staging.GetAllocator();
  staging.AddMember("_id", rapidjson::Value(staging_id.c_str(), alloc), alloc);
  for (const char* input : {"language", "views", "options"}) {
    auto it = document.FindMember(input);
    if (it != document.MemberEnd()) {
      staging.AddMember(rapidjson::StringRef(input), rapidjson::Value(it->value, alloc), alloc);
    }
  }

  // A staging document left by an interrupted run is overwritten (its index is reused when
  // the views are the same).
  absl::StatusOr<HttpResponse> existing = couch_.Get(path);
  if (!existing.ok()) return existing.status();
  if (existing->status == 200) {
    absl::StatusOr<rapidjson::Document> old = ParseJson(existing->body);
    if (old.ok() && old->IsObject() && old->HasMember("_rev") && (*old)["_rev"].IsString()) {
      staging.AddMember("_rev", rapidjson::Value((*old)["_rev"], alloc), alloc);
    }
  }
  absl::StatusOr<HttpResponse> put = couch_.Put(path, ToJson(staging));
  if (!put.ok()) return put.status();
  if (put->status != 201 && put->status != 202) {
    return HttpError(*put, absl::StrCat("writing ", staging_id, " in ", database_),
                     couch_.base_url());
  }
  absl::StatusOr<rapidjson::Document> written = ParseJson(put->body);
  if (written.ok() && written->IsObject() && written->HasMember("rev") &&
      (*written)["rev"].IsString()) {
    staging_rev_ = (*written)["rev"].GetString();
  }
  if (!Report("staged")) return absl::CancelledError("the client went away");

  std::vector<std::string> views = ViewNames(staging);
  if (views.empty()) return absl::OkStatus();
  const std::string view_path =
      absl::StrCat(path, "/_view/", CouchClient::EscapeSegment(views.front()), "?limit=0");

  // update=lazy answers at once and starts the build in the background.
  absl::StatusOr<HttpResponse> trigger = couch_.Get(absl::StrCat(view_path, "&update=lazy"));
  if (!trigger.ok()) return trigger.status();
  if (trigger->status != 200) {
    return HttpError(*trigger, absl::StrCat("starting the index build of ", staging_id),
                     couch_.base_url());
  }

  for (;;) {
    int64_t done = 0, total = 0;
    absl::StatusOr<bool> running = IndexerRunning(done, total);
    if (!running.ok()) return running.status();
    if (!*running) break;
    if (!Report("building", done, total)) return absl::CancelledError("the client went away");
    absl::SleepFor(poll_interval_);
  }
  // The task list may not show a build that has not started yet or was missed between polls;
  // a plain query waits until the index is up to date, so it is the proof.
  absl::StatusOr<HttpResponse> built = couch_.GetWithoutTimeout(view_path);
  if (!built.ok()) return built.status();
  if (built->status != 200) {
    return HttpError(*built, absl::StrCat("building the index of ", staging_id),
                     couch_.base_url());
  }
  if (!Report("built")) return absl::CancelledError("the client went away");
  return absl::OkStatus();
}

absl::StatusOr<bool> StagedIndexBuild::IndexerRunning(int64_t& done, int64_t& total) {
  absl::StatusOr<HttpResponse> tasks = couch_.Get("/_active_tasks");
  if (!tasks.ok()) return tasks.status();
  if (tasks->status == 401 || tasks->status == 403) {
    // Only server admins may read _active_tasks; a database admin still gets the build, just
    // without the progress numbers.
    Report("building");
    return false;
  }
  if (tasks->status != 200) {
    return HttpError(*tasks, "reading _active_tasks", couch_.base_url());
  }
  absl::StatusOr<rapidjson::Document> list = ParseJson(tasks->body);
  if (!list.ok() || !list->IsArray()) return false;
  const std::string staging_id = absl::StrCat("_design/", StagingName(name_));
  bool running = false;
  for (const auto& task : list->GetArray()) {
    if (!task.IsObject()) continue;
    auto field = [&](const char* key) -> absl::string_view {
      auto it = task.FindMember(key);
      if (it == task.MemberEnd() || !it->value.IsString()) return {};
      return absl::string_view(it->value.GetString(), it->value.GetStringLength());
    };
    auto number = [&](const char* key) -> int64_t {
      auto it = task.FindMember(key);
      return it != task.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : 0;
    };
    if (field("type") != "indexer" || field("design_document") != staging_id ||
        !SameDatabase(field("database"), database_)) {
      continue;
    }
    running = true;
    done += number("changes_done");
    total += number("total_changes");
  }
  return running;
}

absl::Status StagedIndexBuild::Remove() {
  if (staging_rev_.empty()) return absl::OkStatus();
  const std::string path = DesignDocPath(database_, StagingName(name_));
  absl::StatusOr<HttpResponse> deleted =
      couch_.Delete(absl::StrCat(path, "?rev=", CouchClient::EscapeSegment(staging_rev_)));
  if (!deleted.ok()) return deleted.status();
  if (deleted->status != 200 && deleted->status != 202) {
    return HttpError(*deleted,
                     absl::StrCat("removing _design/", StagingName(name_), " from ", database_),
                     couch_.base_url());
  }
  staging_rev_.clear();
  Report("cleaned");
  return absl::OkStatus();
}

}  // namespace cnp::upload
