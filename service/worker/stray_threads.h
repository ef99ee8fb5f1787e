// Python threads a function started that are still running once its call is over. They may
// still call into cnp-worker (refused: call_context.h) or hold on to anything of the call, so a
// worker that has them is not given another call or session: it asks to be replaced.
#pragma once

#include <string>

namespace cnp::worker {

// How many Python threads run besides the calling one. With the GIL held.
int StrayPythonThreads();

// Logs that `threads` Python threads outlived `what` ("the map task of fns.leaky|1", "direct
// session s1") and that the worker asks to be replaced because of them.
void LogStrayThreads(int threads, const std::string& what);

}  // namespace cnp::worker
