// The handlers of a `cnp derive` instance, read from a YAML (or JSON) declaration that mirrors
// qvarn-mr's `handlers` dict, naming functions instead of holding them: the functions run in
// cnp-server, never in the CLI, so the CLI only needs their names.
//
//   name: company_reports            # the instance: its lease, checkpoints, status and errors
//   handlers:
//     company_reports__map:          # target database
//       orgs:                        # source database
//         type: map
//         version: 1
//         handler: myhandlers.org_key        # module.function or module.function|N
//       reports: {type: map, version: 1, handler: myhandlers.report_org}
//     company_reports:
//       company_reports__map:        # a reduce target's one source: a map target above
//         type: reduce
//         version: 1
//         handler: myhandlers.company_report
//         sources: true              # give each row its source document (join needs them)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cnp::derive {

struct Stage {
  std::string target;
  std::string source;
  bool reduce = false;
  int64_t version = 0;  // the derived data's version; a change re-runs the stage from scratch
  std::string handler;  // a named function, as cnp-server calls it
  bool with_sources = false;  // reduce only: rows carry their source document as mr_source
};

struct Declaration {
  std::string name;
  std::vector<Stage> stages;  // map stages first, then reduce stages; each in file order
};

// Every problem is reported with the file name and what to change.
absl::StatusOr<Declaration> ParseDeclaration(absl::string_view yaml, absl::string_view file);
absl::StatusOr<Declaration> ReadDeclaration(const std::string& path);

}  // namespace cnp::derive
