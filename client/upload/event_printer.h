// How `cnp upload` and `cnp check` show the service's events: one block per design document,
// problems as "file:line:column: error: message" (the form editors jump to).
#pragma once

#include <ostream>

#include "cnp/v1/upload.pb.h"

namespace cnp::client::upload {

struct PrintOptions {
  bool show_documents = false;  // print each design document's JSON
};

// Tallies what was printed, for the closing summary.
struct UploadTally {
  int created = 0, updated = 0, removed = 0, unchanged = 0, would_change = 0, checked = 0;
  int errors = 0, warnings = 0;
};

// Outcomes and progress go to `out`, problems to `err`.
void PrintEvent(const v1::UploadEvent& event, const PrintOptions& options, std::ostream& out,
                std::ostream& err, UploadTally& tally);

// "2 created, 1 unchanged; 1 error"
void PrintSummary(const UploadTally& tally, std::ostream& out);

}  // namespace cnp::client::upload
