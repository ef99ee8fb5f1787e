// The work of `cnp derive`: each stage (target <- source, map or reduce) follows its source's
// _changes from a checkpoint kept in a _local document of the target, runs its handler in
// cnp-server and writes the derived documents with _bulk_docs, writing only what changed.
//
// Derived documents (field names are qvarn-mr's without the leading underscore, which CouchDB
// reserves: it refuses a document with an unknown top-level "_" field):
//   map row     _id "<source>:<sha(source id)>:<sha(key)>:<n>"   (n: the row's place among the
//               rows the document yielded), mr_source_id, mr_source_type (the source database),
//               mr_key, mr_value (null when the value was an object: its fields are the
//               document's), mr_version; and mr_source_rev, the source document's _rev, when a
//               reduce stage reads the rows with their source documents (sources: true)
//   reduce row  _id "<map target>:<sha(key)>", mr_key, mr_value (or the object's fields),
//               mr_source_type (the map target), mr_version
// A deleted map row keeps its mr_key in its tombstone, so that the reduce stage following the
// map target's _changes knows which key to re-reduce.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/derive/changes_feed.h"
#include "client/derive/couch_db.h"
#include "client/derive/declaration.h"
#include "client/derive/error_log_limit.h"
#include "client/lib/cnp_client.h"

namespace cnp::derive {

struct DeriverOptions {
  int batch_size = 500;                     // changes per batch (and per Map call)
  absl::Duration rpc_timeout = absl::Seconds(60);
  int max_recorded_errors = 100;            // kept in the errors document, newest last
  // When set, WaitForChanges follows each map stage's source with a continuous _changes feed
  // on a connection of its own (these options), and later batches come from that feed;
  // otherwise it waits on a longpoll _changes of each source in turn.
  std::optional<couchdb::CouchClient::Options> continuous_feed;
  absl::Duration heartbeat = absl::Seconds(10);
  // The most a reduce key's rows are read for (the _find answers' bytes): past it the key is
  // its error (RequestTooLarge), its reduce document left as it is, rather than held whole in
  // memory for a call that cannot carry it: by default the client library's message limit
  // (client::ClientOptions::max_message_bytes).
  size_t max_group_bytes = size_t{256} << 20;
  // When set, asked before every write request (derived documents, checkpoints, errors,
  // status), which is bounded by the time it gives; its refusal (FAILED_PRECONDITION) ends the
  // pass as a lost lease does.
  WriteFence* fence = nullptr;
  // When set, the status document (WriteStatus) is also written while stages catch up, at most
  // every status_every: a long initial synchronization is watched there.
  std::string status_holder;
  absl::Duration status_every = absl::Seconds(10);
  // When set, asked between batches: true ends CatchUp with CANCELLED once the batch in hand is
  // written and checkpointed (a stop signal throws away no work already done).
  std::function<bool()> stopping;
  // When set, called after each batch is written and checkpointed: a server that was away
  // answers again (its outage is said to be over then, not once the catch-up ends).
  std::function<void()> batch_done;
  // How often CheckSourcesIfDue looks at the sources (--source-check).
  absl::Duration source_check_every = absl::Seconds(30);
};

// CatchUp's status when a reduce stage read back the rows of a key without this batch's changes
// to them, read after read (a cluster's copy behind the others): like a CouchDB that does not
// serve, what a follower waits out, starting again from the checkpoints.
absl::Status IndexBehindError(absl::string_view message);
bool IsIndexBehind(const absl::Status& status);

// CheckSourcesIfDue's status when a source was deleted and created again while followed: the
// caller starts a new Deriver, whose Start removes what was derived from the earlier database.
absl::Status SourceRecreatedError(absl::string_view message);
bool IsSourceRecreated(const absl::Status& status);

struct StageProgress {
  std::string seq = "0";
  std::string seq_before;   // at the start of this run
  int64_t processed = 0;    // changes handled in this run
  int64_t written = 0;      // documents written (created, updated or deleted) in this run
  int64_t errors = 0;       // handler errors in this run
  int64_t rows = 0;         // rows a map stage's handler yielded in this run
  bool said_no_rows = false;  // the warning that a whole run from the start yielded none
  int64_t backlog = -1;     // changes still to read; -1 unknown
  int64_t source_end = -1;  // the source's update_seq (its number) when last read; -1 unread
  bool rerun = false;       // re-running from scratch after a version change
  absl::Duration busy;      // time spent on this stage's batches in this run, ended ones
  // When the batches being handled now started (infinite past: none is): their time counts
  // in a report made meanwhile.
  absl::Time busy_since = absl::InfinitePast();
  absl::Duration BusyAt(absl::Time now) const {
    return busy_since == absl::InfinitePast() ? busy : busy + (now - busy_since);
  }
};

class Deriver {
 public:
  // `may_write` is asked before each write; false stops the pass (the lease was lost).
  // `prefetch`, a second connection to the same CouchDB, if given, reads a map stage's next
  // batch of changes (and has it mapped) while the current one is written.
  Deriver(Declaration declaration, CouchDb& couch, client::Client& cnp, DeriverOptions options,
          std::ostream& log, std::function<absl::StatusOr<bool>()> may_write,
          CouchDb* prefetch = nullptr);
  ~Deriver();

  // Creates missing target databases and the index reduce stages query; reads the checkpoints
  // and notices changed handler versions.
  absl::Status Start();
  // Runs every stage until it has caught up with its source. Returns how many changes were
  // handled; a status for which IsLeaseLost holds when may_write said no; CANCELLED when
  // options.stopping said yes.
  absl::StatusOr<int64_t> CatchUp();
  // Waits for a change in any source, at most about `max_wait`. With continuous_feed, the
  // first call opens the feeds from where each stage has caught up to; a feed the server
  // refused for good (HTTP 401, 403, 404...) makes it (or the next batch read) fail.
  absl::Status WaitForChanges(absl::Duration max_wait);
  // While following, at most every source_check_every: whether each map stage's source is
  // still the database Start found. A feed alone does not tell (pouchdb-server keeps the feed
  // of a deleted database open, heartbeats and all): a source missing at two checks in a row is
  // NOT_FOUND, which ends the run as a feed's 404 does; one deleted and created again (its
  // marker gone or another's) is SourceRecreatedError.
  absl::Status CheckSourcesIfDue();
  // Writes the status document (the database is the first target's), with each followed
  // stage's feed reconnections.
  absl::Status WriteStatus(const std::string& holder);
  // The line saying how many handler errors were left out of the log (at most
  // ErrorLogLimit::kBurst a minute are logged), if it has any to say: once their minute is over
  // (checked as each batch's errors are saved), or at once when `final` (a --once run caught up;
  // the Deriver ends).
  void LogErrorsLeftOut(bool final);

  const std::vector<StageProgress>& progress() const { return progress_; }
  // Errors written to the errors document. Those recorded but not yet written are of a batch
  // not checkpointed, which the next run (or Deriver) meets and records again.
  int64_t flushed_errors() const { return flushed_errors_; }
  // The database of the status and errors documents: the first target, by name.
  const std::string& home() const { return home_; }

 private:
  struct Checkpoint {
    std::string rev;
    std::string old_rev;  // of the checkpoint at its earlier id, resumed from, removed once moved
    bool sweep = false;  // derived documents of other versions are to be removed once caught up
    // The sweep ran but the target refused some removals: the checkpoint asks the next run for
    // a sweep again (this run does not retry at every catch-up).
    bool sweep_next_run = false;
    bool fresh = false;  // no checkpoint and nothing derived from this source: a first sync
    // The source database's marker (SourceMarker) the checkpoint was taken from; empty: unknown.
    std::string source_id;
  };
  // Makes sure no instance of another name derives a stage's source into its target: the
  // first to run records its name in the target's _local/cnp-derive-claim:SOURCE; another is
  // refused (FAILED_PRECONDITION, saying how to hand the claim over). Two such instances wrote
  // rows under the same ids, and each swept the other's rows of another version, reporting
  // success (a CLI probe). Every stage's claim is read before any is written.
  absl::Status ClaimStages();
  // The name in `stage`'s claim; nullopt when there is none.
  absl::StatusOr<std::optional<std::string>> ClaimHolder(const Stage& stage);
  absl::Status RefuseClaimOf(const Stage& stage, const std::string& holder) const;
  // What identifies a source database (an incarnation of its name): the id in its
  // _local/cnp-derive-source document, written with a new random id when absent; empty when
  // the source cannot be written (read-only credentials: a warning says so).
  absl::StatusOr<std::string> SourceMarker(const std::string& source);
  // The marker could not be read or written for `why`: empty (with a warning) when CouchDB
  // refused it (HTTP 4xx), else the error, which is the run's (CouchDB unreachable or failing,
  // the lease lost).
  absl::StatusOr<std::string> NoMarker(const std::string& source, const absl::Status& why);
  // Whether stage i's source was deleted and created again since its checkpoint `d` (read
  // from the target), and why.
  std::optional<std::string> Recreated(size_t stage, const rapidjson::Document& d, const std::string& marker,
                                       bool marker_written);
  struct Batch;

  // One batch read, handled and checkpointed; 0 when the stage has caught up.
  absl::StatusOr<int64_t> RunBatch(size_t stage);
  // A map stage's batches until it has caught up, the next one read and mapped while the
  // current one is written.
  absl::StatusOr<int64_t> RunPipelined(size_t stage);
  // Whether options.stopping asks for a stop; CatchUp's status then.
  bool Stopping() const;
  static absl::Status StoppedStatus();
  // Reads up to `limit` changes after `since` (from the stage's feed if it has one). Touches
  // nothing but `couch` and the feed, so a helper thread can read ahead.
  absl::StatusOr<std::unique_ptr<Batch>> ReadBatch(size_t stage, const std::string& since, int limit,
                                                   CouchDb& couch) const;
  // The _changes answer of up to `limit` changes after `since` with their documents. An answer
  // too long to read (max_response_bytes) or to parse (a document nested too deep, not UTF-8)
  // is asked for again with half as many changes; a single change that still cannot be read
  // comes back alone as unreadable (change_header.h), so that its document is recorded as
  // failed and the stage goes past it. `limit` becomes the number to ask for next time, `asked`
  // the number asked for in the answer returned.
  absl::StatusOr<ChangesAnswer> ReadChanges(size_t stage, const std::string& since, int& limit,
                                                  CouchDb& couch, int& asked) const;
  // True when `batch` is empty: the stage has caught up (and its sweep, if due, is done).
  absl::StatusOr<bool> CaughtUp(size_t stage, const Batch& batch);
  // Counts a handled batch and checkpoints it.
  absl::Status Complete(size_t stage, const Batch& batch, int64_t written);
  std::string ChangesPath(size_t stage, const std::string& since, int limit) const;
  // The Map call: the rows each changed document yields now. No CouchDB, no shared state.
  absl::Status MapRows(size_t stage, Batch& batch) const;
  // Compares the rows with what the target holds and writes the differences.
  absl::StatusOr<int64_t> WriteMapRows(size_t stage, Batch& batch);
  absl::StatusOr<int64_t> ReduceBatch(size_t stage, Batch& batch);
  // A map row's change in a reduce stage's batch: what the rows of its key, read back, must show.
  struct RowWitness {
    std::string id;
    int64_t generation = 0;  // of its revision
    bool deleted = false;
  };
  // Reads every row of `key_json` (`key`) from stage s's source (the map target) with _find,
  // into `pages` (which own them) and groups[key_json]; or, when they pass max_group_bytes,
  // none, with the key put in too_large.
  absl::Status ReadGroup(const Stage& s, const std::string& key_json, const rapidjson::Value& key,
                         std::vector<rapidjson::Document>& pages,
                         std::map<std::string, std::vector<rapidjson::Value*>>& groups,
                         std::set<std::string>& too_large);
  // What the rows read miss of `witnesses` (a row at its revision or later; no row older than
  // its deletion), said for a message; unset when they show them all.
  static std::optional<std::string> Unreflected(const std::vector<RowWitness>& witnesses,
                                                const std::vector<rapidjson::Value*>& rows);
  // Whether the row of `row` has left key `key_json` since (deleted, or another key now).
  absl::StatusOr<bool> LeftKey(const Stage& s, const std::string& key_json, const RowWitness& row);
  // The mr_key of the row `tombstone` (a deletion in `database`) held before it was deleted,
  // for a tombstone that does not carry it (a row deleted by hand, with DELETE): read from the
  // revision before. Unset when that revision was no row; NOT_FOUND when it is gone (compacted).
  absl::StatusOr<std::optional<rapidjson::Document>> KeyBeforeDeletion(const std::string& database,
                                                                       const rapidjson::Value& tombstone);
  // The Map call for `docs`, in parts of at most kMaxCallBytes each (cnp-server refuses a call
  // past its --max-call-bytes): one result per document, in order.
  // A document whose handler runs past --timeout alone is its own error (Timeout) when the
  // service is seen to answer (another call of its batch, else a Resolve) and the handler was
  // not too slow for each of the first kTimeoutsBeforeGivingUp documents tried; otherwise the
  // service, not the document, is slow, and the batch fails (nothing recorded; a later run
  // goes on from the checkpoint).
  struct MapTally {
    int answered = 0;            // calls answered
    int timed_out = 0;           // single documents whose call passed its deadline
    std::vector<size_t> redone;  // calls past their deadline made again a document at a time: their sizes
    bool service_checked = false;  // whether the service was found to answer (a Resolve)
  };
  // After `what_timed_out` ran past --timeout: OK when cnp-server answers a Resolve of the
  // stage's handler (it needs a worker, as a call does, and runs no document), else the error
  // that ends the run (the service, not a document, is slow).
  absl::Status ServiceAnswers(const Stage& stage, absl::string_view what_timed_out) const;
  // The error of a batch no Map call of which was answered within --timeout.
  absl::Status NoCallAnswered(const Stage& stage, size_t documents) const;
  absl::StatusOr<std::vector<v1::MapResult>> MapInParts(const Stage& stage, const std::vector<std::string>& docs,
                                                        MapTally& tally) const;
  // The Map call for docs[first, end), its results appended to `results`. A call cnp-server
  // refuses for its size (the rows together pass --max-call-bytes) is made again in halves; a
  // single document still refused gets a result with that error alone (AnswerTooLarge, or
  // RequestTooLarge for a document larger than a call may be). So is a call whose deadline
  // passed (--timeout), but document by document, once a Resolve has shown that the service
  // answers: a single document that still passes it gets a Timeout error, unless the first
  // kTimeoutsBeforeGivingUp tried so all do, with nothing answered (the batch then fails).
  absl::Status MapSplitting(const Stage& stage, const std::vector<std::string>& docs, size_t first, size_t end,
                            std::vector<v1::MapResult>& results, MapTally& tally) const;
  // _all_docs?include_docs=true&conflicts=true for ids[first, end) of `database`, its answer appended to
  // `answers`; while an answer is longer than max_response_bytes (large documents) the ids are
  // asked for in halves, down to one.
  absl::Status LookUp(const std::string& database, const std::vector<std::string>& ids, size_t first, size_t end,
                      const std::string& what, std::vector<rapidjson::Document>& answers);
  // _all_docs?include_docs=true&conflicts=true of every id in `database` that starts with `prefix`, its pages
  // appended to `pages`: at most kLookupPage rows each, fewer while a page is longer than
  // max_response_bytes.
  absl::Status LookUpPrefix(const std::string& database, const std::string& prefix, const std::string& what,
                            std::vector<rapidjson::Document>& pages);
  // Warns of derived documents in `target` of a source no declared stage of it reads any more
  // (one _all_docs?limit=1 per id prefix): they stay, and a reduce or join over it counts them.
  absl::Status WarnUndeclaredRows(const std::string& target, const std::set<std::string>& sources);
  // Removes the stage's derived documents of other versions; with `every_version`, all of them
  // (its source was created again: none of them was derived from what the source holds now).
  // Answers how many removals the target refused (each recorded as an error): those rows stay.
  absl::StatusOr<int64_t> Sweep(size_t stage, bool every_version = false);
  void StartFeeds();
  void PrintFeedNotes();
  absl::Status WaitOnLongpolls(absl::Duration max_wait);
  absl::Status SaveCheckpoint(size_t stage);
  // A write request ("POST", "PUT" or "DELETE"), under options_.fence.
  absl::StatusOr<rapidjson::Document> FencedWrite(absl::string_view method, const std::string& path,
                                                  absl::string_view json, absl::string_view what);
  // With `conflicts`, documents CouchDB refused as conflicts are listed there instead of
  // being recorded as errors.
  absl::Status BulkWrite(const std::string& database, std::vector<std::string>& docs,
                         const Stage& stage, std::vector<std::string>* conflicts = nullptr);
  // One _bulk_docs request for docs[first, end); refused whole as too large (HTTP 413), made
  // again in halves, and a document refused alone recorded as its error (document_too_large).
  absl::Status BulkWriteSplitting(const std::string& database, const std::vector<std::string>& docs,
                                  size_t first, size_t end, const Stage& stage,
                                  std::vector<std::string>* conflicts);
  // What to write instead of a write CouchDB refused as a conflict, given the document's id and
  // what the target holds now (nullptr: nothing, or a deleted document): the document's JSON,
  // "" when nothing is left to write, or nullopt for an id it does not know.
  using Redo = std::function<std::optional<std::string>(const std::string& id, rapidjson::Value* current)>;
  // Writes `docs` to the stage's target; a write refused as a conflict (the document changed
  // since it was read) is redone once, with `redo`, from what the target holds now. A second
  // conflict is recorded as an error. Answers the count of documents written.
  absl::StatusOr<int64_t> WriteRedoingConflicts(const Stage& stage, std::vector<std::string>& docs,
                                                const Redo& redo);
  // DATA_LOSS unless `answer` is what CouchDB answers a _bulk_docs of `sent` documents.
  static absl::Status CheckBulkAnswer(const rapidjson::Document& answer, size_t sent,
                                      const std::string& database);
  // `by_target`: the target refused what the handler derived (the message says so), which the
  // log must not word as the handler failing.
  void RecordError(const Stage& stage, const std::string& doc_id, const std::string& type,
                   const std::string& message, bool by_target = false);
  // The target refused to store `derived` (a derived document's JSON, its id `derived_id`):
  // recorded as RecordError does, under the source document it came from (its mr_source_id),
  // saying that the target refused it, not that the handler failed (a validate_doc_update in
  // the target, a document past max_document_size, a conflict not redone). `derived` may be
  // empty (not known): the derived id is then recorded.
  void RecordWriteRefusal(const Stage& stage, absl::string_view derived, const std::string& derived_id,
                          const std::string& type, const std::string& reason);
  absl::Status FlushErrors();
  // Logs the fields of stage i's values FillDerived left out, each once per run.
  void WarnDropped(size_t stage, const std::set<std::string>& dropped);
  // A progress line on the log, if anything happened since the last; at most one a second
  // unless `force`.
  void Report(size_t stage, bool force);

  Declaration declaration_;
  CouchDb& couch_;
  client::Client& cnp_;
  DeriverOptions options_;
  std::ostream& log_;
  std::function<absl::StatusOr<bool>()> may_write_;
  // The database holding the lease, the status and the errors: the first target, by name.
  std::string home_;
  std::vector<StageProgress> progress_;
  std::vector<Checkpoint> checkpoints_;
  std::vector<absl::Time> last_report_;
  std::vector<int64_t> reported_processed_;
  std::vector<int> read_limits_;  // changes to ask for in the next batch read of each stage
  // Per stage: a map stage whose target a reduce stage reads with the rows' source documents
  // (sources: true), so its rows carry mr_source_rev.
  std::vector<bool> sources_read_;
  std::vector<std::set<std::string>> warned_dropped_;  // per stage: the fields WarnDropped named
  // Per source database: its marker, and whether this run wrote it (it was absent).
  std::map<std::string, std::pair<std::string, bool>> source_markers_;
  absl::Time sources_checked_ = absl::Now();  // Start checks them
  std::set<std::string> sources_missing_;     // found missing at the last check
  std::vector<std::string> new_errors_;  // JSON objects not yet in the errors document
  int64_t flushed_errors_ = 0;
  ErrorLogLimit error_log_limit_;
  std::string status_rev_;
  absl::Time status_written_ = absl::InfinitePast();
  CouchDb* prefetch_;
  // With continuous_feed, once caught up: one feed per map stage (null for reduce stages).
  ChangeSignal feed_signal_;
  std::vector<std::unique_ptr<ChangesFeed>> feeds_;
};

}  // namespace cnp::derive
