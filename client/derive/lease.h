// The lease that lets several `cnp derive` instances of one name run, one writing at a time
// (qvarn-mr's listener with keep-alive and timeout): a _local document in the first target
// database holding the holder's id and when its hold expires. The holder renews it by updating
// it with the revision it last wrote, so a renewal that finds another revision (HTTP 409) has
// lost the lease and stops writing; a waiting instance takes it once it has expired, i.e. when
// the holder stopped renewing. Expiry is wall-clock time: the instances' clocks should agree to
// well within the timeout.
//
// A holder busy for longer than the timeout (a batch whose Map or Reduce calls take long) must
// not lose the lease for that: with RenewInBackground, a thread of its own renews it, on a
// connection of its own, whenever the caller has not renewed it for halfway between
// renew_every and the timeout, while it is held; the writes still ask RenewIfDue, which says
// whether it is held (a renewal that found another revision lost it) or what error a renewal
// met.
//
// Writes are fenced by time (WriteFence): the holder starts a write request only before its
// deadline, the start of its last successful renewal + timeout - margin (a tenth of the
// timeout, at most 5 s) on a monotonic clock, and gives each request at most the time left
// before it, and at most max_write. Every renewal records in the lease when the holder's writes
// are settled: its expiry + max_write. An instance that takes the lease over waits until then
// (on its own clock) before its first write, so that a request of the old holder still on its
// way (a slow proxy, a stalled connection) is applied, if at all, before the new holder writes.
// A release records the same for a write request that ended without an answer.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/derive/couch_db.h"

namespace cnp::derive {

// The status a write or a run ends with once the lease is lost: the run waits for the lease
// again. It is told apart by a payload, not by its code: cnp-server's FAILED_PRECONDITION (a
// handler whose version changed) must end the run, not be taken for a lost lease and retried
// for ever.
absl::Status LeaseLostError(absl::string_view message);
bool IsLeaseLost(const absl::Status& status);

class Lease : public WriteFence {
 public:
  // `couch` is used by the caller's thread only (in the calls below). `max_write` bounds each
  // write request (the lease's own too); zero: half the timeout.
  Lease(CouchDb& couch, std::string database, std::string name, std::string holder,
        absl::Duration timeout, absl::Duration renew_every,
        absl::Duration max_write = absl::ZeroDuration());
  // Stops the renewing thread (without releasing the lease).
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  // From now on, while the lease is held, a thread renews it with `own_connection` (used by
  // that thread alone, and outliving this object) whenever the caller is busy for longer than
  // halfway between renew_every and the timeout since the last renewal. A renewal that fails
  // (CouchDB unreachable) is tried again within a second; RenewIfDue returns its error unless a
  // later renewal succeeded.
  void RenewInBackground(CouchDb& own_connection);

  // Takes the lease if it is free or expired: true when held now, false when another instance
  // holds it (then `wait_hint()` says how long until it would expire) or wrote it between our
  // read and our write (then other_holder() is empty and `wait_hint()` a delay that grows with
  // each such race in a row). Races that go on for longer than the timeout are an error: two
  // instances settle in one round, and reads that find the lease free while every write
  // conflicts mean something other than CouchDB answers (a URL that is not its root).
  absl::StatusOr<bool> TryAcquire();
  // Renews if renew_every has passed since the last write, or at once when a background
  // renewal has failed since the last success. False: the lease was lost.
  absl::StatusOr<bool> RenewIfDue();
  // Gives the lease up so another instance need not wait for it to expire.
  void Release();

  // WriteFence. WriteBudget waits out hold_off() first (the caller should have).
  absl::StatusOr<absl::Duration> WriteBudget() override;
  void Unanswered() override;
  // After TryAcquire took the lease: how long until the earlier holder's writes are settled,
  // before which this one must not write.
  absl::Duration hold_off() const;
  absl::Duration max_write() const { return max_write_; }

  bool held() const;
  absl::Duration wait_hint() const;
  const std::string& holder() const { return holder_; }
  std::string other_holder() const;
  const std::string& doc_id() const { return doc_id_; }

 private:
  absl::StatusOr<bool> Write(CouchDb& couch, const std::string& rev)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One read of the lease and, if it is free, expired or ours, one write.
  absl::StatusOr<bool> ReadAndWrite() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a write that conflicted: false with a growing wait_hint_, or the error once races
  // have gone on for longer than timeout_.
  absl::StatusOr<bool> LostRace() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The renewing thread's loop, until stopping_.
  void RenewLoop(CouchDb& couch);

  CouchDb& couch_;  // the caller's connection, used with mu_ held
  const std::string database_;
  const std::string doc_id_;
  const std::string holder_;
  const absl::Duration timeout_;
  const absl::Duration renew_every_;
  const absl::Duration max_write_;
  const absl::Duration margin_;
  // Read by writers without mu_ (a renewal may hold it for up to max_write_): nanoseconds of
  // std::chrono::steady_clock.
  std::atomic<int64_t> deadline_ns_{0};     // no write request starts at or after it
  std::atomic<int64_t> writes_from_ns_{0};  // none before it (an earlier holder's)
  // Unix ms until which a write request of ours that ended without an answer may be applied.
  std::atomic<int64_t> unanswered_until_ms_{0};
  // Held across each request, so that the lease's requests take turns.
  mutable absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  std::string rev_ ABSL_GUARDED_BY(mu_);
  absl::Time last_write_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration wait_hint_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::string other_holder_ ABSL_GUARDED_BY(mu_);
  // Unix ms until which the holder we took the lease from may still have writes applied: a
  // release passes it on, so that whoever takes the lease next waits for them too.
  int64_t inherited_settle_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // The first of the races in a row.
  absl::Time racing_since_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  int races_ ABSL_GUARDED_BY(mu_) = 0;
  // The background renewal's failure since its last success, and when it tries again.
  absl::Status renew_error_ ABSL_GUARDED_BY(mu_);
  absl::Time retry_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread renewer_;  // started and joined by the owner's thread only
};

// The leases of every target database an instance writes, one Lease each, as one fence. The
// lease used to live in the first target alone: a declaration that gained (or lost) a target
// sorting first moved it, and instances of the old and the new declaration wrote the same
// databases at once. Now any two instances whose targets overlap meet in the lease of each
// database they share. TryAcquire takes them in order of name, and when one is held by another
// instance releases those it took and says so (no holding while waiting, so no deadlock); the
// writes need all of them (the least time any of them allows), and a loss of any is a loss.
class LeaseSet : public WriteFence {
 public:
  // `databases`: the targets, each once (sorted here).
  LeaseSet(CouchDb& couch, std::vector<std::string> databases, const std::string& name,
           const std::string& holder, absl::Duration timeout, absl::Duration renew_every,
           absl::Duration max_write = absl::ZeroDuration());

  // One connection per database, in the order of databases(), each used by its lease's
  // renewing thread alone and outliving this object.
  void RenewInBackground(const std::vector<CouchDb*>& own_connections);
  // True when every lease is held now. False when one is held by another instance (then
  // other_holder() and blocked_in() say which, wait_hint() for how long) or was written by one
  // between our read and our write (other_holder() empty): the leases taken meanwhile are
  // released, so that the other instance is not kept waiting on us.
  absl::StatusOr<bool> TryAcquire();
  // Renews each lease that is due. False: one of them was lost.
  absl::StatusOr<bool> RenewIfDue();
  // Gives up every lease still held.
  void Release();

  absl::StatusOr<absl::Duration> WriteBudget() override;
  void Unanswered() override;
  // The longest of the leases' hold-offs.
  absl::Duration hold_off() const;

  const std::vector<std::string>& databases() const { return databases_; }
  absl::Duration wait_hint() const;
  std::string other_holder() const;
  const std::string& blocked_in() const { return databases_[blocked_]; }

 private:
  std::vector<std::string> databases_;
  std::vector<std::unique_ptr<Lease>> leases_;  // one per database, in the same order
  size_t blocked_ = 0;  // the lease the last TryAcquire did not get; the caller's thread only
};

}  // namespace cnp::derive
