// The design documents one CouchDB session was taught with ["ddoc","new",id,ddoc].
//
// CouchDB teaches a process a design document once and expects it to be remembered until the
// process exits, across every "reset". Only the function names matter to the service, so a
// design document is kept as the map from function path (["filters","by_town"],
// ["views","v","map"], ["validate_doc_update"], ...) to the function's name, read from the
// document's text in one streaming pass (design_functions.h): the rest of a design document
// (attachments, options, data) is read past and costs nothing, and a document whose functions
// pass the byte bound is refused as soon as they do, not once it has been read whole.
//
// CouchDB's proc manager never teaches a live process a design document again, so a document
// this cache forgets fails the next call on it: it is answered as couchjs answers an uncached
// one (["fatal","query_protocol_error","uncached design doc: <id>"], see query_session.h), the
// request fails, and CouchDB stops the process and teaches a fresh one what it needs. So the
// cache must hold every design document a realistic deployment teaches one process — a process
// serving many databases (per-user databases with a validate_doc_update each) is taught one
// per database — and is bounded by bytes only, least recently used first out, as the guard
// against one session holding the server's memory. A design document that alone exceeds the
// byte bound is refused when taught, with an error CouchDB reports for that call.
#pragma once

#include <cstddef>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "service/couchdb/design_doc_budget.h"

namespace cnp::couchdb {

class DesignDocCache {
 public:
  struct Limits {
    // No bound on the count by default: every document costs at least kEntryOverhead bytes
    // (design_doc_cache.cc), so the byte bound also bounds the count (at 64 MiB, about 524,000).
    size_t max_docs = std::numeric_limits<size_t>::max();
    // Bytes of function paths and names (plus bookkeeping) kept for all of them. 64 MiB is
    // what couchjs allows each CouchDB process by default (its -S heap limit), where it keeps
    // whole design documents; here only names are kept, so a session never needs more than
    // couchjs would for the same documents. A database's validate_doc_update document costs
    // about 300 bytes here, so 64 MiB holds some 200,000 of them. Memory follows what CouchDB
    // teaches, not the bound: a deployment with 2,000 such databases costs each session ~600 KB.
    size_t max_bytes = 64 << 20;
    // What every session of the server holds together, charged with this session's bytes too
    // (null: no shared bound). A document the budget cannot take once this session has let go
    // of its own least recently used ones is refused (RESOURCE_EXHAUSTED) like one over
    // max_bytes: CouchDB fails that request, and the session keeps what it had.
    DesignDocBudget* shared = nullptr;
  };

  DesignDocCache() : DesignDocCache(Limits()) {}
  explicit DesignDocCache(Limits limits) : limits_(limits) {}
  // Gives its bytes back to the shared budget.
  ~DesignDocCache();
  DesignDocCache(const DesignDocCache&) = delete;
  DesignDocCache& operator=(const DesignDocCache&) = delete;

  // Learns (or relearns, for a newer revision) design document `id` from its JSON text,
  // evicting the least recently used ones beyond the limits. INVALID_ARGUMENT when `json` is
  // not a JSON object; RESOURCE_EXHAUSTED when this document alone exceeds the byte limit (the
  // cache then holds what it held before).
  absl::Status Put(std::string_view id, std::string_view json);

  bool Contains(std::string_view id) const;

  // The function named at `path` in design document `id`, or nothing when the document or the
  // function is missing or the value there is not a string.
  std::optional<std::string> FindFunction(std::string_view id,
                                          const std::vector<std::string>& path) const;

  size_t size() const { return index_.size(); }
  size_t bytes() const { return bytes_; }
  const Limits& limits() const { return limits_; }

 private:
  // Function path (elements joined by kPathSeparator) → function name.
  using Functions = std::map<std::string, std::string, std::less<>>;
  static constexpr char kPathSeparator = '\x1f';
  struct Entry {
    std::string id;
    Functions functions;
    size_t bytes = 0;
  };
  using Recency = std::list<Entry>;  // most recently used first

  // Marks `id` used; its entry, or nullptr.
  const Entry* Touch(std::string_view id) const;
  // Forgets the least recently used document, giving its bytes back.
  void EvictOldest();

  const Limits limits_;
  mutable Recency recency_;
  std::map<std::string, Recency::iterator, std::less<>> index_;
  size_t bytes_ = 0;
};

}  // namespace cnp::couchdb
