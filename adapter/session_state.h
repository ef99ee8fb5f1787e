// What a CouchDB session has taught the service, kept by the adapter so that a new stream (after
// the service restarted, or a replica died) can be taught the same before the command in flight
// is retried: the last reset, add_lib and the add_fun lines since, replayed at once; and every
// design document, taught again only when a command names it (ServiceConnection), as CouchDB
// never sends one twice and a long-lived process may have been taught thousands. Of a design
// document only its functions are kept, all the service keeps of one, and at most as many bytes
// of them as the service keeps for a session (kMaxDesignDocBytes), least recently used first
// out: CouchDB teaches a long-lived process every design document it uses, and the adapter must
// not hold without bound what the service does not.
// Lines are read with the protocol library the service uses (service/couchdb/command.h).
#pragma once

#include <cstddef>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "service/couchdb/command.h"

namespace cnp::adapter {

// A list_row or list_end: a step of the list a worker holds, which cannot be replayed elsewhere.
inline bool IsListStep(couchdb::CommandKind kind) {
  return kind == couchdb::CommandKind::kListRow || kind == couchdb::CommandKind::kListEnd;
}

class SessionState {
 public:
  static constexpr absl::Duration kDefaultCouchDBTimeout = absl::Seconds(5);
  // The service's own bound for one session's design documents (design_doc_cache.h): one the
  // adapter forgot is one the service could have forgotten too, answered as uncached, on which
  // CouchDB starts a fresh process and teaches it again.
  static constexpr size_t kMaxDesignDocBytes = size_t{64} << 20;

  SessionState() = default;
  explicit SessionState(size_t max_design_doc_bytes)
      : max_design_doc_bytes_(max_design_doc_bytes) {}

  // A reset replaces the configuration and forgets the map functions and library; design
  // documents stay (CouchDB does not resend them).
  void OnReset(std::string_view line);
  // Records an add_lib, add_fun or ddoc new line once the service accepted it
  // (ReplyTaughtSession in service_connection.h); other kinds are not kept.
  void OnAccepted(couchdb::CommandKind kind, std::string_view line);

  // The lines to send to a fresh stream, in order: the reset, add_lib and add_fun lines (no
  // design documents). None of them but the reset expects no reply.
  std::vector<std::string> ReplayLines() const;

  // The line that teaches a new stream the design document `id` (as the protocol library
  // decodes ids) as the last accepted `ddoc new` line for it did: a `ddoc new` line of that
  // document's functions only (design_functions.h), all the service keeps of it. Null when
  // CouchDB never taught it, or it was forgotten for others taught or used since. Marks the
  // document used: a stream is taught the documents it uses, so those it has been taught are
  // never the first forgotten.
  const std::string* DesignDocLine(const std::string& id) const;
  size_t design_doc_count() const { return design_docs_.size(); }
  size_t design_doc_bytes() const { return design_doc_bytes_; }

  // CouchDB's per-read timeout: the last reset's, or CouchDB's default (5 s, the service's too)
  // before a reset and after one that gives none.
  absl::Duration couchdb_timeout() const { return couchdb_timeout_; }

 private:
  std::optional<std::string> reset_;
  std::optional<std::string> lib_;
  std::vector<std::string> functions_;
  struct DesignDoc {
    std::string id;
    std::string line;
  };
  void Forget(std::list<DesignDoc>::iterator doc);

  size_t max_design_doc_bytes_ = kMaxDesignDocBytes;
  // Most recently taught or used first; `mutable` as a lookup is a use.
  mutable std::list<DesignDoc> recency_;
  absl::flat_hash_map<std::string, std::list<DesignDoc>::iterator> design_docs_;  // by id
  size_t design_doc_bytes_ = 0;  // of the lines and ids in recency_
  absl::Duration couchdb_timeout_ = kDefaultCouchDBTimeout;
};

}  // namespace cnp::adapter
