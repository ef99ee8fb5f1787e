// Which code each worker of a running cnp-server runs, in one call that reaches them all.
//
// The test's function emits one row per document, [LABEL, os.getpid()], LABEL naming the
// version of the code it runs. A single small call proves little: the pool hands the worker it
// took last back out first, so back-to-back calls are all served by the same one. A Map of
// many documents is split into parts (one per 64 documents, up to four per worker) that the
// server hands to every idle worker at once, so each of them answers some of it.
#pragma once

#include <map>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "client/lib/cnp_client.h"

namespace cnp::testing {

// The pids that answered one Map of `function` on `docs` documents, by the label each
// answered with. An error if the call fails or a row is not [LABEL, PID].
absl::StatusOr<std::map<std::string, std::set<int>>> PidsByLabel(const client::Client& client,
                                                                  const std::string& function,
                                                                  int docs = 1024);

}  // namespace cnp::testing
