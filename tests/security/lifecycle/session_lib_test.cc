// A CouchDB session does not keep add_lib's object (a security review): named functions never
// read it, yet each session kept a copy until its next reset, so a peer's
// ["add_lib",<a 50 MB object>] on each of five Session streams held 490 MiB of cnp-server for
// as long as the streams stayed open (up to --max-call-bytes per stream, 100 streams a
// connection, none of it counted by --max-grpc-memory). add_lib is still answered `true`.
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "service/couchdb/query_session.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/support/process_memory.h"

namespace cnp::couchdb {
namespace {

using ::cnp::testing::FakeBlockingTaskRunner;


TEST(SessionLibTest, AddLibIsAnsweredAndItsObjectNotKept) {
  FakeBlockingTaskRunner runner;  // never asked: no line here needs a worker
  runner.BreakWith(absl::UnavailableError("no workers in this test"));
  QuerySession first(runner);
  QuerySession second(runner);
  std::string line =
      absl::StrCat(R"(["add_lib",{"views":{"lib":")", std::string(64 << 20, 'x'), R"("}}])");
  const int64_t before = ::cnp::testing::OwnResidentBytes();
  for (QuerySession* session : {&first, &second}) {
    auto answer = session->Handle(line);
    ASSERT_TRUE(answer.has_value());
    ASSERT_EQ(answer->lines_size(), 1);
    EXPECT_EQ(answer->lines(0), "true");
    EXPECT_TRUE(answer->accepted()) << "the adapter replays it after a failover";
  }
  const int64_t grown = ::cnp::testing::OwnResidentBytes() - before;
  // Kept, the two sessions held 128 MiB.
  EXPECT_LT(grown, 16 << 20) << "the sessions grew the process by " << (grown >> 20) << " MiB";
}

}  // namespace
}  // namespace cnp::couchdb
