// A CouchDB session's design-document cache is bounded by bytes (issue 7, item 3: "one Session
// caches any number of design documents (3,000 x 100 KB = 290 MB)"), holds every design
// document a realistic deployment teaches one process, and what it forgets stays correct for
// CouchDB.
#include "service/couchdb/design_doc_cache.h"
#include "service/couchdb/design_doc_budget.h"

#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/support/process_memory.h"
#include "service/couchdb/query_session.h"

namespace cnp::couchdb {
namespace {

using ::cnp::testing::FakeBlockingTaskRunner;

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A design document of about `bytes` bytes, all of them in function sections (a filter with
// a long name), so that a cache that keeps only function names still has to keep them.
std::string BigDesignDoc(int n, size_t bytes) {
  return absl::StrCat(R"({"_id":"_design/d)", n, R"(","language":"python","filters":{"f":"m.)",
                      std::string(bytes, 'x'), R"("},"views":{"v":{"map":"m.map"}}})");
}

TEST(DesignDocCacheTest, ThreeThousandLargeDesignDocumentsStayWithinTheBound) {
  DesignDocCache cache;
  ASSERT_EQ(cache.limits().max_bytes, size_t{64} << 20);
  const int64_t before = ::cnp::testing::OwnResidentBytes();
  for (int i = 0; i < 3000; ++i) {
    ASSERT_TRUE(cache.Put(absl::StrCat("_design/d", i), BigDesignDoc(i, 100 << 10)).ok());
  }
  const int64_t grown = ::cnp::testing::OwnResidentBytes() - before;
  // Unbounded, this held 3,000 x 100 KB = 293 MiB; bounded, 64 MiB and the allocator's slack.
  EXPECT_LT(grown, 96 << 20) << "the cache grew the process by " << (grown >> 20) << " MiB";
  EXPECT_LE(cache.bytes(), cache.limits().max_bytes);
  // The newest are kept, the oldest gone.
  EXPECT_TRUE(cache.Contains("_design/d2999"));
  EXPECT_FALSE(cache.Contains("_design/d0"));
}

TEST(DesignDocCacheTest, KeepsTheDocumentsInUseAndBoundsTheirCount) {
  DesignDocCache cache({.max_docs = 10, .max_bytes = 1 << 20});
  ASSERT_TRUE(cache.Put("_design/hot", BigDesignDoc(0, 10)).ok());
  for (int i = 1; i <= 100; ++i) {
    ASSERT_TRUE(cache.Put(absl::StrCat("_design/d", i), BigDesignDoc(i, 10)).ok());
    ASSERT_EQ(cache.FindFunction("_design/hot", {"views", "v", "map"}), "m.map") << i;
  }
  EXPECT_EQ(cache.size(), 10u);
  EXPECT_TRUE(cache.Contains("_design/d100"));
  EXPECT_FALSE(cache.Contains("_design/d1"));
}

TEST(DesignDocCacheTest, DataOutsideFunctionSectionsCostsNothing) {
  DesignDocCache cache;
  std::string ddoc = absl::StrCat(
      R"({"_id":"_design/a","views":{"v":{"map":"m.map"}},"_attachments":{"blob":{"data":")",
      std::string(1 << 20, 'A'), R"("}},"notes":")", std::string(1 << 20, 'n'), R"("})");
  ASSERT_TRUE(cache.Put("_design/a", ddoc).ok());
  EXPECT_LT(cache.bytes(), 1024u);
  EXPECT_EQ(cache.FindFunction("_design/a", {"views", "v", "map"}), "m.map");
}

TEST(DesignDocCacheTest, ADocumentAloneOverTheBoundIsRefusedAndTheRestKept) {
  DesignDocCache cache({.max_docs = 10, .max_bytes = 64 << 10});
  ASSERT_TRUE(cache.Put("_design/small", BigDesignDoc(0, 10)).ok());
  absl::Status refused = cache.Put("_design/huge", BigDesignDoc(1, 100 << 10));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("_design/huge"));
  EXPECT_FALSE(cache.Contains("_design/huge"));
  EXPECT_TRUE(cache.Contains("_design/small"));
}


// A per-user database's design document: one validate_doc_update, as CouchDB teaches it.
std::string ValidateDesignDoc(int n) {
  return absl::StrCat(R"({"_id":"_design/auth-)", n,
                      R"(","_rev":"1-8f3e1a6b2c0d4e5f","language":"python",)",
                      R"("validate_doc_update":"users.validate|3"})");
}

// What a session keeps for a database's validate_doc_update document is small: the default
// bound holds some 200,000 of them, and the process's memory follows what it holds.
TEST(DesignDocCacheTest, AHundredThousandValidateDocumentsFitInTheDefaultBound) {
  DesignDocCache cache;
  const int64_t before = ::cnp::testing::OwnResidentBytes();
  for (int i = 0; i < 100000; ++i) {
    ASSERT_TRUE(cache.Put(absl::StrCat("_design/auth-", i), ValidateDesignDoc(i)).ok());
  }
  const int64_t grown = ::cnp::testing::OwnResidentBytes() - before;
  EXPECT_EQ(cache.size(), 100000u);
  EXPECT_TRUE(cache.Contains("_design/auth-0"));
  EXPECT_LT(cache.bytes(), cache.limits().max_bytes / 2);
  // What is counted is close to what is held: a bound on the count is a bound on memory.
  EXPECT_LT(grown, static_cast<int64_t>(cache.bytes()) * 2)
      << "held " << (grown >> 20) << " MiB for " << (cache.bytes() >> 20) << " MiB counted";
}

// What CouchDB sees: a ddoc too big is an error for the call that taught it (CouchDB fails that
// request and stops the process), and a call on an evicted ddoc is couchjs's answer for an
// uncached one, after which the session ends, so CouchDB starts a fresh process and teaches it.
TEST(DesignDocCacheTest, CouchDbSeesAnErrorForATooBigDocumentAndAnUncachedOneOnceEvicted) {
  FakeBlockingTaskRunner runner;  // never asked: no line here needs a worker
  runner.BreakWith(absl::UnavailableError("no workers in this test"));
  QuerySession::Options options;
  options.design_docs.max_bytes = 1 << 20;
  QuerySession session(runner, options);
  const std::string huge = BigDesignDoc(0, 2 << 20);
  auto refused = session.Handle(absl::StrCat(R"(["ddoc","new","_design/huge",)", huge, "]"));
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT(refused->lines(0), StartsWith(R"(["error","query_protocol_error",)"));
  EXPECT_FALSE(refused->exit());

  for (int i = 0; i < 300; ++i) {  // 300 x 10 KiB: more than the session keeps
    auto taught = session.Handle(
        absl::StrCat(R"(["ddoc","new","_design/d)", i, R"(",)", BigDesignDoc(i, 10 << 10), "]"));
    ASSERT_TRUE(taught.has_value());
    ASSERT_EQ(taught->lines(0), "true");
  }
  auto evicted = session.Handle(R"(["ddoc","_design/d0",["filters","f"],[[{}],{}]])");
  ASSERT_TRUE(evicted.has_value());
  EXPECT_THAT(evicted->lines(0), HasSubstr("uncached design doc: _design/d0"));
  EXPECT_TRUE(evicted->exit());
}

// The server's streams together: each stream keeps up to 64 MiB, a connection 100 streams, a
// server many connections; a budget they share bounds them all (--max-session-design-memory).
TEST(DesignDocCacheTest, StreamsShareOneBudgetAndGiveItBackWhenTheyEnd) {
  DesignDocBudget budget(1 << 20);
  DesignDocCache::Limits limits;
  limits.shared = &budget;
  auto first = std::make_unique<DesignDocCache>(limits);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(first->Put(absl::StrCat("_design/a", i), BigDesignDoc(i, 100 << 10)).ok());
  }
  EXPECT_EQ(budget.used(), first->bytes());

  // Another stream, with nothing of its own to let go of: refused, naming the flag; the first
  // stream keeps what it has.
  DesignDocCache second(limits);
  absl::Status refused = second.Put("_design/b", BigDesignDoc(0, 400 << 10));
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("--max-session-design-memory"));
  EXPECT_EQ(first->size(), 8u);
  EXPECT_TRUE(second.Put("_design/small", BigDesignDoc(1, 10)).ok());

  // A stream whose own documents can make room lets its least recently used ones go first.
  ASSERT_TRUE(first->Contains("_design/a0"));  // now the most recently used
  ASSERT_TRUE(first->Put("_design/a8", BigDesignDoc(8, 300 << 10)).ok());
  EXPECT_TRUE(first->Contains("_design/a0"));
  EXPECT_FALSE(first->Contains("_design/a1"));  // one was enough
  EXPECT_TRUE(first->Contains("_design/a2"));
  EXPECT_LE(budget.used(), budget.limit());
  EXPECT_EQ(budget.used(), first->bytes() + second.bytes());

  // A stream that ends gives its bytes back.
  first.reset();
  EXPECT_EQ(budget.used(), second.bytes());
  EXPECT_TRUE(second.Put("_design/b", BigDesignDoc(0, 400 << 10)).ok());
}

}  // namespace
}  // namespace cnp::couchdb
