// When the memory watch replaces a worker (service/pool/memory_cap.h): near its cap, and grown
// by the headroom since it started; never without a cap.
#include "service/pool/memory_cap.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace cnp::pool {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(MemoryCapTest, TheHeadroomIsAnEighthOfTheCapAndAtLeast16MiB) {
  EXPECT_EQ(MemoryHeadroom(2048 * kMiB), 256 * kMiB);
  EXPECT_EQ(MemoryHeadroom(256 * kMiB), 32 * kMiB);
  EXPECT_EQ(MemoryHeadroom(64 * kMiB), 16 * kMiB);
}

// Memory a C library or ctypes took and kept: the worker grew into its last eighth.
TEST(MemoryCapTest, AWorkerThatGrewIntoItsLastEighthIsReplaced) {
  EXPECT_TRUE(IsNearMemoryCap(250 * kMiB, 25 * kMiB, 256 * kMiB));
  EXPECT_FALSE(IsNearMemoryCap(200 * kMiB, 25 * kMiB, 256 * kMiB));  // room for a call left
  EXPECT_FALSE(IsNearMemoryCap(250 * kMiB, 25 * kMiB, 0));             // no cap
}

// Found by a review: a worker that starts that large (a --preload-module that maps much) was
// replaced by another as large every 2 s, for good. Only what it grows by counts.
TEST(MemoryCapTest, AWorkerThatStartedNearItsCapIsReplacedOnlyForWhatItGrowsBy) {
  EXPECT_FALSE(IsNearMemoryCap(1804 * kMiB, 1804 * kMiB, 2048 * kMiB));
  EXPECT_FALSE(IsNearMemoryCap(2000 * kMiB, 1804 * kMiB, 2048 * kMiB));  // grew 196 < 256 MiB
  EXPECT_TRUE(IsNearMemoryCap(2047 * kMiB, 1780 * kMiB, 2048 * kMiB));   // grew 267 MiB
}

}  // namespace
}  // namespace cnp::pool
