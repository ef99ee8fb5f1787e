#include "service/couchdb/error_id.h"

#include "absl/status/status.h"
#include "common/call_limit.h"
#include "gtest/gtest.h"

namespace cnp::couchdb {
namespace {

TEST(InfrastructureErrorIdTest, EachCodeHasItsId) {
  EXPECT_EQ(InfrastructureErrorId(absl::DeadlineExceededError("late")), "timeout");
  EXPECT_EQ(InfrastructureErrorId(absl::UnavailableError("gone")), "unavailable");
  EXPECT_EQ(InfrastructureErrorId(absl::InternalError("bug")), "internal_error");
  EXPECT_EQ(InfrastructureErrorId(absl::UnknownError("?")), "internal_error");
}

TEST(InfrastructureErrorIdTest, ResourceExhaustedIsTooLargeOnlyWithACallLimit) {
  // Every worker busy, or --max-grpc-memory cancelling streams: it passes.
  EXPECT_EQ(InfrastructureErrorId(absl::ResourceExhaustedError("memory quota exceeded")),
            "overloaded");
  // The server's per-call limits, which the same line cannot pass however often it is sent.
  EXPECT_EQ(InfrastructureErrorId(WithCallLimit(absl::ResourceExhaustedError("too big"),
                                                {.kind = CallLimit::Kind::kRequest,
                                                 .limit = 100000})),
            "too_large");
  EXPECT_EQ(InfrastructureErrorId(WithCallLimit(absl::ResourceExhaustedError("answer too big"),
                                                {.kind = CallLimit::Kind::kAnswer})),
            "too_large");
}

}  // namespace
}  // namespace cnp::couchdb
