// When a worker is full. Its cap (--worker-memory-mb) is on its address space (cnp-worker's
// RLIMIT_AS), so what it can still allocate is the cap less its address space, and what fills
// that is not only Python's: memory a C library or ctypes took and kept left a worker serving
// with nothing to allocate, and the next call sent to it, whoever's, failed with MemoryError.
// Its resident size never reaches the cap (what is resident is mapped), so it cannot tell: the
// watch compares the address space, less a headroom for the next call, with the cap, and
// replaces only a worker that has grown by that headroom since it started: one that starts
// that large (a --preload-module that maps much) would be replaced by another as large, every
// two seconds, for good.
#pragma once

#include <algorithm>
#include <cstdint>

namespace cnp::pool {

// An eighth of the cap, at least 16 MiB: an idle worker maps about 25 MiB, under the smallest
// cap allowed (64 MiB) less its headroom.
inline int64_t MemoryHeadroom(int64_t cap_bytes) {
  return std::max<int64_t>(cap_bytes / 8, int64_t{16} << 20);
}

// Whether a worker mapping `address_space_bytes` under `cap_bytes` (0: no cap), having mapped
// `started_bytes` once started (0: unknown), is to be replaced.
inline bool IsNearMemoryCap(int64_t address_space_bytes, int64_t started_bytes,
                            int64_t cap_bytes) {
  const int64_t headroom = MemoryHeadroom(cap_bytes);
  return cap_bytes > 0 && address_space_bytes > cap_bytes - headroom &&
         address_space_bytes - started_bytes >= headroom;
}

}  // namespace cnp::pool
