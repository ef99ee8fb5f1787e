#include "common/couchdb/json_value_count.h"

#include <string>

#include "gtest/gtest.h"

namespace cnp::couchdb {
namespace {

int64_t Count(const std::string& text) {
  JsonValueCount count;
  count.Add(text);
  return count.values();
}

TEST(JsonValueCountTest, CountsEveryValueAndMemberName) {
  EXPECT_EQ(Count("0"), 1);
  EXPECT_EQ(Count("[0,0,0]"), 4);                   // the array and three elements
  EXPECT_EQ(Count(R"({"a":1,"b":[true,null]})"), 7);  // object, 2 names, 1, array, 2 elements
  EXPECT_EQ(Count("[]"), 2);                        // an upper bound: one more than there is
}

TEST(JsonValueCountTest, SeparatorsInsideStringsAreText) {
  EXPECT_EQ(Count(R"(["a,b:[{", "c"])"), 3);
  // An escaped quote does not end the string; an escaped backslash before the quote does.
  EXPECT_EQ(Count(R"(["x\",y", "z\\",1])"), 4);
}

TEST(JsonValueCountTest, ChunksMayEndAnywhere) {
  const std::string text = R"({"k\"e,y":[1,2,"a\\"],"n":{"m":"v,"}})";
  const int64_t whole = Count(text);
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    JsonValueCount count;
    count.Add(text.substr(0, cut));
    count.Add(text.substr(cut));
    EXPECT_EQ(count.values(), whole) << "cut at " << cut;
  }
  EXPECT_EQ(whole, 10);
}

TEST(JsonValueCountTest, TheLimitIsOneValuePerSixteenBytesAndNeverTiny) {
  EXPECT_EQ(MaxJsonValuesFor(int64_t{64} << 20), int64_t{4} << 20);
  EXPECT_EQ(MaxJsonValuesFor(1000), 4096);
}

}  // namespace
}  // namespace cnp::couchdb
