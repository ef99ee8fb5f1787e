// A session's design documents: a number past a double's range anywhere in one (CouchDB stores
// it) does not keep its functions from being learnt.
#include "service/couchdb/design_doc_cache.h"

#include <string>

#include "gtest/gtest.h"

namespace cnp::couchdb {
namespace {

TEST(DesignDocCacheTest, ANumberPastADoublesRangeIsNoObstacle) {
  DesignDocCache cache;
  const std::string huge(401, '9');
  const std::string doc = R"({"_id":"_design/x","options":{"n":)" + huge +
                          R"(,"e":1e400},"validate_doc_update":"m.check|2","shows":{"s":"m.show"}})";
  ASSERT_TRUE(cache.Put("_design/x", doc).ok()) << cache.Put("_design/x", doc);
  EXPECT_EQ(cache.FindFunction("_design/x", {"validate_doc_update"}), "m.check|2");
  EXPECT_EQ(cache.FindFunction("_design/x", {"shows", "s"}), "m.show");
}

TEST(DesignDocCacheTest, BrokenJsonIsStillRefused) {
  DesignDocCache cache;
  const std::string huge(401, '9');
  EXPECT_FALSE(cache.Put("_design/x", R"({"n":)" + huge + R"(,"v":})").ok());
  EXPECT_FALSE(cache.Put("_design/y", R"({"n":1,)").ok());
}

// Its function names go into the worker's tasks as protobuf strings, which must be UTF-8.
TEST(DesignDocCacheTest, ADocumentThatIsNotUtf8IsRefused) {
  DesignDocCache cache;
  absl::Status status = cache.Put("_design/x", "{\"validate_doc_update\":\"m.\xff\"}");
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_NE(std::string(status.message()).find("is not valid JSON"), std::string::npos) << status;
}

}  // namespace
}  // namespace cnp::couchdb
