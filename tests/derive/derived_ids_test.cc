// The ids of derived documents: deterministic, and a source document's rows share a prefix.
#include "client/derive/derived_ids.h"

#include "gtest/gtest.h"

namespace cnp::derive {
namespace {

TEST(DerivedIdsTest, ShaHexIsSha256) {
  // FIPS 180-2's example.
  EXPECT_EQ(ShaHex("abc", 64), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ShaHex("abc", 8), "ba7816bf");
}

TEST(DerivedIdsTest, MapRowsOfOneSourceDocumentShareItsPrefix) {
  std::string id = MapRowId("orgs", "o1", "\"Oslo\"", 2);
  EXPECT_EQ(id, MapRowId("orgs", "o1", "\"Oslo\"", 2));
  EXPECT_EQ(id.rfind(MapRowPrefix("orgs", "o1"), 0), 0u);
  EXPECT_EQ(id.substr(id.size() - 2), ":2");
  EXPECT_NE(id, MapRowId("orgs", "o1", "\"Bergen\"", 2));
  EXPECT_NE(id, MapRowId("orgs", "o2", "\"Oslo\"", 2));
  // A source id that starts like another's does not share its prefix.
  EXPECT_NE(MapRowId("orgs", "o1:x", "\"Oslo\"", 0).rfind(MapRowPrefix("orgs", "o1"), 0), 0u);
}

TEST(DerivedIdsTest, ReduceRowsAreKeyedByTheirMapTargetAndKey) {
  EXPECT_EQ(ReduceRowId("m", "[1,2]"), "m:" + ShaHex("[1,2]", 32));
  EXPECT_NE(ReduceRowId("m", "[1,2]"), ReduceRowId("m", "[1,3]"));
}

}  // namespace
}  // namespace cnp::derive
