// The typed call limit (common/call_limit.h): the mark survives as a payload, keeps the status's
// code and message, is told apart from an unmarked status, and its trailer text reads back to
// the same limit and refuses anything else.
#include "common/call_limit.h"

#include "gtest/gtest.h"

namespace cnp {
namespace {

using Kind = CallLimit::Kind;

TEST(CallLimitTest, AMarkedStatusKeepsItsCodeAndMessageAndSaysItsLimit) {
  const absl::Status marked =
      WithCallLimit(absl::ResourceExhaustedError("too big"), {Kind::kAnswer, 100000});
  EXPECT_TRUE(absl::IsResourceExhausted(marked));
  EXPECT_EQ(marked.message(), "too big");
  EXPECT_EQ(CallLimitOf(marked), (CallLimit{Kind::kAnswer, 100000}));
  // A second mark replaces the first.
  EXPECT_EQ(CallLimitOf(WithCallLimit(marked, {Kind::kDocuments, 7})),
            (CallLimit{Kind::kDocuments, 7}));
}

TEST(CallLimitTest, AnUnmarkedOrOkStatusHasNoLimit) {
  EXPECT_EQ(CallLimitOf(absl::ResourceExhaustedError(
                "the request is over cnp-server's --max-call-bytes (100000 bytes)")),
            std::nullopt);
  EXPECT_EQ(CallLimitOf(absl::OkStatus()), std::nullopt);
  EXPECT_TRUE(WithCallLimit(absl::OkStatus(), {Kind::kRequest, 1}).ok());
  EXPECT_EQ(CallLimitOf(WithCallLimit(absl::OkStatus(), {Kind::kRequest, 1})), std::nullopt);
}

TEST(CallLimitTest, TheTrailerTextReadsBackToTheSameLimit) {
  for (CallLimit limit : {CallLimit{Kind::kAnswer, 100000}, CallLimit{Kind::kRequest, 0},
                          CallLimit{Kind::kDocuments, 1000000}, CallLimit{Kind::kFunctions, 4096},
                          CallLimit{Kind::kAnswer, int64_t{1} << 40}}) {
    EXPECT_EQ(ParseCallLimit(CallLimitText(limit)), limit) << CallLimitText(limit);
  }
  EXPECT_EQ(CallLimitText({Kind::kAnswer, 100000}), "answer 100000");
  EXPECT_EQ(CallLimitText({Kind::kRequest, 65536}), "request 65536");
  EXPECT_EQ(CallLimitText({Kind::kDocuments, 10}), "documents 10");
  EXPECT_EQ(CallLimitText({Kind::kFunctions, 4096}), "functions 4096");
}

TEST(CallLimitTest, TextItDoesNotWriteIsRefused) {
  for (const char* text : {"", "answer", "answer ", "answer -1", "answer +5", "answer 5 ",
                           " answer 5", "answer  5", "answer 5 bytes", "answers 5", "Answer 5",
                           "rows 5", "answer 99999999999999999999", "answer 0x10"}) {
    EXPECT_EQ(ParseCallLimit(text), std::nullopt) << '"' << text << '"';
  }
}

}  // namespace
}  // namespace cnp
