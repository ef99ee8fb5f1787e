// What a CouchDB session has taught the service, kept by the adapter so that a new stream (after
// the service restarted, or a replica died) can be taught the same before the command in flight
// is retried: the last reset, add_lib, the add_fun lines since, and every design document.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace cnp::adapter {

// The commands the adapter must tell apart; everything else it only forwards.
enum class Command { kReset, kAddLib, kAddFun, kDesignDocNew, kListStep, kOther };

// Reads the command name from the start of a line, allowing the whitespace a hand-written line
// may have. Does not validate the rest of the line.
Command ClassifyCommand(std::string_view line);

class SessionState {
 public:
  // A reset replaces the configuration and forgets the map functions and library; design
  // documents stay (CouchDB does not resend them).
  void OnReset(std::string_view line);
  // Records an add_lib, add_fun or ddoc new line once the service accepted it.
  void OnAccepted(Command command, std::string_view line);

  // The lines to send to a fresh stream, in order. None of them but the reset expects no reply.
  std::vector<std::string> ReplayLines() const;

  // CouchDB's per-read timeout from the last reset (5 s, CouchDB's default, before one).
  absl::Duration couchdb_timeout() const { return couchdb_timeout_; }

 private:
  std::optional<std::string> reset_;
  std::optional<std::string> lib_;
  std::vector<std::string> functions_;
  std::map<std::string, std::string> design_docs_;  // by the id's JSON text
  std::vector<std::string> design_doc_order_;
  absl::Duration couchdb_timeout_ = absl::Seconds(5);
};

}  // namespace cnp::adapter
