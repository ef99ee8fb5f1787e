// cnp sync's work: make every database that a registered design document targets hold it
// (see common/couchdb/registry_entry.h), then keep it so as databases are created.
//
//   cnp::couchdb::CouchClient couch({.base_url = "http://127.0.0.1:5984", ...});
//   cnp::client::sync::RegistrySync sync(couch, "cnp_registry", {}, print_event);
//   absl::Status status = sync.SyncAll();               // every existing database
//   status = sync.Follow([] { return true; });          // then databases created later
//
// A design document is written with the rules of `cnp upload`: compared with the stored one
// ignoring _rev and written only when it changed, fields the registry's copy does not mention
// kept (and reported) unless drop_unknown_fields, a concurrent edit (HTTP 409) re-read,
// compared again and retried a bounded number of times, never overwritten blindly.
//
// The registry's design documents already carry their resolved |versions, so this runs
// without the cnp service: it talks to CouchDB directly, with the caller's credentials.
//
// Removal. An entry marked removed (`cnp upload --register REGISTRY --remove NAME`, see
// registry_removal.h) takes its design document out of every database it targets, unless a
// live entry still puts it there; and a full pass takes a design document out of a database
// its entry no longer targets (the entry's pattern or classification narrowed), unless a
// live entry puts it there. Either only where cnp sync put it itself and nobody has changed it
// since: when this class creates a design document it records that in the database, in
// _local/cnp-sync:<name> (see ownership_record.h: announced before the write, settled after,
// so that an interruption between the two does not disown the copy), and it keeps the
// record's revision current as long as it is the only writer. A design document without that
// record (hand-made, or from before this record existed), or whose revision is no longer the
// recorded one, is left in place with a warning naming it. A record whose entry is no longer
// in the registry at all takes nothing out.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cnp/v1/upload.pb.h"
#include "rapidjson/document.h"
#include "common/couchdb/couch_client.h"

namespace cnp::client::sync {

// One registry entry as read from the registry database.
struct RegisteredDesignDoc {
  std::string entry_id;              // the registry document's _id, e.g. "towns@database:a*"
  std::string name;                  // the design document's name, without "_design/"
  std::vector<std::string> databases;  // names and glob patterns
  rapidjson::Document design_document;
  bool removed = false;              // a tombstone: take the design document out
};

class RegistrySync {
 public:
  struct Options {
    bool dry_run = false;
    bool drop_unknown_fields = false;
    int max_conflict_retries = 3;
    // How long one _db_updates long poll may wait for news before it is asked again.
    absl::Duration poll_timeout = absl::Seconds(30);
    // After a poll that failed for a reason retrying may cure (CouchDB restarting, a 5xx, a
    // proxy's timeout): the first wait before it is asked again, doubling up to the longest.
    absl::Duration first_retry_delay = absl::Milliseconds(500);
    absl::Duration max_retry_delay = absl::Seconds(30);
    // Whoever may write the registry is not trusted with CouchDB's own databases (_users,
    // _replicator) or design documents (_design/_auth): without this, an entry naming one is
    // skipped (that target, or the whole entry for such a design document) with a warning.
    bool allow_system_databases = false;
    // While following: a target database's `updated` event has its design documents checked
    // again (a hand-edited or deleted one is put back), at most once per this interval per
    // database; an event within it is checked once the interval is over.
    absl::Duration recheck_interval = absl::Seconds(10);
    // Asked before each database (and wherever Follow asks keep_going): true ends a pass
    // early, the database in hand done, SyncAll with CANCELLED and Follow with OK. For a
    // SIGINT or SIGTERM: no design document is left without its record settled.
    std::function<bool()> stop_requested;
    // While following: where it stands, for the log of a long-running follower (the first
    // pass done and the following begun; _db_updates answering again after failures).
    std::function<void(const std::string&)> note;
  };
  // Gets every outcome and problem, in the shapes `cnp upload` reports them.
  using Emit = std::function<void(const v1::UploadEvent&)>;

  RegistrySync(::cnp::couchdb::CouchClient& couch, std::string registry, Options options,
               Emit emit);

  // Reads the registry, then brings every existing database it targets up to date. OK when
  // every design document is in place; otherwise the first error (each one is also emitted).
  absl::Status SyncAll();

  // Follows CouchDB's _db_updates from before SyncAll's pass so nothing created meanwhile is
  // missed, gives each created database the design documents it should have, and re-reads
  // the registry (and syncs again) when the registry database changes. A target database's
  // `updated` event has its design documents checked again (see recheck_interval), and a
  // database whose sync failed (a clustered database still being created answers 500 for a
  // moment), in a full pass or on its event, is tried again after a delay growing from
  // first_retry_delay to max_retry_delay.
  // A pass that could not finish (the registry or the list of databases unreadable, CouchDB
  // gone mid-way) is done again after such a delay, and a database that failed in a full pass
  // is tried again as part of one (copies no longer targeted are taken out then too).
  // Returns when `keep_going` says false (asked after each poll, and while waiting to poll
  // again), or on an error that retrying cannot change: _db_updates answered 400, 401, 403,
  // 404 or 405, or CouchDB refused the credentials or sent an answer over the size limit.
  // A poll that failed otherwise (CouchDB restarting: no answer, a 5xx; a malformed answer)
  // is a warning, and is asked again from the same position after a delay that grows from
  // first_retry_delay to max_retry_delay (a failure in one database is reported and
  // following goes on).
  absl::Status Follow(const std::function<bool()>& keep_going);

  // The registered design documents that target `database` (with `removed`, the entries
  // marked removed instead).
  std::vector<const RegisteredDesignDoc*> Matching(const std::string& database,
                                                   bool removed = false) const;

  // How many live registry entries the last full pass (SyncAll) found no existing database
  // for. Each is also named in a warning: once per entry, and again only when the entry
  // changes or after it has matched a database in between, so a follower does not repeat it
  // on every registry change.
  int unmatched_entries() const { return unmatched_entries_; }

 private:
  bool Stopping() const;
  absl::Status LoadRegistry();
  // False (and warned about) when `entry` names a system design document; otherwise drops
  // (with a warning each) its targets that reach system databases.
  bool KeepOffSystemTargets(RegisteredDesignDoc& entry);
  absl::StatusOr<std::vector<std::string>> ListDatabases();
  // `full_pass`: also takes out copies whose entry no longer targets `database`
  // (RemoveUntargeted), which only a change of the registry brings about.
  absl::Status SyncDatabase(const std::string& database, bool full_pass = false);
  // The names of the registry's entries, live and removed.
  std::set<std::string> RegisteredNames() const;
  // While following: SyncDatabase (a full pass's, when it is the retry of one), a failure
  // put in retry_ (its error has been emitted). An error only when it affects everything.
  // `just_created`: _db_updates announced it created; not served yet (a cluster behind a
  // balancer may announce it first), it is tried again rather than taken for deleted.
  absl::Status CheckDatabase(const std::string& database, bool just_created = false);
  // After a sync of `database`: a failure that retrying may cure is tried again after a
  // growing delay (retry_), as part of a full pass if it failed in one (or its earlier try
  // did); success or any other failure clears it.
  void ScheduleRetry(const std::string& database, const absl::Status& status,
                     bool full_pass = false);
  // While following: SyncAll. One that did not finish, for a reason retrying may cure, is
  // done again after a growing delay (pass_retry_). An error only when following must end.
  absl::Status PassWhileFollowing();
  // The checks of retry_, recheck_at_ and pass_retry_ that are due.
  absl::Status CheckDue();
  // The earliest of them; InfiniteFuture when there are none.
  absl::Time NextDue() const;
  // Whether CouchDB now answers 404 for `database` itself: a write's NOT_FOUND was the
  // database going away, not a document missing.
  bool DatabaseIsGone(const std::string& database);
  // A warning that `database` was deleted during the pass; OK.
  absl::Status GoneDuringPass(const std::string& database);
  absl::Status WriteDesignDoc(const std::string& database, const RegisteredDesignDoc& entry);
  // One reading of the record and the design document, and the writes they call for;
  // `record_changed` is set when the announcement conflicted on the record (HTTP 409).
  absl::Status WriteDesignDocOnce(const std::string& database, const RegisteredDesignDoc& entry,
                                  bool& record_changed);
  // Takes out `entry`'s design document if cnp sync from this registry put it there and
  // nobody changed it since; `why_it_goes` for the warning otherwise ("is removed").
  absl::Status RemoveDesignDoc(const std::string& database, const RegisteredDesignDoc& entry,
                               const std::string& why_it_goes);
  // Copies this registry's sync put in `database` (by their _local/cnp-sync records) whose
  // entry no longer targets it, and that no live entry puts there: removed as above.
  // `handled`: the names SyncDatabase already wrote or removed there.
  absl::Status RemoveUntargeted(const std::string& database,
                                const std::set<std::string>& handled);
  absl::StatusOr<std::string> CurrentUpdateSeq();
  // Warns of each live entry that targets none of `databases` (see unmatched_entries()).
  void ReportUnmatched(const std::vector<std::string>& databases);
  void Note(const std::string& text) const {
    if (options_.note) options_.note(text);
  }
  void EmitProblem(v1::UploadProblem::Severity severity, const absl::Status& status,
                   const std::string& database, const std::string& design_doc);

  ::cnp::couchdb::CouchClient& couch_;
  std::string registry_;
  Options options_;
  Emit emit_;
  std::vector<RegisteredDesignDoc> entries_;
  // Entry id -> the entry's targets and design document when it was warned of as matching no
  // database.
  std::map<std::string, std::string> warned_unmatched_;
  // Ids of the registry's documents warned of as no entry (no "type" of one), once each.
  std::set<std::string> warned_untyped_;
  int unmatched_entries_ = 0;
  // While following, per target database: when it was last checked, when it is to be checked
  // again for an `updated` event that came too soon after, and when a failed one is tried
  // again (with the delay that will follow).
  std::map<std::string, absl::Time> last_checked_;
  std::map<std::string, absl::Time> recheck_at_;
  struct Retry {
    absl::Time at;
    absl::Duration delay;
    bool full_pass = false;  // it failed in a full pass: retried as part of one
    bool just_created = false;  // announced created, and not yet served
  };
  std::map<std::string, Retry> retry_;
  // Whether the last SyncAll went through every database; when not, its retry while following.
  bool pass_finished_ = false;
  std::optional<Retry> pass_retry_;
};

}  // namespace cnp::client::sync
