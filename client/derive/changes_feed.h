// One database's continuous _changes feed (feed=continuous, include_docs, heartbeat), read on
// its own thread and connection into a bounded queue that cnp derive takes its batches from
// once it has caught up.
//
// A server may end a continuous feed at any time (a restart, a proxy's idle timeout, CouchDB's
// own `timeout`): the feed then reconnects from the last sequence it queued, so nothing is
// skipped and nothing queued is read twice; while reconnecting fails it waits a growing delay
// (up to max_reconnect_delay), and so it does when a connection ended without bringing a
// single change (a proxy answering at once must not make a busy loop against CouchDB). A
// connection on which not even a heartbeat arrived for three heartbeats is taken as dead and
// replaced. An HTTP answer that retrying cannot change (4xx other than 408 and 429: the
// database was deleted, the credentials were revoked) ends the feed: failure() says why. When the queue holds max_queued changes the reader
// stops reading, and TCP makes the server wait: memory stays bounded however fast the source
// changes. A change the reader cannot use whole (its document nested deeper than
// couchdb::kMaxJsonDepth, not valid UTF-8, or longer than max_line_bytes) is handed out as
// {"seq", "id", "cnp_unreadable": why} (change_header.h), so that it is recorded as that
// document's error and the feed goes on past it: retrying it could only fail again.
//
//   ChangeSignal signal;
//   ChangesFeed feed(http_options, "orgs", "42", {.heartbeat = absl::Seconds(10)}, signal);
//   int64_t seen = signal.count();
//   if (feed.queued() == 0) signal.WaitPast(seen, absl::Seconds(5));
//   ChangesAnswer batch = feed.Take(500);   // {"results": [...], "last_seq": ...} and its text
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/derive/changes_answer.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/json_value_count.h"

namespace cnp::derive {

// Wakes whoever waits for news from any of several feeds (changes queued, a reconnection).
class ChangeSignal {
 public:
  void Notify();
  int64_t count() const;
  // Waits until count() has moved past `seen`, at most `max_wait`; false when it has not.
  bool WaitPast(int64_t seen, absl::Duration max_wait);

 private:
  mutable absl::Mutex mu_;
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

class ChangesFeed {
 public:
  struct Options {
    absl::Duration heartbeat = absl::Seconds(10);
    size_t max_queued = 1000;
    // The reader also stops once the queue holds this many bytes (it always takes one change):
    // a thousand documents of megabytes each must not all be held at once.
    size_t max_queued_bytes = size_t{64} << 20;
    absl::Duration max_reconnect_delay = absl::Seconds(5);
    size_t max_line_bytes = size_t{64} << 20;
  };

  // Starts reading `database`'s changes after `since` (a sequence as ?since= takes it).
  ChangesFeed(couchdb::CouchClient::Options http, std::string database, std::string since,
              Options options, ChangeSignal& signal);
  // Stops the reader (within about a second: libcurl's progress callback) and joins it.
  ~ChangesFeed();
  ChangesFeed(const ChangesFeed&) = delete;
  ChangesFeed& operator=(const ChangesFeed&) = delete;

  // Asks the reader to stop without waiting for it (so several feeds stop together).
  void RequestStop();

  size_t queued() const;
  // Up to `max` queued changes, and no more than `max_bytes` of them unless the first alone is
  // longer, as a _changes answer, {"results": [...], "last_seq": <the last one's seq>}; results
  // is empty when nothing is queued (last_seq is then the position the caller already has).
  ChangesAnswer Take(size_t max, size_t max_bytes = SIZE_MAX);
  // What happened to the connection since the last call (drops, reconnections), one line each.
  std::vector<std::string> TakeNotes();
  int64_t reconnections() const;
  // OK while the feed runs; why it gave up once the server refused it for good.
  absl::Status failure() const;

 private:
  struct Change {
    std::string seq_json;  // the change's seq as JSON: a string (CouchDB 2+) or a number
    std::string line;      // the whole change as the server sent it
  };
  enum class Ended { kDropped, kFinished, kIdle, kStopped, kFailed };

  void Run();
  std::string ChangesPath(const std::string& since) const;
  // Splits what arrived into lines; false when the reader is to stop.
  bool OnData(absl::string_view data);
  bool OnLine(absl::string_view line);
  // A line that cannot be used whole (`text` is all of it, or its start when it was too long):
  // queued as unreadable when its seq and id can be found, else the feed fails.
  bool OnUnreadableLine(absl::string_view text, const std::string& why);
  // Why a line past the limits is unreadable.
  std::string TooLongLine() const;
  // Waits for room in the queue; false when the reader is to stop.
  bool Enqueue(std::string seq_json, std::string line);
  void Note(std::string note);

  const couchdb::CouchClient::Options http_;
  const std::string database_;
  const Options options_;
  ChangeSignal& signal_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Change> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::string taken_seq_json_ ABSL_GUARDED_BY(mu_);  // the last change handed out, or the start
  std::vector<std::string> notes_ ABSL_GUARDED_BY(mu_);
  int64_t reconnections_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failure_status_ ABSL_GUARDED_BY(mu_);

  // The reader thread's own: where to resume, and the connection being read.
  std::string since_;
  std::string partial_line_;  // of a line longer than max_line_bytes, only its start
  size_t line_bytes_ = 0;     // the whole length of the line being read so far
  couchdb::JsonValueCount line_values_;  // and how many JSON values it holds at most
  absl::Time last_byte_;
  bool received_ = false;  // this connection brought a change or the feed's end
  bool brought_change_ = false;  // this connection brought a change
  Ended ended_ = Ended::kDropped;
  std::string failure_;

  std::thread reader_;
};

}  // namespace cnp::derive
