#include "service/upload/staged_index.h"

#include <condition_variable>
#include <mutex>
#include <optional>
#include <stop_token>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/couchdb/design_diff.h"
#include "common/couchdb/json.h"

namespace cnp::upload {
namespace {

// Waits `pause`, or less when a stop is requested (the Upload was cancelled): false then.
bool PauseUnlessStopped(const std::stop_token& stop, absl::Duration pause) {
  std::mutex mu;
  std::condition_variable_any never_notified;
  std::unique_lock lock(mu);
  never_notified.wait_for(lock, stop, absl::ToChronoNanoseconds(pause), [] { return false; });
  return !stop.stop_requested();
}

// Report() fails once the call's stop was requested or its client is gone.
absl::Status StoppedByRequest() {
  return absl::CancelledError(
      "the upload was cancelled (the client went away, its deadline passed, or the server "
      "is shutting down)");
}

absl::Status StoppedWhileWaiting() {
  return absl::CancelledError(
      "the upload was cancelled while it waited for CouchDB's index build");
}

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

// An update_seq as _info reports it: a number, or (some CouchDB versions) a string that
// starts with one ("12-g1AAAA...").
std::optional<int64_t> SequenceNumber(const rapidjson::Value& seq) {
  if (seq.IsInt64()) return seq.GetInt64();
  if (!seq.IsString()) return std::nullopt;
  absl::string_view text(seq.GetString(), seq.GetStringLength());
  size_t digits = 0;
  while (digits < text.size() && absl::ascii_isdigit(text[digits])) ++digits;
  int64_t number;
  if (digits == 0 || !absl::SimpleAtoi(text.substr(0, digits), &number)) return std::nullopt;
  return number;
}

}  // namespace

std::string StagingName(absl::string_view name) { return absl::StrCat(name, "__staging"); }

bool IsStagingDocumentOf(const rapidjson::Value& doc, absl::string_view name,
                         const rapidjson::Value& staging) {
  if (couchdb::StringMember(doc, kStagingMark) == name) return true;
  // Earlier releases wrote no mark, only the index inputs: an unmarked document is taken for
  // one only when it holds nothing else and the very inputs being staged (the same upload run
  // again after an interruption). A plain upload may have written a views-only design
  // document of that name, which is someone's own.
  if (doc.HasMember(kStagingMark)) return false;
  for (const auto& member : doc.GetObject()) {
    const absl::string_view field = couchdb::StringView(member.name);
    if (field != "_id" && field != "_rev" && field != "language" && field != "views" &&
        field != "options") {
      return false;
    }
  }
  return couchdb::SameIndexInputs(doc, staging);
}

StagedIndexBuild::StagedIndexBuild(couchdb::CouchClient& couch, std::string database, std::string name,
                                   absl::Duration poll_interval, absl::Duration heartbeat,
                                   std::function<bool(const v1::IndexBuildProgress&)> report)
    : couch_(couch),
      database_(std::move(database)),
      name_(std::move(name)),
      poll_interval_(poll_interval),
      heartbeat_(heartbeat),
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
  const std::string path = couchdb::DesignDocPath(database_, StagingName(name_));

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

  // Marked as ours: a design document of that name that is not (someone's own) is neither
  // overwritten nor, once the live document is in place, deleted.
  staging.AddMember(rapidjson::StringRef(kStagingMark),
                    couchdb::StringValue(name_, alloc), alloc);

  // A staging document left by an interrupted run is overwritten (its index is reused when
  // the views are the same).
  absl::StatusOr<couchdb::HttpResponse> existing = couch_.Get(path);
  if (!existing.ok()) return existing.status();
  if (existing->status == 200) {
    // Exactly: the staged inputs may hold integers past 64 bits, kept digit for digit.
    absl::StatusOr<rapidjson::Document> old = couchdb::ParseJsonExact(existing->body);
    if (!old.ok() || !old->IsObject() || !IsStagingDocumentOf(*old, name_, staging)) {
      return absl::FailedPreconditionError(absl::StrCat(
          staging_id, " in ", database_, " is a design document of its own, not one a staged "
          "upload of _design/", name_, " left (it has no \"", kStagingMark, "\": \"", name_,
          "\"): it is not overwritten; rename it, or upload without --staged. If an earlier "
          "release's staged upload left it, delete it and run again"));
    }
    if (old->HasMember("_rev") && (*old)["_rev"].IsString()) {
      staging.AddMember("_rev", rapidjson::Value((*old)["_rev"], alloc), alloc);
    }
  }
  put_sent_ = true;
  absl::StatusOr<couchdb::HttpResponse> put = couch_.Put(path, couchdb::ToJson(staging));
  if (!put.ok()) return put.status();
  if (put->status != 201 && put->status != 202) {
    return couchdb::HttpError(*put, absl::StrCat("writing ", staging_id, " in ", database_),
                     couch_.base_url());
  }
  absl::StatusOr<rapidjson::Document> written = couchdb::ParseJson(put->body);
  if (written.ok() && written->IsObject() && written->HasMember("rev") &&
      (*written)["rev"].IsString()) {
    staging_rev_ = (*written)["rev"].GetString();
  }
  if (!Report("staged")) return StoppedByRequest();

  std::vector<std::string> views = couchdb::ViewNames(staging);
  if (views.empty()) return absl::OkStatus();
  const std::string view_path =
      absl::StrCat(path, "/_view/", couchdb::CouchClient::EscapeSegment(views.front()), "?limit=0");

  // update=lazy answers at once and starts the build in the background.
  absl::StatusOr<couchdb::HttpResponse> trigger = couch_.Get(absl::StrCat(view_path, "&update=lazy"));
  if (!trigger.ok()) return trigger.status();
  if (trigger->status != 200) {
    return couchdb::HttpError(*trigger, absl::StrCat("starting the index build of ", staging_id),
                     couch_.base_url());
  }

  for (;;) {
    int64_t done = 0, total = 0;
    absl::StatusOr<bool> running = IndexerRunning(done, total);
    if (!running.ok()) return running.status();
    if (!*running) break;
    if (!Report("building", done, total)) return StoppedByRequest();
    if (!PauseUnlessStopped(couch_.stop(), poll_interval_)) return StoppedWhileWaiting();
  }
  // The task list may not show a build that has not started yet or was missed between polls
  // (nor, to a database admin, any build at all); a plain query waits until the index is up to
  // date, so it is the proof. It may wait for hours: meanwhile a "building" event every
  // heartbeat_ keeps the call visibly alive, or a proxy in between (nginx's grpc_read_timeout)
  // would cut a call that sent nothing, and the build with it.
  absl::Time next_heartbeat = absl::Now() + heartbeat_;
  bool listener_gone = false;
  const std::function<bool(absl::string_view)> discard = [](absl::string_view) { return true; };
  const std::function<bool()> keep_going = [&] {
    if (absl::Now() < next_heartbeat) return true;
    next_heartbeat = absl::Now() + heartbeat_;
    listener_gone = !Report("building");
    return !listener_gone;
  };
  absl::StatusOr<couchdb::HttpResponse> built =
      couch_.GetStreaming(view_path, discard, keep_going);
  if (listener_gone) return StoppedByRequest();
  if (!built.ok()) return built.status();
  if (built->status != 200) {
    return couchdb::HttpError(*built, absl::StrCat("building the index of ", staging_id),
                     couch_.base_url());
  }
  built_index_ = true;
  // Where the build got to: the live document's index must reach it before the staging
  // document may go. A failure here is not the build's; it only means the staging document
  // will be kept (see AwaitLiveIndex).
  absl::StatusOr<IndexInfo> info = ReadIndexInfo(StagingName(name_));
  if (info.ok()) {
    built_seq_ = info->update_seq;
    built_signature_ = info->signature;
  } else {
    built_seq_ = info.status();
  }
  if (!Report("built")) return StoppedByRequest();
  return absl::OkStatus();
}

absl::StatusOr<StagedIndexBuild::IndexInfo> StagedIndexBuild::ReadIndexInfo(
    absl::string_view design_name) {
  const std::string what = absl::StrCat("reading the index state of _design/", design_name,
                                        " in ", database_);
  absl::StatusOr<couchdb::HttpResponse> response =
      couch_.Get(absl::StrCat(couchdb::DesignDocPath(database_, design_name), "/_info"));
  if (!response.ok()) return response.status();
  if (response->status != 200) return couchdb::HttpError(*response, what, couch_.base_url());
  absl::StatusOr<rapidjson::Document> doc = couchdb::ParseJson(response->body);
  if (!doc.ok() || !doc->IsObject()) {
    return absl::UnknownError(
        absl::StrCat(what, " at ", couch_.base_url(), ": CouchDB sent a malformed _info"));
  }
  const rapidjson::Value* index = nullptr;
  {
    auto it = doc->FindMember("view_index");
    if (it != doc->MemberEnd() && it->value.IsObject()) index = &it->value;
  }
  if (index == nullptr) {
    // pouchdb-server answers {"view_index": "Not implemented."}: a server that keeps no
    // CouchDB index state has none to lose either.
    return absl::UnimplementedError(
        absl::StrCat(what, " at ", couch_.base_url(), ": the server reports no view_index"));
  }
  std::optional<int64_t> seq;
  {
    auto it = index->FindMember("update_seq");
    if (it != index->MemberEnd()) seq = SequenceNumber(it->value);
  }
  if (!seq) {
    return absl::UnknownError(absl::StrCat(what, " at ", couch_.base_url(),
                                           ": its _info has no view_index.update_seq"));
  }
  IndexInfo info;
  info.update_seq = *seq;
  auto signature = index->FindMember("signature");
  if (signature != index->MemberEnd() && signature->value.IsString()) {
    info.signature = signature->value.GetString();
  }
  auto waiting = index->FindMember("waiting_commit");
  if (waiting != index->MemberEnd() && waiting->value.IsBool()) info.waiting_commit = waiting->value.GetBool();
  return info;
}

absl::Status StagedIndexBuild::AwaitLiveIndex(absl::Duration timeout) {
  if (!built_index_) return absl::OkStatus();  // no views: no index to lose
  if (absl::IsUnimplemented(built_seq_.status())) return absl::OkStatus();
  const std::string live = absl::StrCat("_design/", name_);
  const std::string staging = absl::StrCat("_design/", StagingName(name_));
  if (!built_seq_.ok()) {
    return absl::Status(
        built_seq_.status().code(),
        absl::StrCat("could not tell how far the index of ", staging, " was built (",
                     built_seq_.status().message(), "); ", staging, " was kept in ", database_,
                     " so that the index ", live, " now uses is not lost; delete it once GET /",
                     database_, "/", live, "/_info shows \"waiting_commit\": false"));
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<IndexInfo> info = ReadIndexInfo(name_);
    if (!info.ok()) {
      return absl::Status(info.status().code(),
                          absl::StrCat(info.status().message(), "; ", staging,
                                       " was kept so that its index is not lost"));
    }
    if (!built_signature_.empty() && !info->signature.empty() &&
        info->signature != built_signature_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the index signature of ", live, " in ", database_, " (", info->signature,
          ") is not the one built under ", staging, " (", built_signature_,
          "): the live document was changed meanwhile, and its views will be built anew on "
          "their first query"));
    }
    if (!info->waiting_commit.has_value()) {
      return absl::UnknownError(absl::StrCat(
          "GET /", database_, "/", live, "/_info at ", couch_.base_url(),
          " has no boolean view_index.waiting_commit, so nothing shows that CouchDB committed the "
          "index; ", staging, " was kept so that its index is not lost: delete it once that "
          "_info shows update_seq ", *built_seq_, " and \"waiting_commit\": false"));
    }
    if (info->update_seq >= *built_seq_ && !*info->waiting_commit) {
      Report("settled", info->update_seq, *built_seq_);
      return absl::OkStatus();
    }
    // Caught up but not committed: what is waited for is the commit alone, and an update_seq
    // past the build's ("8 of 7": documents written since) read as a fault where it was none.
    const bool caught_up = info->update_seq >= *built_seq_;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the index of ", live, " in ", database_, " did not settle within ",
          absl::FormatDuration(timeout),
          caught_up ? absl::StrCat(" (its update_seq ", info->update_seq, " has reached the "
                                   "build's ", *built_seq_, ", but CouchDB still reports "
                                   "\"waiting_commit\": true)")
                    : absl::StrCat(" (update_seq ", info->update_seq, " of the build's ",
                                   *built_seq_, *info->waiting_commit ? ", still waiting_commit" : "",
                                   ")"),
          "; ", staging,
          " was kept so that CouchDB does not drop the built index: delete it once GET /",
          database_, "/", live, "/_info shows update_seq ", *built_seq_,
          " and \"waiting_commit\": false (or raise --staged-settle-timeout)"));
    }
    if (!Report(caught_up ? "committing" : "settling", info->update_seq, *built_seq_)) {
      return StoppedByRequest();
    }
    if (!PauseUnlessStopped(couch_.stop(), poll_interval_)) return StoppedWhileWaiting();
  }
}

absl::StatusOr<bool> StagedIndexBuild::IndexerRunning(int64_t& done, int64_t& total) {
  absl::StatusOr<couchdb::HttpResponse> tasks = couch_.Get("/_active_tasks");
  if (!tasks.ok()) return tasks.status();
  if (tasks->status == 401 || tasks->status == 403) {
    // Only server admins may read _active_tasks; a database admin still gets the build, just
    // without the progress numbers.
    Report("building");
    return false;
  }
  if (tasks->status != 200) {
    return couchdb::HttpError(*tasks, "reading _active_tasks", couch_.base_url());
  }
  absl::StatusOr<rapidjson::Document> list = couchdb::ParseJson(tasks->body);
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
  if (absl::Status deleted = DeleteStaging(couch_); !deleted.ok()) return deleted;
  Report("cleaned");
  return absl::OkStatus();
}

absl::Status StagedIndexBuild::RemoveAfterStop(couchdb::CouchClient& couch) {
  if (staging_rev_.empty()) {
    // Only the revision written is deleted, never one someone else wrote since; without it
    // (the PUT's answer was cut off) there is no telling.
    return absl::FailedPreconditionError(
        "its write was cut off before CouchDB answered, so whether it was written is unknown");
  }
  return DeleteStaging(couch);
}

absl::Status StagedIndexBuild::DeleteStaging(couchdb::CouchClient& couch) {
  const std::string path = couchdb::DesignDocPath(database_, StagingName(name_));
  absl::StatusOr<couchdb::HttpResponse> deleted =
      couch.Delete(absl::StrCat(path, "?rev=", couchdb::CouchClient::EscapeSegment(staging_rev_)));
  if (!deleted.ok()) return deleted.status();
  if (deleted->status != 200 && deleted->status != 202) {
    return couchdb::HttpError(*deleted,
                     absl::StrCat("removing _design/", StagingName(name_), " from ", database_),
                     couch.base_url());
  }
  staging_rev_.clear();
  return absl::OkStatus();
}

}  // namespace cnp::upload
