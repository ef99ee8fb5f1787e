// A session's design documents: a number past a double's range anywhere in one (CouchDB stores
// it) does not keep its functions from being learnt, and what a document costs while it is
// read is what is kept of it, not its size.
#include "service/couchdb/design_doc_cache.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

// Every allocation of this test binary, counted: what reading a design document allocates.
// malloc itself is counted, not operator new: rapidjson's allocators call malloc and realloc.
namespace {
std::atomic<size_t> allocated_bytes{0};
}  // namespace

extern "C" {
void* __libc_malloc(size_t size);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* p, size_t size);

void* malloc(size_t size) {
  allocated_bytes.fetch_add(size, std::memory_order_relaxed);
  return __libc_malloc(size);
}
void* calloc(size_t count, size_t size) {
  allocated_bytes.fetch_add(count * size, std::memory_order_relaxed);
  return __libc_calloc(count, size);
}
void* realloc(void* p, size_t size) {
  allocated_bytes.fetch_add(size, std::memory_order_relaxed);
  return __libc_realloc(p, size);
}
}  // extern "C"

namespace cnp::couchdb {
namespace {

// Bytes allocated while `run` ran.
template <typename F>
size_t AllocatedBy(F run) {
  const size_t before = allocated_bytes.load();
  run();
  return allocated_bytes.load() - before;
}

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

// Data in a design document is read past, never built into a tree: a 60 MB document holding an
// array of 30 million zeros beside its view took 1.08 GB of a server's memory (16 bytes a
// value) before its one function name was kept.
TEST(DesignDocCacheTest, DataCostsNoMemoryWhileItIsRead) {
  DesignDocCache cache;
  std::string doc = R"({"views":{"v":{"map":"myviews.townmap"}},"x":[0)";
  for (int i = 0; i < 1'000'000; ++i) doc += ",0";
  doc += "]}";
  absl::Status put;
  const size_t allocated = AllocatedBy([&] { put = cache.Put("_design/x", doc); });
  ASSERT_TRUE(put.ok()) << put;
  EXPECT_EQ(cache.FindFunction("_design/x", {"views", "v", "map"}), "myviews.townmap");
  // The id, a path and a name, and the reader's small stack: kilobytes for a 2 MB document.
  EXPECT_LT(allocated, size_t{64} << 10) << allocated << " bytes allocated for " << doc.size();
}

// Functions past the bound are not read at all: the document is refused as soon as they pass
// it (a 64 MB document of 5 million function names took 797 MB before it was refused), and the
// cache keeps what it had.
TEST(DesignDocCacheTest, ADocumentIsRefusedOnceItsFunctionsPassTheBoundNotOnceReadWhole) {
  DesignDocCache cache({.max_bytes = 64 << 10});
  ASSERT_TRUE(cache.Put("_design/kept", R"({"filters":{"f":"m.f"}})").ok());
  const size_t kept_bytes = cache.bytes();
  std::string doc = R"({"views":{"0":"b")";
  for (int i = 1; i < 100'000; ++i) absl::StrAppend(&doc, R"(,")", i, R"(":"b")");
  const std::string whole = doc + "}}";
  absl::Status put;
  const size_t allocated = AllocatedBy([&] { put = cache.Put("_design/big", whole); });
  EXPECT_TRUE(absl::IsResourceExhausted(put)) << put;
  EXPECT_NE(std::string(put.message()).find("_design/big"), std::string::npos) << put;
  EXPECT_NE(std::string(put.message()).find("names more than 65536 bytes of functions"),
            std::string::npos)
      << put;
  EXPECT_FALSE(cache.Contains("_design/big"));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.bytes(), kept_bytes);
  // What fits the bound (about 500 names here), not 100,000 names.
  EXPECT_LT(allocated, size_t{256} << 10) << allocated << " bytes allocated for " << doc.size();
  // Nothing past the bound is read: the document's broken end is never reached.
  EXPECT_TRUE(absl::IsResourceExhausted(cache.Put("_design/big", doc + ",")));
}

// The paths CouchDB calls (docs: couchdb-query-server.md; fixtures of CouchDB 3.4.3) are all
// found, and strings deeper than a function's path, or outside the function sections, are not
// functions.
TEST(DesignDocCacheTest, KeepsTheStringsAtTheDepthsOfCouchDbsFunctionPaths) {
  DesignDocCache cache;
  ASSERT_TRUE(cache
                  .Put("_design/a", R"({"_id":"_design/a","language":"python",
                       "validate_doc_update":"m.vdu","filters":{"by_town":"m.filter"},
                       "views":{"oslo":{"map":"m.map","reduce":"m.red","x":{"deep":"m.no"}},
                                "lib":{"a":{"b":"m.lib"}}},
                       "shows":{"hello":"m.show"},"lists":{"rows":"m.list"},
                       "updates":{"bump":"m.update"},"rewrites":"m.rewrite",
                       "options":{"o":"m.not"},"views2":{"v":"m.not"},
                       "_attachments":{"shows":{"x":"m.not"}}})")
                  .ok());
  EXPECT_EQ(cache.FindFunction("_design/a", {"validate_doc_update"}), "m.vdu");
  EXPECT_EQ(cache.FindFunction("_design/a", {"filters", "by_town"}), "m.filter");
  EXPECT_EQ(cache.FindFunction("_design/a", {"views", "oslo", "map"}), "m.map");
  EXPECT_EQ(cache.FindFunction("_design/a", {"views", "oslo", "reduce"}), "m.red");
  EXPECT_EQ(cache.FindFunction("_design/a", {"shows", "hello"}), "m.show");
  EXPECT_EQ(cache.FindFunction("_design/a", {"lists", "rows"}), "m.list");
  EXPECT_EQ(cache.FindFunction("_design/a", {"updates", "bump"}), "m.update");
  EXPECT_EQ(cache.FindFunction("_design/a", {"rewrites"}), "m.rewrite");
  EXPECT_EQ(cache.FindFunction("_design/a", {"options", "o"}), std::nullopt);
  EXPECT_EQ(cache.FindFunction("_design/a", {"views", "lib", "a"}), std::nullopt);
  EXPECT_EQ(cache.FindFunction("_design/a", {"views", "oslo", "x"}), std::nullopt);
  EXPECT_EQ(cache.FindFunction("_design/a", {"language"}), std::nullopt);
  // A key given twice: the first, as before.
  ASSERT_TRUE(cache.Put("_design/b", R"({"shows":{"s":"m.first"},"shows":{"s":"m.second"}})")
                  .ok());
  EXPECT_EQ(cache.FindFunction("_design/b", {"shows", "s"}), "m.first");
  // A number past a double's range where a function may stand is no function.
  ASSERT_TRUE(cache.Put("_design/c", R"({"shows":{"n":)" + std::string(401, '9') +
                                         R"(,"s":"m.s"},"validate_doc_update":"m.v"})")
                  .ok());
  EXPECT_EQ(cache.FindFunction("_design/c", {"shows", "n"}), std::nullopt);
  EXPECT_EQ(cache.FindFunction("_design/c", {"shows", "s"}), "m.s");
  EXPECT_EQ(cache.FindFunction("_design/c", {"validate_doc_update"}), "m.v");
  // Not an object.
  EXPECT_TRUE(absl::IsInvalidArgument(cache.Put("_design/d", "[1]")));
  EXPECT_TRUE(absl::IsInvalidArgument(cache.Put("_design/d", "\"views\"")));
}

}  // namespace
}  // namespace cnp::couchdb
