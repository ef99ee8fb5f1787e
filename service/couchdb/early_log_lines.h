// A Session stream's log() lines, sent to CouchDB as its functions make them, as couchjs writes
// each at once: CouchDB restarts its read timeout on each line, so each also moves the command's
// deadline (by CouchDB's timeout less the session's margin, never past the command's cap).
//
// The worker's lines come on whichever thread reads its socket (pool/worker.h); they are queued
// here and written from the stream's own thread, as partial SessionOutputs, through the writer
// the stream gives. Those not written when the command is answered go at the head of its answer
// (TakeUnwritten): CouchDB reads the lines in the order they were made, then the answer. Their
// attributed copies go to the service's log from the same thread, as they come: that thread runs
// in the call's log scope (rpc/call_executor.h), which names the Session RPC and its peer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "asio/any_io_executor.hpp"
#include "cnp/v1/functions.pb.h"
#include "google/protobuf/repeated_field.h"
#include "service/pool/worker.h"
#include "worker.pb.h"

namespace cnp::couchdb {

class EarlyLogLines final : public pool::TaskLogListener,
                            public std::enable_shared_from_this<EarlyLogLines> {
 public:
  // Writes one partial output on the stream; false when the stream holds too much unread.
  using Writer = std::function<bool(v1::SessionOutput)>;

  EarlyLogLines(asio::any_io_executor executor, Writer writer)
      : executor_(std::move(executor)), writer_(std::move(writer)) {}

  // Before each exchange, on the stream's thread: a line moves the deadline to its time plus
  // `restart`, never past `latest`.
  void Arm(absl::Duration restart, absl::Time latest);

  absl::Time OnLog(worker::v1::Reply interim) override;

  // On the stream's thread, once the command is answered: the lines not written yet go at the
  // head of `answer`, with a line saying how many were dropped, if any were.
  void TakeUnwritten(v1::SessionOutput& answer);
  // On the stream's thread, in the call's log scope: writes the lines' attributed copies not
  // written yet to the service's log (function_log.h), before the answer's own.
  void LogAttributed();

  // What the lines not yet written may hold, each counted with its string's own bytes; past it,
  // lines are dropped, and a line in their place says how many (a function that logs faster
  // than CouchDB reads).
  static constexpr int64_t kMaxHeldBytes = int64_t{16} << 20;
  // Attributed copies held for the service's log until the stream's thread writes them; past it
  // they are counted with the lines the log's own rate limit leaves out (which would leave
  // these out too), and said with them.
  static constexpr int kMaxHeldAttributed = 1000;

 private:
  // On the stream's thread: writes the lines held, in pieces, while the stream takes them; what
  // it does not take is tried again 20 ms later.
  void Flush();

  const asio::any_io_executor executor_;
  const Writer writer_;
  absl::Mutex mutex_;
  absl::Duration restart_ ABSL_GUARDED_BY(mutex_);
  absl::Time latest_ ABSL_GUARDED_BY(mutex_) = absl::InfiniteFuture();
  std::vector<std::string> held_ ABSL_GUARDED_BY(mutex_);  // CouchDB log lines, in order
  int64_t held_bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t dropped_ ABSL_GUARDED_BY(mutex_) = 0;
  bool flush_posted_ ABSL_GUARDED_BY(mutex_) = false;
  google::protobuf::RepeatedPtrField<worker::v1::FunctionLog> attributed_
      ABSL_GUARDED_BY(mutex_);
  int64_t attributed_dropped_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace cnp::couchdb
