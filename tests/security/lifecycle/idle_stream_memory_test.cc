// A Session stream left idle after one big line does not keep that line's memory (a security
// review): cnp-server kept each stream's largest request (the SessionInput it parses into is
// reused for the next one) and its largest map_doc (the map task's document slot) for as long as
// the stream stayed open, so eight streams each sending one 40 MB add_lib and one 40 MB map_doc,
// then idling, held some 640 MiB that --max-grpc-memory did not count (up to 2 x
// --max-call-bytes per stream, 100 streams a connection). A stream that sends big lines all
// along still reuses its buffers; one that goes quiet gives them back.
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/process_memory.h"
#include "tests/support/server_process.h"
#include "tests/support/session_stream.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;
using ::cnp::testing::SessionStream;
using ::testing::StartsWith;

constexpr int kStreams = 8;
constexpr size_t kLineBytes = 40 << 20;


TEST(IdleStreamMemoryTest, StreamsIdleAfterABigLineDoNotHoldIt) {
  auto server = ServerProcess::Start(
      {"--python-path=" + testing::Runfile("tests/functions/server"), "--workers=2"});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string lib =
      absl::StrCat(R"(["add_lib",{"views":{"lib":")", std::string(kLineBytes, 'x'), R"("}}])");
  const std::string doc =
      absl::StrCat(R"(["map_doc",{"_id":"big","blob":")", std::string(kLineBytes, 'x'), R"("}])");
  std::vector<std::unique_ptr<SessionStream>> streams;
  // Warm, with big lines too: the workers have imported the module, and what the server keeps
  // per worker and per process for a big message (not per stream) is counted in `before`.
  for (int i = 0; i < 2; ++i) {
    SessionStream warm(**server);
    ASSERT_EQ(warm.Ask(R"(["add_fun","svc_fns.size_of"])"), std::vector<std::string>{"true"});
    ASSERT_EQ(warm.Ask(lib), std::vector<std::string>{"true"});
    ASSERT_TRUE(warm.Ask(doc).has_value());
  }
  const int64_t before = ::cnp::testing::ProcStatusBytes((*server)->pid(), "VmRSS");
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(std::make_unique<SessionStream>(**server));
    SessionStream& stream = *streams.back();
    ASSERT_EQ(stream.Ask(R"(["add_fun","svc_fns.size_of"])"), std::vector<std::string>{"true"});
    ASSERT_EQ(stream.Ask(lib), std::vector<std::string>{"true"}) << i;
    auto mapped = stream.Ask(doc);
    ASSERT_TRUE(mapped.has_value()) << i;
    ASSERT_EQ(mapped->size(), 1u);
    EXPECT_THAT(mapped->front(), StartsWith(R"([[["big",)")) << i;
  }
  // Every stream is open and idle now.
  const int64_t idle = ::cnp::testing::ProcStatusBytes((*server)->pid(), "VmRSS");
  std::cerr << "server RSS before " << (before >> 20) << " MiB, with " << kStreams
            << " idle streams " << (idle >> 20) << " MiB\n";
  // Kept, each stream held its 40 MB request and its 40 MB document: 640 MiB. The bound leaves
  // room for what the allocator keeps of the transfers (20 to 40 MiB measured).
  EXPECT_LT(idle - before, 96 << 20) << "before " << before << ", idle " << idle;
  // The streams still serve.
  for (auto& stream : streams) {
    auto small = stream->Ask(R"(["map_doc",{"_id":"s","blob":""}])");
    ASSERT_TRUE(small.has_value());
    EXPECT_THAT(small->front(), StartsWith(R"([[["s",)"));
  }
}

}  // namespace
}  // namespace cnp
