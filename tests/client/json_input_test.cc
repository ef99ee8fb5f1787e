// How `cnp map` reads documents: a JSON array is spread into its elements, each cut out of the
// text exactly as written.
#include "client/cli/json_input.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::cli {
namespace {

using ::testing::ElementsAre;

TEST(JsonInputTest, AnArrayIsSpreadIntoItsElementsAsWritten) {
  // Strings and numbers among the elements: their ends were found one element early before, and
  // `[{"_id":"a"},"s"]` came out as the object and an empty document.
  absl::StatusOr<std::vector<std::string>> values = SplitJsonValues(
      R"( [ {"_id":"a"} , "s,]" ,5.0e3, true,[1, "]"],{"x":"]"},123456789012345678901234567890 ] )",
      true);
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(R"({"_id":"a"})", R"("s,]")", "5.0e3", "true", R"([1, "]"])",
                                   R"({"x":"]"})", "123456789012345678901234567890"));
}

TEST(JsonInputTest, OnlyALoneArrayIsSpread) {
  EXPECT_THAT(*SplitJsonValues("[]", true), ElementsAre());
  EXPECT_THAT(*SplitJsonValues("[1]", false), ElementsAre("[1]"));
  EXPECT_THAT(*SplitJsonValues("[1]\n[2]\n", true), ElementsAre("[1]", "[2]"));
  EXPECT_THAT(*SplitJsonValues("{\"a\":1}\n\"b\"\n7", true), ElementsAre("{\"a\":1}", "\"b\"", "7"));
}

TEST(JsonInputTest, ErrorsNameTheirPlace) {
  absl::StatusOr<std::vector<std::string>> values = SplitJsonValues("[{\"a\":1},\n 5,,]", true);
  ASSERT_FALSE(values.ok());
  EXPECT_THAT(std::string(values.status().message()), ::testing::HasSubstr("line 2, column 4"));
}

}  // namespace
}  // namespace cnp::cli
