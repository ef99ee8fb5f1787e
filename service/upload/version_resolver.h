// Turns the function names of design documents into the "module.function|version" strings
// CouchDB stores, by importing every function in a worker: exactly where it will run, so the
// version written is the version that will be checked.
#pragma once

#include <stop_token>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "service/pool/task_runner.h"
#include "service/upload/design_spec.h"
#include "service/upload/problem_list.h"

namespace cnp::upload {

// Resolves all functions of all `specs` in one task and rewrites their names in place. A
// function that does not import, is refused or is not a function becomes an error in
// `problems`, at the line naming it. The status is an error only when the workers could not
// be asked at all, or when `stop` was requested (the Upload was cancelled): CANCELLED, the
// task dropped if no worker had taken it yet, its worker replaced if one had.
absl::Status ResolveVersions(pool::TaskRunner& runner, absl::Time deadline,
                             std::vector<DesignDocSpec>& specs, ProblemList& problems,
                             std::stop_token stop = {});

}  // namespace cnp::upload
