#include "client/derive/lease.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "rapidjson/document.h"
#include "client/derive/marked_status.h"
#include "common/couchdb/json.h"

namespace cnp::derive {

namespace {
constexpr char kLeaseLostPayload[] = "type.cnp.dev/derive.LeaseLost";
}  // namespace

absl::Status LeaseLostError(absl::string_view message) {
  return Marked(absl::FailedPreconditionError(message), kLeaseLostPayload);
}

bool IsLeaseLost(const absl::Status& status) { return HasMark(status, kLeaseLostPayload); }

namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t Member64(const rapidjson::Value& doc, const char* field, int64_t otherwise) {
  auto it = doc.FindMember(field);
  return it != doc.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : otherwise;
}

}  // namespace

Lease::Lease(CouchDb& couch, std::string database, std::string name, std::string holder,
             absl::Duration timeout, absl::Duration renew_every, absl::Duration max_write)
    : couch_(couch),
      database_(std::move(database)),
      doc_id_(absl::StrCat("cnp-derive:", name, ":lease")),
      holder_(std::move(holder)),
      timeout_(timeout),
      renew_every_(renew_every),
      max_write_(max_write > absl::ZeroDuration() ? max_write : timeout / 2),
      margin_(std::min(timeout / 10, absl::Seconds(5))) {}

Lease::~Lease() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (renewer_.joinable()) renewer_.join();
}

void Lease::RenewInBackground(CouchDb& own_connection) {
  if (renewer_.joinable()) return;
  renewer_ = std::thread([this, &own_connection] { RenewLoop(own_connection); });
}

void Lease::RenewLoop(CouchDb& couch) {
  // The caller renews every renew_every while it is not busy; this thread steps in once a
  // renewal is overdue, halfway between renew_every and the timeout (a Map call that takes
  // long), so that the lease's requests stay on the caller's connection otherwise.
  // Never later than three quarters of the time a write may start after a renewal.
  const absl::Duration overdue =
      std::min(renew_every_ + (timeout_ - renew_every_) / 2, (timeout_ - margin_) * 3 / 4);
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    // Not held: nothing to renew until it is (TryAcquire's write starts the interval over).
    absl::Time due = held_ ? std::max(last_write_ + overdue, retry_at_) : now + renew_every_;
    if (due > now) {
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), due - now);
      continue;
    }
    absl::StatusOr<bool> renewed = Write(couch, rev_);
    if (renewed.ok()) {
      renew_error_ = absl::OkStatus();
    } else {
      // Kept for RenewIfDue (the writes ask it) unless a later try succeeds first.
      renew_error_ = renewed.status();
      retry_at_ = absl::Now() + std::min(renew_every_, absl::Seconds(1));
    }
  }
}

bool Lease::held() const {
  absl::MutexLock lock(&mu_);
  return held_;
}

absl::Duration Lease::wait_hint() const {
  absl::MutexLock lock(&mu_);
  return wait_hint_;
}

std::string Lease::other_holder() const {
  absl::MutexLock lock(&mu_);
  return other_holder_;
}

absl::StatusOr<bool> Lease::Write(CouchDb& couch, const std::string& rev) {
  // The deadline counts from before the request: the expiry written is counted from then too.
  const int64_t sent_ns = SteadyNs();
  absl::Time now = absl::Now();
  rapidjson::Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  if (!rev.empty()) doc.AddMember("_rev", couchdb::StringValue(rev, a), a);
  doc.AddMember("holder", couchdb::StringValue(holder_, a), a);
  doc.AddMember("renewed_at_ms", absl::ToUnixMillis(now), a);
  doc.AddMember("expires_at_ms", absl::ToUnixMillis(now + timeout_), a);
  // A write request started before the expiry ends, or is given up, by then + max_write.
  doc.AddMember("settle_at_ms", absl::ToUnixMillis(now + timeout_ + max_write_), a);
  // Bounded as the writes are: a renewal that hangs must not hold mu_ for long.
  absl::StatusOr<rapidjson::Document> answer =
      couch.Put(LocalDocPath(database_, doc_id_), couchdb::ToJson(doc),
                absl::StrCat("writing the lease in ", database_), max_write_);
  if (absl::IsAborted(answer.status())) {  // 409: another instance wrote it first
    held_ = false;
    deadline_ns_.store(0);
    return false;
  }
  if (!answer.ok()) return answer.status();
  rev_.clear();
  if (answer->IsObject()) {
    auto it = answer->FindMember("rev");
    if (it != answer->MemberEnd() && it->value.IsString()) rev_ = std::string(couchdb::StringView(it->value));
  }
  // CouchDB answers the lease's write with its revision: an answer without one does not say
  // the lease was written, and writing derived documents on it could race another holder.
  if (rev_.empty()) {
    return absl::UnknownError(absl::StrCat(
        "writing the lease _local/", doc_id_, " in ", database_, " at ", couch_.base_url(),
        " was answered without the new revision: whether it was written is unknown (is the URL "
        "a CouchDB?)"));
  }
  last_write_ = now;
  held_ = true;
  deadline_ns_.store(sent_ns + absl::ToInt64Nanoseconds(timeout_ - margin_));
  return true;
}

absl::StatusOr<bool> Lease::LostRace() {
  const absl::Time now = absl::Now();
  if (races_++ == 0) racing_since_ = now;
  if (now - racing_since_ > timeout_) {
    return absl::UnknownError(absl::StrCat(
        "the lease _local/", doc_id_, " in ", database_, " at ", couch_.base_url(),
        ": reading it finds it free but every write conflicts (HTTP 409), ", races_, " times in ",
        absl::FormatDuration(absl::Trunc(now - racing_since_, absl::Milliseconds(1))),
        "; CouchDB's _local documents do not behave so: is ", couch_.base_url(),
        " CouchDB's root?"));
  }
  other_holder_.clear();
  // 20 ms, 40 ms... up to a second: a busy loop against whatever answers so would not help.
  wait_hint_ = std::min(absl::Milliseconds(20) * (int64_t{1} << std::min(races_ - 1, 6)),
                        absl::Seconds(1));
  return false;
}

absl::StatusOr<bool> Lease::TryAcquire() {
  absl::MutexLock lock(&mu_);
  renew_error_ = absl::OkStatus();
  retry_at_ = absl::InfinitePast();
  other_holder_.clear();
  absl::StatusOr<bool> acquired = ReadAndWrite();
  if (!acquired.ok() || *acquired || !other_holder_.empty()) {
    races_ = 0;
    return acquired;
  }
  return LostRace();
}

absl::StatusOr<bool> Lease::ReadAndWrite() {
  absl::StatusOr<std::optional<rapidjson::Document>> current =
      couch_.GetIfExists(LocalDocPath(database_, doc_id_), absl::StrCat("reading the lease in ", database_));
  if (!current.ok()) return current.status();
  if (!current->has_value()) return Write(couch_, "");
  const rapidjson::Document& doc = **current;
  if (!doc.IsObject()) {
    return absl::UnknownError(absl::StrCat(
        "reading the lease _local/", doc_id_, " in ", database_, " at ", couch_.base_url(),
        ": the answer is not a JSON object (is the URL a CouchDB?)"));
  }
  auto text = [&](const char* field) -> std::string {
    auto it = doc.FindMember(field);
    return it != doc.MemberEnd() && it->value.IsString()
               ? std::string(couchdb::StringView(it->value))
               : "";
  };
  const int64_t expires_ms = Member64(doc, "expires_at_ms", 0);
  absl::Time expires = absl::FromUnixMillis(expires_ms);
  std::string holder = text("holder");
  if (holder == holder_ || holder.empty() || expires <= absl::Now()) {
    // Until when the earlier holder's write requests may still be applied: what it recorded
    // (an earlier release recorded nothing, and had none in flight), or its expiry + our own
    // max_write. Ours, if it was ours, we know.
    int64_t settle_ms = 0;
    if (holder != holder_) {
      settle_ms = Member64(doc, "settle_at_ms",
                           holder.empty() ? 0 : expires_ms + absl::ToInt64Milliseconds(max_write_));
    }
    settle_ms = std::max(settle_ms, unanswered_until_ms_.load());
    absl::StatusOr<bool> written = Write(couch_, text("_rev"));
    if (written.ok() && *written) {
      inherited_settle_ms_ = std::max(inherited_settle_ms_, settle_ms);
      const absl::Duration wait = absl::FromUnixMillis(settle_ms) - absl::Now();
      if (wait > absl::ZeroDuration()) {
        const int64_t from = SteadyNs() + absl::ToInt64Nanoseconds(wait);
        writes_from_ns_.store(std::max(writes_from_ns_.load(), from));
      }
    }
    return written;
  }
  other_holder_ = holder;
  wait_hint_ = expires - absl::Now();
  return false;
}

absl::StatusOr<bool> Lease::RenewIfDue() {
  absl::MutexLock lock(&mu_);
  // A renewal of the lease's own thread failed (CouchDB away for a moment): tried again here,
  // on the caller's connection, before its failure counts, for CouchDB may be back.
  if (!renew_error_.ok()) {
    absl::StatusOr<bool> renewed = Write(couch_, rev_);
    if (renewed.ok()) {
      renew_error_ = absl::OkStatus();
      retry_at_ = absl::InfinitePast();
    }
    return renewed;
  }
  if (!held_) return false;
  // Renewed by half the time a write may start after a renewal, too: with renew_every close to
  // the timeout, the write deadline would otherwise pass between renewals.
  if (absl::Now() - last_write_ < std::min(renew_every_, (timeout_ - margin_) / 2)) return true;
  return Write(couch_, rev_);
}

absl::StatusOr<absl::Duration> Lease::WriteBudget() {
  int64_t now = SteadyNs();
  if (const int64_t from = writes_from_ns_.load(); now < from) {
    absl::SleepFor(absl::Nanoseconds(from - now));
    now = SteadyNs();
  }
  const int64_t left = deadline_ns_.load() - now;
  if (left <= 0) {
    return LeaseLostError(absl::StrCat(
        "the lease _local/", doc_id_, " was lost or not renewed in time: no write starts later than ",
        absl::FormatDuration(timeout_ - margin_), " after its last renewal"));
  }
  return std::min(absl::Nanoseconds(left), max_write_);
}

void Lease::Unanswered() {
  const int64_t until = absl::ToUnixMillis(absl::Now() + max_write_);
  int64_t seen = unanswered_until_ms_.load();
  while (seen < until && !unanswered_until_ms_.compare_exchange_weak(seen, until)) {
  }
}

absl::Duration Lease::hold_off() const {
  const int64_t left = writes_from_ns_.load() - SteadyNs();
  return left > 0 ? absl::Nanoseconds(left) : absl::ZeroDuration();
}

void Lease::Release() {
  absl::MutexLock lock(&mu_);
  if (!held_) return;
  held_ = false;
  deadline_ns_.store(0);
  // An expired hold is what the others look for: write one rather than delete, so the
  // release is also checked against our revision.
  rapidjson::Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  doc.AddMember("_rev", couchdb::StringValue(rev_, a), a);
  doc.AddMember("holder", "", a);
  doc.AddMember("released_by", couchdb::StringValue(holder_, a), a);
  doc.AddMember("expires_at_ms", 0, a);
  // Our writes are settled, but for one that ended without an answer; the holder's before us
  // may not be (we may release without having waited for them, or written at all).
  doc.AddMember("settle_at_ms", std::max(unanswered_until_ms_.load(), inherited_settle_ms_), a);
  (void)couch_.Put(LocalDocPath(database_, doc_id_), couchdb::ToJson(doc), "releasing the lease", max_write_);
}

LeaseSet::LeaseSet(CouchDb& couch, std::vector<std::string> databases, const std::string& name,
                   const std::string& holder, absl::Duration timeout, absl::Duration renew_every,
                   absl::Duration max_write)
    : databases_(std::move(databases)) {
  std::sort(databases_.begin(), databases_.end());
  databases_.erase(std::unique(databases_.begin(), databases_.end()), databases_.end());
  for (const std::string& database : databases_) {
    leases_.push_back(std::make_unique<Lease>(couch, database, name, holder, timeout, renew_every, max_write));
  }
}

void LeaseSet::RenewInBackground(const std::vector<CouchDb*>& own_connections) {
  for (size_t i = 0; i < leases_.size() && i < own_connections.size(); ++i) {
    leases_[i]->RenewInBackground(*own_connections[i]);
  }
}

absl::StatusOr<bool> LeaseSet::TryAcquire() {
  for (size_t i = 0; i < leases_.size(); ++i) {
    absl::StatusOr<bool> acquired = leases_[i]->TryAcquire();
    if (acquired.ok() && *acquired) continue;
    // Not held while waiting: another instance that holds this one may be waiting for ours.
    for (size_t j = 0; j < i; ++j) leases_[j]->Release();
    blocked_ = i;
    return acquired;
  }
  return true;
}

absl::StatusOr<bool> LeaseSet::RenewIfDue() {
  for (const auto& lease : leases_) {
    absl::StatusOr<bool> renewed = lease->RenewIfDue();
    if (!renewed.ok() || !*renewed) return renewed;
  }
  return true;
}

void LeaseSet::Release() {
  for (const auto& lease : leases_) lease->Release();
}

absl::StatusOr<absl::Duration> LeaseSet::WriteBudget() {
  // The longest hold-off first: each lease's budget is counted from when the write starts.
  if (const absl::Duration wait = hold_off(); wait > absl::ZeroDuration()) absl::SleepFor(wait);
  absl::Duration budget = absl::InfiniteDuration();
  for (const auto& lease : leases_) {
    absl::StatusOr<absl::Duration> one = lease->WriteBudget();
    if (!one.ok()) return one.status();
    budget = std::min(budget, *one);
  }
  return budget;
}

void LeaseSet::Unanswered() {
  for (const auto& lease : leases_) lease->Unanswered();
}

absl::Duration LeaseSet::hold_off() const {
  absl::Duration longest = absl::ZeroDuration();
  for (const auto& lease : leases_) longest = std::max(longest, lease->hold_off());
  return longest;
}

absl::Duration LeaseSet::wait_hint() const { return leases_[blocked_]->wait_hint(); }

std::string LeaseSet::other_holder() const { return leases_[blocked_]->other_holder(); }

}  // namespace cnp::derive
