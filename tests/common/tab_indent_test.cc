#include "common/tab_indent.h"

#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp {
namespace {

using ::testing::Eq;
using ::testing::Optional;

constexpr int kAll = std::numeric_limits<int>::max();

TEST(TabIndentTest, TheNearestLineThatIndentsWithATabUpToTheErrorsLine) {
  const char* text = "d:\n  views:\n\tv: m.f\n\t\tw: m.g\n";
  EXPECT_THAT(TabIndentedLine(text, kAll), Optional(Eq(4)));
  EXPECT_THAT(TabIndentedLine(text, 3), Optional(Eq(3)));
  // Only lines up to the one yaml-cpp gave up on.
  EXPECT_EQ(TabIndentedLine(text, 2), std::nullopt);
  // Spaces then a tab indent with a tab too.
  EXPECT_THAT(TabIndentedLine("a:\n  \tb: 1\n", kAll), Optional(Eq(2)));
}

// Found by a review: a blank or comment line indented with a tab, which YAML takes, was named
// for an error elsewhere.
TEST(TabIndentTest, BlankAndCommentLinesDoNotCount) {
  EXPECT_EQ(TabIndentedLine("a:\n\t\n\t# note\n  b: [1\n", kAll), std::nullopt);
}

TEST(TabIndentTest, ATabAfterTheIndentationIsNoneOfIt) {
  EXPECT_EQ(TabIndentedLine("a: 1\t# a comment\nb: \"x\ty\"\n", kAll), std::nullopt);
  EXPECT_EQ(TabIndentedLine("", kAll), std::nullopt);
}

}  // namespace
}  // namespace cnp
