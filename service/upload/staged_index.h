// A staged deploy's index build: the new views are written under a staging design document
// ("_design/<name>__staging") holding only the index inputs (views, options, language), so
// its index signature is the one the live document will have. Its index is built and waited
// for with progress reports; once the live document is written with the same index inputs,
// CouchDB finds that index already built and queries switch over without a rebuild.
//
// The staging document is removed last, and only once the live document's index has caught
// up and been committed. The two documents share one index process; right after a build
// CouchDB 3 holds its work uncommitted for a few seconds (_info: "waiting_commit": true), and
// deleting the staging document then shuts the shared index down and loses that work: the
// live view's first query rebuilds it from scratch (seen on CouchDB 3.4.3). So AwaitLiveIndex
// polls the live document's _info until its update_seq reaches the staging build's and
// waiting_commit is false; if that never happens in time, the staging document is kept.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cnp/v1/upload.pb.h"
#include "rapidjson/document.h"
#include "common/couchdb/couch_client.h"

namespace cnp::upload {

std::string StagingName(absl::string_view name);

// The member that marks a staging document as the one of _design/<its value>.
inline constexpr char kStagingMark[] = "cnp_staging_for";
// Whether `doc` is the staging document of _design/`name` (marked so; or, as earlier releases
// wrote it, unmarked and holding only index inputs, the very ones of `staging`), which a
// staged upload may overwrite and delete.
bool IsStagingDocumentOf(const rapidjson::Value& doc, absl::string_view name,
                         const rapidjson::Value& staging);

class StagedIndexBuild {
 public:
  // `report` gets each progress step; it returns false when nobody listens any more, which
  // ends the wait (the staging document is left for the next run to reuse).
  // `heartbeat`: how often a "building" event is sent while the index build shows no
  // progress to report.
  StagedIndexBuild(couchdb::CouchClient& couch, std::string database, std::string name,
                   absl::Duration poll_interval, absl::Duration heartbeat,
                   std::function<bool(const v1::IndexBuildProgress&)> report);

  // Writes the staging document for `document`'s index inputs, starts its index build and
  // returns once CouchDB reports the index up to date.
  absl::Status Build(const rapidjson::Value& document);

  // Waits, up to `timeout`, until the live design document's index (read from its _info) is
  // at the update_seq the staging build reached and CouchDB has committed it. Call it after
  // writing the live document and before Remove. DEADLINE_EXCEEDED (or the _info read's
  // error) means the staging document must stay: removing it could lose the built index.
  // FAILED_PRECONDITION means the live document's index signature is not the staging one's
  // (the live document was changed meanwhile): it does not use the built index, so there is
  // nothing to wait for and the staging document may go.
  absl::Status AwaitLiveIndex(absl::Duration timeout);
  // The server keeps no index state to read (pouchdb-server's _info has no view_index), so
  // AwaitLiveIndex had nothing to check and said OK: the caller tells its user so.
  bool settle_unverifiable() const {
    return built_index_ && absl::IsUnimplemented(built_seq_.status());
  }

  // Deletes the staging document written by Build.
  absl::Status Remove();

  // After a stop (the Upload was cancelled) cut Build short: deletes the staging document it
  // wrote through `couch`, a client of its own (the build's refuses every request once
  // stopped), reporting nothing (nobody listens). OK when it was deleted; otherwise why it may
  // still be there. Only for a stopped Build: the live document was not written, so nothing
  // uses the staging document's index.
  absl::Status RemoveAfterStop(couchdb::CouchClient& couch);
  // Whether Build may have written the staging document (it sent the PUT).
  bool staging_written() const { return put_sent_; }

 private:
  bool Report(absl::string_view phase, int64_t done = 0, int64_t total = 0);
  // DELETEs the staging document at staging_rev_ through `couch`.
  absl::Status DeleteStaging(couchdb::CouchClient& couch);
  // Sums changes_done/total_changes of the indexer tasks building the staging document; false
  // when there is none (not started yet, or finished).
  absl::StatusOr<bool> IndexerRunning(int64_t& done, int64_t& total);

  // What GET /<db>/_design/<name>/_info says of the index.
  struct IndexInfo {
    std::string signature;  // the index's identity: equal inputs, equal signature
    int64_t update_seq = 0;
    // Unset when _info does not say (a server that is not CouchDB 3, a proxy that reshaped
    // the answer): then nothing shows the index committed.
    std::optional<bool> waiting_commit;
  };
  absl::StatusOr<IndexInfo> ReadIndexInfo(absl::string_view design_name);

  couchdb::CouchClient& couch_;
  std::string database_;
  std::string name_;
  absl::Duration poll_interval_;
  absl::Duration heartbeat_;
  std::function<bool(const v1::IndexBuildProgress&)> report_;
  std::string staging_rev_;
  bool put_sent_ = false;
  bool built_index_ = false;
  // The staging index's update_seq right after its build, or why it could not be read.
  absl::StatusOr<int64_t> built_seq_ = absl::UnknownError("the index was not built");
  std::string built_signature_;
};

}  // namespace cnp::upload
