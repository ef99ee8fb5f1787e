// How `cnp map` reads documents: a JSON array is spread into its elements, each cut out of the
// text exactly as written.
#include "client/cli/json_input.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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

  // NDJSON whose line 2 was cut short: the parser notices at line 3, and the message says
  // where the broken value starts.
  values = SplitJsonValues("{\"_id\":\"a\"}\n{\"_id\":\"b\"\n{\"_id\":\"c\"}\n", true);
  ASSERT_FALSE(values.ok());
  EXPECT_THAT(std::string(values.status().message()),
              ::testing::HasSubstr("invalid JSON at line 3, column 1: "));
  EXPECT_THAT(std::string(values.status().message()),
              ::testing::HasSubstr("(in the value that starts at line 2, column 1)"));
}

// A number past a double's range (401 digits: CouchDB stores such integers, cnp-server reads
// them exactly) is refused by rapidjson even as text; it is read all the same, and each value
// is still cut out exactly as written.
// A NUL byte ended the input where it stood: the documents after it were dropped, and the
// command succeeded. Now it is an error at its place; a byte order mark is passed over, and
// only JSON's own whitespace separates values.
TEST(JsonInputTest, ANulByteIsAnErrorAtItsPlaceAndAByteOrderMarkIsPassedOver) {
  absl::StatusOr<std::vector<std::string>> values =
      SplitJsonValues(std::string("{\"_id\":\"a\"}\n\0{\"_id\":\"b\"}\n", 24), true);
  ASSERT_FALSE(values.ok());
  EXPECT_EQ(values.status().message(), "invalid JSON at line 2, column 1: a NUL byte");

  EXPECT_THAT(*SplitJsonValues("\xEF\xBB\xBF[{\"_id\":\"a\"}]", true),
              ElementsAre("{\"_id\":\"a\"}"));
  EXPECT_FALSE(SplitJsonValues("1\f2", true).ok());
  EXPECT_FALSE(SplitJsonValues("1\v2", true).ok());
}

TEST(JsonInputTest, NumbersPastADoublesRangeAreReadAndKeptAsWritten) {
  const std::string big(401, '7');
  const std::string doc = absl::StrCat(R"({"_id":"big","n":)", big, R"(,"s":")", big, R"("})");
  EXPECT_THAT(*SplitJsonValues(absl::StrCat("[", doc, " , -", big, ",1e400]"), true),
              ElementsAre(doc, "-" + big, "1e400"));
  EXPECT_THAT(*SplitJsonValues(absl::StrCat(doc, "\n", big, "\n"), true), ElementsAre(doc, big));
  // An error after one is still found at its place.
  absl::StatusOr<std::vector<std::string>> values =
      SplitJsonValues(absl::StrCat("[", big, ",\n 5,,]"), true);
  ASSERT_FALSE(values.ok());
  EXPECT_THAT(std::string(values.status().message()), ::testing::HasSubstr("line 2, column 4"));
}

}  // namespace
}  // namespace cnp::cli
