// A CouchDB session's map functions are bounded (a security review): each add_fun a peer sends
// on a Session stream was kept until the next reset, with no bound, so one stream sending
// `["add_fun","m.f|1<500 spaces>"]` (a 512-byte name the worker resolves: int() ignores the
// spaces) made cnp-server hold 30 MB more every 18 s for as long as it liked, and sent all of
// them to a worker with every map_doc. Past the bound add_fun is answered with an error line,
// the session goes on, and its functions still map.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/couchdb/design_doc_budget.h"
#include "service/couchdb/query_session.h"
#include "tests/support/process_memory.h"

namespace cnp::couchdb {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A worker that resolves every name and maps every document to one row per function: what the
// server's pool answers for a function that exists.
class ResolvingWorkers : public pool::TaskRunner {
 public:
  absl::StatusOr<pool::Reply> Run(const pool::Task& task, absl::Time) override {
    pool::Reply reply;
    if (task.has_resolve()) {
      for (const std::string& name : task.resolve().functions()) {
        v1::ResolvedFunction* resolved = reply.mutable_resolve()->add_functions();
        resolved->set_function(name);
        resolved->set_versioned_name(name);
      }
    } else if (task.has_map()) {
      mapped_functions = task.map().functions_size();
      std::string rows = "[";
      for (int i = 0; i < task.map().functions_size(); ++i) absl::StrAppend(&rows, i ? ",[]" : "[]");
      reply.mutable_map()->add_results()->set_rows(rows + "]");
    }
    return reply;
  }
  absl::StatusOr<std::unique_ptr<pool::WorkerLease>> Lease(absl::Time) override {
    return absl::UnavailableError("no leases in this test");
  }
  int mapped_functions = 0;
};

// The bound: as many names as a worker's name cache holds (function_registry.cc), more than
// any design document's views.
constexpr int kBound = 4096;

TEST(SessionFunctionsTest, AddFunPastTheBoundIsRefusedAndMemoryStaysBounded) {
  ResolvingWorkers workers;
  QuerySession session(workers);
  const std::string name = absl::StrCat("myviews.vfn|1", std::string(499, ' '));
  const std::string add_fun = absl::StrCat(R"(["add_fun",")", name, R"("])");
  const int64_t before = ::cnp::testing::OwnResidentBytes();
  int accepted = 0;
  std::string refusal;
  for (int i = 0; i < 100000; ++i) {
    auto answer = session.Handle(add_fun);
    ASSERT_TRUE(answer.has_value());
    ASSERT_FALSE(answer->exit()) << "the session must go on";
    if (answer->lines(0) == "true") {
      ++accepted;
    } else if (refusal.empty()) {
      refusal = answer->lines(0);
    }
  }
  const int64_t grown = ::cnp::testing::OwnResidentBytes() - before;
  EXPECT_EQ(accepted, kBound);
  EXPECT_THAT(refusal, StartsWith(R"(["error","too_many_functions",)"));
  EXPECT_THAT(refusal, HasSubstr("4096 map functions"));
  // Unbounded, 100,000 names of 512 bytes held some 60 MiB.
  EXPECT_LT(grown, 16 << 20) << "the session grew the process by " << (grown >> 20) << " MiB";

  // The functions it holds still map, and a reset makes room again.
  auto mapped = session.Handle(R"(["map_doc",{"_id":"a"}])");
  ASSERT_TRUE(mapped.has_value());
  EXPECT_EQ(workers.mapped_functions, kBound);
  EXPECT_FALSE(session.Handle(R"(["reset",{}])").has_value());
  auto again = session.Handle(add_fun);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->lines(0), "true");
}

// Found by a memory probe: 200 streams of add_fun lines (each under the 16 KiB below which a
// stream message is not counted) held 311 MB, 1.4 KB a name, counted nowhere. A stream's names
// are now charged to the budget its design documents share with every stream
// (--max-session-design-memory), and given back by a reset or the stream's end.
TEST(SessionFunctionsTest, FunctionNamesShareTheStreamsDesignBudget) {
  ResolvingWorkers workers;
  DesignDocBudget budget(64 << 10);
  QuerySession::Options options;
  options.design_docs.shared = &budget;
  auto first = std::make_unique<QuerySession>(workers, options);
  QuerySession second(workers, options);
  const std::string add_fun =
      absl::StrCat(R"(["add_fun","myviews.vfn|1)", std::string(400, ' '), R"("])");
  int accepted = 0;
  std::string refusal;
  for (int i = 0; i < 1000 && refusal.empty(); ++i) {
    auto answer = first->Handle(add_fun);
    ASSERT_TRUE(answer.has_value());
    ASSERT_FALSE(answer->exit()) << "the session must go on";
    if (answer->lines(0) == "true") {
      ++accepted;
    } else {
      refusal = answer->lines(0);
    }
  }
  EXPECT_GT(accepted, 100);
  EXPECT_LT(accepted, 200);  // 64 KiB of 477-byte names and their keep
  EXPECT_THAT(refusal, HasSubstr("--max-session-design-memory"));
  EXPECT_LE(budget.used(), budget.limit());
  // The other stream shares the budget: nothing left for it either.
  auto refused = second.Handle(add_fun);
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT(refused->lines(0), HasSubstr("--max-session-design-memory"));
  // The first stream's functions still map; a reset gives its names back, and so does its end.
  auto mapped = first->Handle(R"(["map_doc",{"_id":"a"}])");
  ASSERT_TRUE(mapped.has_value());
  EXPECT_EQ(workers.mapped_functions, accepted);
  EXPECT_FALSE(first->Handle(R"(["reset",{}])").has_value());
  EXPECT_EQ(budget.used(), 0u);
  auto taken = second.Handle(add_fun);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->lines(0), "true");
  ASSERT_EQ(first->Handle(add_fun)->lines(0), "true");
  first.reset();
  EXPECT_GT(budget.used(), 0u);
  EXPECT_LT(budget.used(), 1024u);  // the second stream's one name
}

}  // namespace
}  // namespace cnp::couchdb
