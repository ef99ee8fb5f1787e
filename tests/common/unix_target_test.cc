// unix: targets read as gRPC 1.51 reads them (common/unix_target.h): the two spellings it takes
// give the path it connects to, and every target it would read as something other than one file
// (or not connect to at all) is refused, not guessed at.
#include "common/unix_target.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace cnp {
namespace {

TEST(UnixSocketPath, TheSpellingsGrpcTakesGiveThePathItConnectsTo) {
  EXPECT_EQ(UnixSocketPath("unix:/tmp/cnp-0/cnp.sock").value(), "/tmp/cnp-0/cnp.sock");
  EXPECT_EQ(UnixSocketPath("unix:///run/cnp.sock").value(), "/run/cnp.sock");
  EXPECT_EQ(UnixSocketPath("unix:cnp.sock").value(), "cnp.sock");
  EXPECT_EQ(UnixSocketPath("unix:run/cnp.sock").value(), "run/cnp.sock");
  EXPECT_EQ(UnixSocketPath("unix:/tmp/a b/cnp.sock").value(), "/tmp/a b/cnp.sock");
  EXPECT_EQ(UnixSocketPath("unix:/tmp//x.sock").value(), "/tmp//x.sock");
  EXPECT_TRUE(IsUnixTarget("unix:/tmp/x.sock"));
  EXPECT_TRUE(IsUnixTarget("unix://host/x.sock"));  // unix:, if not one gRPC connects to
}

// Each was read by hand before as the text after "unix:" or "unix://", a file other than the one
// gRPC connects to (or gRPC refuses it): unix://tmp/x.sock was "tmp/x.sock" to the socket
// checks and the server's bind, and an authority "tmp" to gRPC.
TEST(UnixSocketPath, TargetsGrpcReadsOtherwiseAreRefused) {
  for (const char* target :
       {"unix://tmp/x.sock", "unix://localhost/tmp/x.sock", "unix:////tmp/x.sock",
        "unix://///x.sock", "unix:/tmp/a%20b.sock", "unix:/tmp/x.sock?mode=1",
        "unix:/tmp/x.sock#f", "unix:/tmp/a.sock,/tmp/b.sock", "unix:", "unix://", "unix:?x"}) {
    absl::StatusOr<std::string> path = UnixSocketPath(target);
    EXPECT_TRUE(absl::IsInvalidArgument(path.status())) << target << " -> " << path.value_or("");
    EXPECT_TRUE(absl::StrContains(path.status().message(), target)) << path.status();
    EXPECT_TRUE(absl::StrContains(path.status().message(), "unix:/PATH")) << path.status();
    EXPECT_TRUE(IsUnixTarget(target)) << target;
  }
}

TEST(UnixSocketPath, OtherSchemesAreNotUnix) {
  for (const char* target : {"127.0.0.1:7070", "unix-abstract:cnp", "UNIX:/tmp/x.sock",
                             " unix:/tmp/x.sock", "dns:///unix:80", ""}) {
    EXPECT_FALSE(IsUnixTarget(target)) << target;
    EXPECT_TRUE(absl::IsInvalidArgument(UnixSocketPath(target).status())) << target;
  }
}

}  // namespace
}  // namespace cnp
