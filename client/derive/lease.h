// The lease that lets several `cnp derive` instances of one name run, one writing at a time
// (qvarn-mr's listener with keep-alive and timeout): a _local document in the first target
// database holding the holder's id and when its hold expires. The holder renews it by updating
// it with the revision it last wrote, so a renewal that finds another revision (HTTP 409) has
// lost the lease and stops writing; a waiting instance takes it once it has expired, i.e. when
// the holder stopped renewing. Expiry is wall-clock time: the instances' clocks should agree to
// well within the timeout.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/derive/couch_db.h"

namespace cnp::derive {

class Lease {
 public:
  Lease(CouchDb& couch, std::string database, std::string name, std::string holder,
        absl::Duration timeout, absl::Duration renew_every);

  // Takes the lease if it is free or expired: true when held now, false when another instance
  // holds it (then `wait_hint()` says how long until it would expire) or wrote it between our
  // read and our write (then other_holder() is empty and `wait_hint()` a delay that grows with
  // each such race in a row). Races that go on for longer than the timeout are an error: two
  // instances settle in one round, and reads that find the lease free while every write
  // conflicts mean something other than CouchDB answers (a URL that is not its root).
  absl::StatusOr<bool> TryAcquire();
  // Renews if renew_every has passed since the last write. False: the lease was lost.
  absl::StatusOr<bool> RenewIfDue();
  // Gives the lease up so another instance need not wait for it to expire.
  void Release();

  bool held() const { return held_; }
  absl::Duration wait_hint() const { return wait_hint_; }
  const std::string& holder() const { return holder_; }
  const std::string& other_holder() const { return other_holder_; }
  const std::string& doc_id() const { return doc_id_; }

 private:
  absl::StatusOr<bool> Write(const std::string& rev);
  // One read of the lease and, if it is free, expired or ours, one write.
  absl::StatusOr<bool> ReadAndWrite();
  // After a write that conflicted: false with a growing wait_hint_, or the error once races
  // have gone on for longer than timeout_.
  absl::StatusOr<bool> LostRace();

  CouchDb& couch_;
  std::string database_;
  std::string doc_id_;
  std::string holder_;
  absl::Duration timeout_;
  absl::Duration renew_every_;
  bool held_ = false;
  std::string rev_;
  absl::Time last_write_ = absl::InfinitePast();
  absl::Duration wait_hint_ = absl::ZeroDuration();
  std::string other_holder_;
  absl::Time racing_since_ = absl::InfiniteFuture();  // the first of the races in a row
  int races_ = 0;
};

}  // namespace cnp::derive
