// The worker's end when the server that started it dies (protocol/server_gone_signal.h): the
// worker kills its process group, itself and what its functions started, as the server would
// have. Two ways, so that Python code cannot undo it: the kernel's signal (PR_SET_PDEATHSIG),
// whose handler a function can replace (signal.signal, faulthandler.register), and a thread of
// the worker's own, waiting on the server's pidfd, which no Python code reaches.
#pragma once

namespace cnp::worker {

// Installs the signal's handler and starts the watching thread (all signals blocked in it, a
// small stack). Early in main, before Python starts. A worker that cannot watch (no pidfd) has
// the signal alone.
void DieWithTheServer();

}  // namespace cnp::worker
