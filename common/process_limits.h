// The most worker processes one cnp-server runs for each kind of work: its pool (--workers) and
// its direct CouchDB sessions (--max-sessions, which also caps the spare session workers).
// cnp-server refuses more, and cnp-adapter refuses a --workers it would pass on. Without a
// ceiling --workers=100000 forked until the OOM killer ended the server (found by a review).
// 256 of the measured ~23 MiB workers is about 6 GiB: more than any host this serves needs
// (each worker is one CPU-bound Python, so past the core count more only queue), and still a
// number a host survives. A session past --max-sessions is not refused: the adapter uses the
// gRPC Session stream instead.
#pragma once

namespace cnp {

inline constexpr int kMaxWorkerProcesses = 256;

}  // namespace cnp
