// ParseJsonExact: every number as CouchDB keeps it, written back by ToJson digit for digit.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/couchdb/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::couchdb {
namespace {

using ::testing::HasSubstr;

// A positive integer of `digits` digits, none of them repeating a short pattern.
std::string Digits(size_t digits) {
  std::string text = "9";
  for (size_t i = 1; i < digits; ++i) text.push_back(static_cast<char>('0' + (i * 7 + i / 10) % 10));
  return text;
}

TEST(ParseJsonExactTest, IntegersOfAnySizeComeBackDigitForDigit) {
  const std::string big = Digits(401);       // rapidjson refuses it outright
  const std::string mid = Digits(25);        // rapidjson would round it to a double
  const std::string json = absl::StrCat(R"({"big":)", big, R"(,"neg":-)", big, R"(,"mid":)", mid,
                                        R"(,"list":[1,)", big, R"(,2.5],"small":-7,"u":18446744073709551615})");
  absl::StatusOr<rapidjson::Document> doc = ParseJsonExact(json);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(ToJson(*doc), json);
  EXPECT_TRUE(IsKeptNumber((*doc)["big"]));
  EXPECT_EQ(KeptNumberText((*doc)["big"]), big);
  EXPECT_EQ(KeptNumberText((*doc)["neg"]), "-" + big);
  EXPECT_EQ(KeptNumberText((*doc)["mid"]), mid);
  EXPECT_TRUE((*doc)["small"].IsInt64());
  EXPECT_TRUE((*doc)["u"].IsUint64());
  EXPECT_DOUBLE_EQ((*doc)["list"][2].GetDouble(), 2.5);
  // Not a string to those who ask for one.
  EXPECT_EQ(StringMember(*doc, "big"), "");
  // Compared by their text: the same digits are equal, others not.
  absl::StatusOr<rapidjson::Document> same = ParseJsonExact(json);
  absl::StatusOr<rapidjson::Document> other =
      ParseJsonExact(absl::StrCat(R"({"big":)", big.substr(0, 400), "8", "}"));
  ASSERT_TRUE(same.ok() && other.ok());
  EXPECT_TRUE(JsonEqual(*doc, *same));
  EXPECT_FALSE(JsonEqual((*doc)["big"], (*other)["big"]));
  // ParseJson still refuses what it cannot hold.
  EXPECT_FALSE(ParseJson(json).ok());
}

// Found by a review: two integers were compared by their 64-bit patterns, so a stored -1 was
// "equal" to an uploaded 18446744073709551615 and the upload said unchanged; and an integer past
// a double's precision was equal to the double nearest to it. Numbers are compared by value.
TEST(JsonEqualTest, NumbersAreEqualByValueOnly) {
  auto equal = [](const char* a, const char* b) {
    absl::StatusOr<rapidjson::Document> x = ParseJsonExact(a);
    absl::StatusOr<rapidjson::Document> y = ParseJsonExact(b);
    EXPECT_TRUE(x.ok() && y.ok()) << a << " " << b;
    return JsonEqual(*x, *y) && JsonEqual(*y, *x);
  };
  EXPECT_FALSE(equal("-1", "18446744073709551615"));
  EXPECT_FALSE(equal("-9223372036854775808", "9223372036854775808"));
  EXPECT_FALSE(equal("9007199254740993", "9007199254740993.0"));
  EXPECT_FALSE(equal("1", "1.5"));
  EXPECT_FALSE(equal("18446744073709551615", "1.8446744073709552e19"));
  EXPECT_TRUE(equal("1", "1.0"));
  EXPECT_TRUE(equal("-7", "-7.0"));
  EXPECT_TRUE(equal("9007199254740992", "9007199254740992.0"));
  EXPECT_TRUE(equal("18446744073709551615", "18446744073709551615"));
  EXPECT_TRUE(equal("-1", "-1"));
  EXPECT_TRUE(equal("2.5", "2.5"));
}

TEST(ParseJsonExactTest, NumbersPastADoublesRangeAreKeptAndOthersAreDoubles) {
  absl::StatusOr<rapidjson::Document> doc = ParseJsonExact(R"([1e400,-2.5E+999,0.1,1e5,1.5e-3])");
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(KeptNumberText((*doc)[0]), "1e400");
  EXPECT_EQ(KeptNumberText((*doc)[1]), "-2.5E+999");
  EXPECT_DOUBLE_EQ((*doc)[2].GetDouble(), 0.1);
  EXPECT_DOUBLE_EQ((*doc)[3].GetDouble(), 1e5);
  EXPECT_THAT(ToJson(*doc), HasSubstr("[1e400,-2.5E+999,0.1,"));
}

TEST(ParseJsonExactTest, NoStringPassesForAKeptNumber) {
  // 0xFF, the mark, is not UTF-8: a string holding it is refused, not read as a number.
  absl::StatusOr<rapidjson::Document> forged = ParseJsonExact("[\"\xff" "1]\"]");
  EXPECT_FALSE(forged.ok());
  EXPECT_THAT(forged.status().message(), HasSubstr("not valid UTF-8"));
  // A string that looks like a number stays a string.
  absl::StatusOr<rapidjson::Document> text = ParseJsonExact(R"(["123456789012345678901234567890"])");
  ASSERT_TRUE(text.ok());
  EXPECT_FALSE(IsKeptNumber((*text)[0]));
  EXPECT_EQ(ToJson(*text), R"(["123456789012345678901234567890"])");
}

TEST(ParseJsonExactTest, TheRefusalsOfParseJsonStay) {
  EXPECT_THAT(ParseJsonExact(absl::StrCat(std::string(5000, '['), std::string(5000, ']'))).status().message(),
              HasSubstr("nested deeper than 4096"));
  EXPECT_FALSE(ParseJsonExact(R"({"a":})").ok());
  EXPECT_FALSE(ParseJsonExact(absl::StrCat(R"({"a":)", Digits(400), "x}")).ok());
}

// rapidjson stops at a NUL byte as at the end: "{...}\0..." was read as the value before it.
TEST(ParseJsonExactTest, ANulByteIsRefusedNotTakenForTheEnd) {
  using std::string_literals::operator""s;
  const std::string text = "{\"ok\":true}\0{\"ok\":false}"s;
  EXPECT_THAT(ParseJson(text).status().message(), HasSubstr("a NUL byte at offset 11"));
  EXPECT_THAT(ParseJsonExact(text).status().message(), HasSubstr("a NUL byte at offset 11"));
}

TEST(ParseJsonExactTest, FindsTheDocumentsOfAChangesAnswerAsTheyWereWritten) {
  const std::string big = Digits(401);
  const std::string doc_a = absl::StrCat(R"({ "_id" : "a", "n" : )", big, R"(, "s":"}\"{", "x":{"doc":{}} })");
  const std::string doc_c = R"({"_id":"c","list":[{"doc":1}]})";
  const std::string json = absl::StrCat(
      R"({"results":[{"seq":1,"id":"a","changes":[{"rev":"1-a"}],"doc":)", doc_a, "},",
      R"({"seq":2,"id":"b","deleted":true,"doc":null},)", R"({"seq":3,"id":"c","doc":)", doc_c,
      R"(,"after":{"k":1}}],"last_seq":3,"doc":{"not":"a row's"}})");
  std::vector<TextSpan> docs;
  absl::StatusOr<rapidjson::Document> parsed = ParseJsonExact(json, "results", &docs);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(docs.size(), 3u);
  auto text = [&](const TextSpan& span) { return json.substr(span.begin, span.end - span.begin); };
  EXPECT_EQ(text(docs[0]), doc_a);
  EXPECT_EQ(docs[1].begin, docs[1].end);
  EXPECT_EQ(text(docs[2]), doc_c);
  EXPECT_EQ(KeptNumberText((*parsed)["results"][0]["doc"]["n"]), big);
}

}  // namespace
}  // namespace cnp::couchdb
