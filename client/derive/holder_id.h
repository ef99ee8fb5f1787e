// Who holds a lease (lease.h): "HOST:PID:RANDOM", the instance's host name, its process id and
// a random part, so that a pid used again, or the same pid in another container of the same
// host name, is another holder.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace cnp::derive {

// This process's holder id, a new random part each call.
std::string NewHolderId();

// Whether `holder`, not this process's own id, names a process of this host that has ended, so
// that nothing renews its lease: a `--once` run then waits for the lease to expire instead of
// leaving the work to it.
// False when that cannot be told: another host, an id of another shape, a process that is alive
// (of this user or another), or a process of another pid namespace on a host of the same name
// (its pid may be unused here: the caller still waits only for the lease to expire).
bool HolderEndedOnThisHost(absl::string_view holder);

}  // namespace cnp::derive
