// What --target may name: one server as it is, a list of replicas as gRPC's ipv4:/ipv6: list,
// and a list gRPC could not take refused with what to write instead.
#include "client/lib/channel_target.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/lib/channel_security.h"
#include "client/lib/service_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::client {
namespace {

TEST(ChannelTargetUri, OneServerIsPassedAsItIs) {
  for (const char* target : {"unix:/run/cnp/cnp.sock", "127.0.0.1:7070", "cnp.internal:7070",
                             "dns:///cnp.internal:7070", "ipv4:10.0.0.5:1,10.0.0.6:1",
                             "[::1]:7070"}) {
    absl::StatusOr<std::string> uri = ChannelTargetUri(target);
    ASSERT_TRUE(uri.ok()) << target << ": " << uri.status();
    EXPECT_EQ(*uri, target);
  }
}

// What the socket-owner checks cannot vouch for is refused: an abstract name anyone may bind
// first, and a unix target with spaces around it (the checks would not see it as unix:).
TEST(ChannelTargetUri, AbstractSocketsAndSpacedUnixTargetsAreRefused) {
  EXPECT_TRUE(absl::IsInvalidArgument(ChannelTargetUri("unix-abstract:cnp").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ChannelTargetUri(" unix:/tmp/x/cnp.sock").status()));
  EXPECT_FALSE(TargetStaysOnThisHost("unix-abstract:cnp"));
  EXPECT_TRUE(ChannelTargetUri("unix:/tmp/x/cnp.sock").ok());
}

// A socket's path without unix: was read as a host name: refused in plaintext with advice to
// add --insecure, after which "no cnp-server answers" advised a --listen the server refuses
// (found by an operator's trial). It says how to write it, before any security check.
TEST(ChannelTargetUri, AFilePathIsToldToBeWrittenWithUnix) {
  for (const char* path : {"/run/cnp/cnp.sock", "./cnp.sock", "../run/cnp.sock"}) {
    absl::StatusOr<std::string> uri = ChannelTargetUri(path);
    EXPECT_TRUE(absl::IsInvalidArgument(uri.status())) << path;
    EXPECT_EQ(uri.status().message(),
              absl::StrCat("the target ", path, " (--target or CNP_TARGET) is a file path; a "
                           "unix socket is named unix:PATH (here unix:", path, ")"));
    absl::StatusOr<LoadedChannelSecurity> security =
        LoadChannelSecurity(ChannelSecurity{.insecure = true}, path);
    EXPECT_EQ(security.status().message(), uri.status().message());
  }
  EXPECT_THAT(std::string(ChannelTargetUri("~/cnp.sock").status().message()),
              ::testing::HasSubstr("with a ~ nothing expands; a unix socket is named unix:PATH "
                                   "with the full path (unix:/home/USER/cnp.sock)"));
}

// CouchDB's URL where cnp-server's address belongs: said so, not left to gRPC (which took
// "http" for a DNS name, and the command then advised `cnp-server --listen=http://...`).
TEST(ChannelTargetUri, AUrlIsRefusedAsNoServersAddress) {
  for (const char* url : {"http://localhost:5984", "HTTPS://couch:6984/db"}) {
    absl::StatusOr<std::string> uri = ChannelTargetUri(url);
    EXPECT_TRUE(absl::IsInvalidArgument(uri.status())) << url;
    EXPECT_TRUE(absl::StrContains(uri.status().message(),
                                  "is a URL; cnp-server's address is unix:PATH or HOST:PORT"))
        << uri.status();
  }
  // CouchDB's URL comes with its password; the message shows it without.
  absl::StatusOr<std::string> uri = ChannelTargetUri("http://admin:s3cret@db:5984");
  EXPECT_TRUE(absl::StrContains(uri.status().message(), "http://db:5984")) << uri.status();
  EXPECT_FALSE(absl::StrContains(uri.status().message(), "s3cret")) << uri.status();
}

TEST(ChannelTargetUri, ListOfAddressesBecomesAnAddressList) {
  EXPECT_EQ(*ChannelTargetUri("127.0.0.1:7071,127.0.0.1:7072"), "ipv4:127.0.0.1:7071,127.0.0.1:7072");
  EXPECT_EQ(*ChannelTargetUri(" 10.0.0.5:7070, 10.0.0.6:7070 "), "ipv4:10.0.0.5:7070,10.0.0.6:7070");
  EXPECT_EQ(*ChannelTargetUri("[::1]:7071,[fd00::6]:7072"), "ipv6:[::1]:7071,[fd00::6]:7072");
}

TEST(ChannelTargetUri, RotatesAListToStartWhereAsked) {
  EXPECT_EQ(*ChannelTargetUri("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 1),
            "ipv4:127.0.0.1:2,127.0.0.1:3,127.0.0.1:1");
  EXPECT_EQ(*ChannelTargetUri("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 5),
            "ipv4:127.0.0.1:3,127.0.0.1:1,127.0.0.1:2");
  EXPECT_EQ(*ChannelTargetUri("127.0.0.1:1", 7), "127.0.0.1:1");
}

TEST(ChannelTargetUri, ListsGrpcCannotTakeAreRefusedWithAdvice) {
  absl::StatusOr<std::string> names = ChannelTargetUri("a.example:7070,b.example:7070");
  ASSERT_FALSE(names.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(names.status()));
  EXPECT_TRUE(absl::StrContains(names.status().message(), "dns:///")) << names.status();

  absl::StatusOr<std::string> mixed = ChannelTargetUri("127.0.0.1:7071,[::1]:7072");
  ASSERT_FALSE(mixed.ok());
  EXPECT_TRUE(absl::StrContains(mixed.status().message(), "mixes IPv4 and IPv6")) << mixed.status();

  EXPECT_FALSE(ChannelTargetUri("127.0.0.1,127.0.0.2:7070").ok());      // no port
  EXPECT_FALSE(ChannelTargetUri("127.0.0.1:0,127.0.0.2:7070").ok());    // port 0
  EXPECT_FALSE(ChannelTargetUri("unix:/a.sock,unix:/b.sock").ok());
  EXPECT_FALSE(ChannelTargetUri(",").ok());
}

// cnp-server's rule for a plaintext listener (127.0.0.0/8, ::1, ::ffff:127.x), and localhost;
// never a name that DNS could point anywhere.
TEST(TargetStaysOnThisHost, LoopbackAddressesLocalhostAndUnixSocketsOnly) {
  for (const char* target :
       {"unix:/run/cnp/cnp.sock", "unix:///tmp/cnp-0/cnp.sock", "127.0.0.1:7070", "127.8.9.1:1",
        "[::1]:7070", "[::ffff:127.0.0.1]:7070", "localhost:7070", "LOCALHOST:7070",
        "127.0.0.1:7071,127.0.0.2:7072", "ipv4:127.0.0.1:1,127.0.0.2:2", "ipv6:[::1]:1",
        "dns:///localhost:7070", "dns://10.0.0.1:53/localhost:7070", " 127.0.0.1:7070 "}) {
    EXPECT_TRUE(TargetStaysOnThisHost(target)) << target;
  }
  for (const char* target :
       {"10.0.0.5:7070", "192.0.2.1:7070", "[fd00::5]:7070", "[::ffff:10.0.0.5]:7070",
        "0.0.0.0:7070", "cnp.internal:7070", "localhost.example.com:7070",
        "127.0.0.1:7071,10.0.0.6:7072", "ipv4:127.0.0.1:1,10.0.0.6:2", "dns:///cnp.internal:7070",
        "dns://127.0.0.1:53/cnp.internal:7070", "xds:///cnp", ""}) {
    EXPECT_FALSE(TargetStaysOnThisHost(target)) << target;
  }
}

TEST(ClientServiceConfig, RetriesOnlyTheIdempotentCallsOnUnavailable) {
  const std::string config = ClientServiceConfig(RetryPolicy::kIdempotentCalls);
  EXPECT_TRUE(absl::StrContains(config, R"({"round_robin":{}})"));
  for (const char* method :
       {"Map", "MapStream", "Reduce", "Validate", "CallDesignFunction", "Resolve"}) {
    EXPECT_TRUE(absl::StrContains(config, absl::StrCat(R"("method":")", method, R"(")")))
        << method;
  }
  EXPECT_FALSE(absl::StrContains(config, "Upload"));
  EXPECT_FALSE(absl::StrContains(config, "Session"));
  EXPECT_TRUE(absl::StrContains(config, R"("retryableStatusCodes":["UNAVAILABLE","CANCELLED"])"));

  const std::string none = ClientServiceConfig(RetryPolicy::kNone);
  EXPECT_TRUE(absl::StrContains(none, "round_robin"));
  EXPECT_FALSE(absl::StrContains(none, "retryPolicy"));
}

// Replicas' health is watched (a draining one gets no new calls); one server's is not (its
// calls are served while it drains, as there is nowhere else to go).
TEST(ClientServiceConfig, WatchesHealthOnlyForReplicas) {
  for (const char* target : {"127.0.0.1:7071,127.0.0.1:7072", "ipv4:127.0.0.1:1,10.0.0.6:2",
                             "dns:///cnp.internal:7070"}) {
    EXPECT_TRUE(NamesReplicas(target)) << target;
  }
  for (const char* target : {"unix:/run/cnp/cnp.sock", "127.0.0.1:7070", "cnp.internal:7070"}) {
    EXPECT_FALSE(NamesReplicas(target)) << target;
  }
  EXPECT_TRUE(absl::StrContains(ClientServiceConfig(RetryPolicy::kIdempotentCalls, true),
                                R"("healthCheckConfig":{"serviceName":""})"));
  EXPECT_FALSE(absl::StrContains(ClientServiceConfig(RetryPolicy::kIdempotentCalls, false),
                                 "healthCheckConfig"));
}

}  // namespace
}  // namespace cnp::client
