// "Did you mean ...?": the closest name by edits, a swap of two letters counted as one, and no
// guess for a name like none of them.
#include "common/closest_name.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace cnp {
namespace {

TEST(EditDistanceTest, CountsInsertionsDeletionsSubstitutionsAndSwaps) {
  EXPECT_EQ(EditDistance("views", "views"), 0u);
  EXPECT_EQ(EditDistance("veiws", "views"), 1u);  // a swap
  EXPECT_EQ(EditDistance("view", "views"), 1u);
  EXPECT_EQ(EditDistance("viewss", "views"), 1u);
  EXPECT_EQ(EditDistance("vievs", "views"), 1u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("abc", ""), 3u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
}

TEST(ClosestNameTest, GuessesOnlyWhatIsClose) {
  const std::vector<std::string> keys = {"map", "reduce", "options", "views"};
  EXPECT_EQ(ClosestName("redcue", keys), "reduce");
  EXPECT_EQ(ClosestName("veiws", keys), "views");
  EXPECT_EQ(ClosestName("colour", keys), std::nullopt);
  // At most one edit per three letters: "mop" may be one from "map", "mp" none.
  EXPECT_EQ(ClosestName("mop", keys), "map");
  EXPECT_EQ(ClosestName("mp", keys), std::nullopt);
  // Of two equally close, the first in alphabetical order, every time.
  EXPECT_EQ(ClosestName("abcd", std::vector<std::string>{"abce", "abcf"}), "abce");
  EXPECT_EQ(ClosestName("abcd", std::vector<std::string>{"abcf", "abce"}), "abce");
}

}  // namespace
}  // namespace cnp
