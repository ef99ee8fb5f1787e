// A staged deploy's index build: the new views are written under a staging design document
// ("_design/<name>__staging") holding only the index inputs (views, options, language), so
// its index signature is the one the live document will have. Its index is built and waited
// for with progress reports; once the live document is written with the same index inputs,
// CouchDB finds that index already built and queries switch over without a rebuild. The
// staging document is removed last; the index stays, referenced by the live document.
#pragma once

#include <functional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cnp/v1/upload.pb.h"
#include "rapidjson/document.h"
#include "service/upload/couch_client.h"

namespace cnp::upload {

std::string StagingName(absl::string_view name);

class StagedIndexBuild {
 public:
  // `report` gets each progress step; it returns false when nobody listens any more, which
  // ends the wait (the staging document is left for the next run to reuse).
  StagedIndexBuild(CouchClient& couch, std::string database, std::string name,
                   absl::Duration poll_interval,
                   std::function<bool(const v1::IndexBuildProgress&)> report);

  // Writes the staging document for `document`'s index inputs, starts its index build and
  // returns once CouchDB reports the index up to date.
  absl::Status Build(const rapidjson::Value& document);

  // Deletes the staging document written by Build.
  absl::Status Remove();

 private:
  bool Report(absl::string_view phase, int64_t done = 0, int64_t total = 0);
  // Sums changes_done/total_changes of the indexer tasks building the staging document; false
  // when there is none (not started yet, or finished).
  absl::StatusOr<bool> IndexerRunning(int64_t& done, int64_t& total);

  CouchClient& couch_;
  std::string database_;
  std::string name_;
  absl::Duration poll_interval_;
  std::function<bool(const v1::IndexBuildProgress&)> report_;
  std::string staging_rev_;
};

}  // namespace cnp::upload
