// The signal the kernel sends a worker when the server that started it dies (PR_SET_PDEATHSIG),
// part of the contract between the two programs. A server that ends by itself stops its workers
// and their process groups; one killed outright (SIGKILL, the OOM killer) stops nothing. With
// SIGKILL here the worker died but what its functions started (a subprocess) ran on, out of reach
// of every limit. So the worker catches this signal and kills its process group, which it leads:
// itself and what its functions started, as the server would have. Until the worker installs its
// handler, the signal's default action ends it as SIGKILL did.
#pragma once

#include <signal.h>

namespace cnp::worker {

inline constexpr int kServerGoneSignal = SIGUSR2;

}  // namespace cnp::worker
