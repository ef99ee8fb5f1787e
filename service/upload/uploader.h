// The Upload RPC's work: YAML files in, design documents in CouchDB out (cnp upload, cnp
// check). Runs blocking on the calling thread and streams what it finds through `emit`.
//
//   cnp::upload::Uploader uploader(runner);
//   absl::Status status = uploader.Run(request, [&](const cnp::v1::UploadEvent& e) {
//     return writer->Write(e);  // false when the client went away: the upload stops
//   });
//
// The steps: parse every file and resolve every function's |version in a worker, reporting
// all problems with file:line; write nothing if there was any. Then, per design document and
// target database: read the stored one, compute the diff (keeping fields the YAML does not
// mention unless asked to drop them), and write it only when it changed, with the stored
// _rev; a 409 is re-read, re-diffed and retried a bounded number of times. With `staged`, the
// new views' index is built under a staging id first.
#pragma once

#include <functional>
#include <stop_token>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cnp/v1/upload.pb.h"
#include "service/pool/task_runner.h"
#include "service/upload/couch_allow_list.h"
#include "service/upload/design_yaml.h"

namespace cnp::upload {

class Uploader {
 public:
  using Emit = std::function<bool(const v1::UploadEvent&)>;

  struct Options {
    // How long the functions' resolve in a worker may take (a call's earlier deadline ends it
    // sooner, through `stop`).
    absl::Duration resolve_timeout = absl::Seconds(30);
    absl::Duration http_timeout = absl::Seconds(60);
    // How often a staged deploy polls CouchDB's _active_tasks for its index build's progress.
    absl::Duration staged_poll_interval = absl::Seconds(2);
    // How often a staged deploy whose build shows no progress (not in _active_tasks, or not
    // readable there) still sends a "building" event: well within a proxy's read timeout
    // (nginx's grpc_read_timeout is 60 s unless set).
    absl::Duration staged_heartbeat = absl::Seconds(20);
    // How long a staged deploy waits for the live document's index to be committed before it
    // gives up and keeps the staging document (a request's staged_settle_seconds wins).
    absl::Duration staged_settle_timeout = absl::Seconds(60);
    // What one request's YAML may cost (cnp-server's --max-yaml-bytes, --max-yaml-nodes,
    // --max-design-bytes).
    YamlLimits yaml_limits;
    // The longest answer read from CouchDB (--max-couchdb-response-bytes).
    int64_t max_couchdb_response_bytes = int64_t{64} << 20;
    // Where uploads may go (--couchdb-allow); by default CouchDB on this host only.
    CouchAllowList couchdb_allow;
    // Called right before each design document write; tests use it to race a concurrent edit.
    std::function<void(const std::string& database, const std::string& id)> before_write;
  };

  explicit Uploader(pool::TaskRunner& runner);
  Uploader(pool::TaskRunner& runner, Options options);

  // OK when every design document reached its target state (or, with check_only/dry_run,
  // everything was valid). Otherwise the first error's status, with a message that stands
  // alone (the events hold every problem in detail):
  //   INVALID_ARGUMENT   the request or the YAML is wrong; nothing was written
  //   UNAVAILABLE        CouchDB or the workers could not be reached
  //   UNAUTHENTICATED    CouchDB refused the credentials
  //   PERMISSION_DENIED  CouchDB refused a write, or the URL is not allowed (--couchdb-allow)
  //   RESOURCE_EXHAUSTED the YAML or an answer from CouchDB went over a limit
  //   NOT_FOUND          a target database does not exist
  //   ABORTED            a design document kept changing concurrently (409s)
  //   UNKNOWN            CouchDB answered something else (a 5xx, malformed JSON)
  //   CANCELLED          `emit` returned false, or `stop` was requested
  // No message, in an event or the status, holds a credential (see RedactCredentials).
  // Safe to call from several threads at once: each run has its own CouchDB connection.
  // `stop` (the Upload call was cancelled, or its deadline passed) ends the run between its
  // steps, ends the resolve of its functions at once (the task dropped if no worker had taken
  // it, the worker replaced if one had), aborts a CouchDB request in progress within about a
  // second, and cuts a staged build's waits short. A run whose stop was requested before it
  // began does nothing.
  absl::Status Run(const v1::UploadRequest& request, const Emit& emit,
                   std::stop_token stop = {}) const;

 private:
  pool::TaskRunner& runner_;
  Options options_;
};

}  // namespace cnp::upload
