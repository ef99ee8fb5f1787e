// How `cnp upload` and `cnp check` show the service's events: one block per design document,
// problems as "file:line:column: error: message" (the form editors jump to).
#pragma once

#include <ostream>
#include <set>
#include <string>

#include "cnp/v1/upload.pb.h"

namespace cnp::cli {

struct PrintOptions {
  bool show_documents = false;  // print each design document's JSON
  bool staged = false;          // --staged: a dry run's index would be built before the write
  // What a design document is compared with: fields stored in CouchDB but not there are kept
  // or dropped (cnp sync compares with the registry's copy).
  const char* compared_with = "the YAML";
};

// Tallies what was printed, for the closing summary (and what later lines depend on).
struct UploadTally {
  int created = 0, updated = 0, removed = 0, unchanged = 0, would_change = 0, checked = 0;
  int errors = 0, warnings = 0;
  bool checks_only = false;  // cnp check: nothing is ever written, so the summary never says so
  // cnp sync: live registry entries that target no existing database (each also warned of).
  int unmatched_entries = 0;
  // --staged: the design documents ("<db>/_design/<name>") whose index was built under their
  // staging id before the write (a "built" progress event); their outcome then says so
  // instead of "rebuilt on the next query".
  std::set<std::string> built_ahead;
};

// Outcomes and progress go to `out`, problems to `err`.
void PrintEvent(const v1::UploadEvent& event, const PrintOptions& options, std::ostream& out,
                std::ostream& err, UploadTally& tally);

// "2 created, 1 unchanged, 1 error". `failed`: the run stopped on an error that was not
// tallied (a refused call, CouchDB unreachable); then an empty tally prints nothing rather
// than "no design documents", an outcome the run never reached.
void PrintSummary(const UploadTally& tally, bool failed, std::ostream& out);

}  // namespace cnp::cli
