// A client never sends a secret (the bearer token, Upload's CouchDB credentials) in plaintext
// off this host: the review's LOW finding, `--target=10.0.0.5:7070 --auth-token-file=...`
// without --tls sent the token to the network in the clear. Nothing is connected to here: the
// refusal comes before any connection.
#include "client/lib/channel_security.h"

#include <stdio.h>
#include <sys/stat.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/lib/token_file.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"

namespace cnp::client {
namespace {

using ::cnp::testing::MakeTempDir;
using ::cnp::testing::WriteFile;

std::string TokenFile() {
  const std::string path = MakeTempDir("token") + "/token";
  WriteFile(path, "s3cret-token\n", 0600);
  return path;
}

TEST(ChannelSecurity, ATokenIsRefusedInPlaintextOffThisHost) {
  const ChannelSecurity security{.auth_token_file = TokenFile()};
  for (const char* target : {"10.0.0.5:7070", "cnp.internal:7070", "10.0.0.5:1,10.0.0.6:1"}) {
    absl::StatusOr<LoadedChannelSecurity> loaded = LoadChannelSecurity(security, target);
    ASSERT_FALSE(loaded.ok()) << target;
    EXPECT_TRUE(absl::IsInvalidArgument(loaded.status())) << loaded.status();
    EXPECT_TRUE(absl::StrContains(loaded.status().message(), "--tls")) << loaded.status();
    EXPECT_TRUE(absl::StrContains(loaded.status().message(), target)) << loaded.status();
    EXPECT_FALSE(absl::StrContains(loaded.status().message(), "s3cret")) << loaded.status();
  }
}

// A token rotated as `mv token.new token` (a 0644 file) and then `chmod 600 token`: the move
// is read and refused (the file is unsafe), and the chmod changes nothing the file was told
// apart by but its ctime, so the new token was never read and the client kept the old one for
// good (a review).
TEST(ChannelSecurity, ATokenFileMadeSafeAfterItsRotationIsReadThen) {
  const std::string path = TokenFile();
  absl::StatusOr<std::unique_ptr<client::TokenFile>> token = client::TokenFile::Open(path);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ((*token)->Authorization(), "Bearer s3cret-token");
  WriteFile(path + ".new", "rotated-token-0123456789\n", 0644);
  ASSERT_EQ(::rename((path + ".new").c_str(), path.c_str()), 0);
  EXPECT_EQ((*token)->Authorization(), "Bearer s3cret-token");  // not read from an unsafe file
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_EQ((*token)->Authorization(), "Bearer rotated-token-0123456789");
}

// Plaintext beyond loopback was the default (adapter review finding): every document, and a
// validate's userCtx and secObj, crossed the network in the clear, and anyone on the way could
// pose as the service and accept every write. It takes TLS now, or --insecure.
TEST(ChannelSecurity, PlaintextOffThisHostNeedsInsecure) {
  for (const char* target : {"10.0.0.5:7070", "dns:///cnp.internal:7070", "10.0.0.5:1,10.0.0.6:1"}) {
    absl::StatusOr<LoadedChannelSecurity> refused = LoadChannelSecurity(ChannelSecurity{}, target);
    ASSERT_FALSE(refused.ok()) << target;
    EXPECT_TRUE(absl::IsInvalidArgument(refused.status())) << refused.status();
    EXPECT_TRUE(absl::StrContains(refused.status().message(),
                                  absl::StrCat("refusing to connect in plaintext to ", target)))
        << refused.status();
    EXPECT_TRUE(absl::StrContains(refused.status().message(), "--insecure")) << refused.status();
    EXPECT_TRUE(LoadChannelSecurity(ChannelSecurity{.insecure = true}, target).ok()) << target;
  }
  for (const char* target : {"127.0.0.1:7070", "[::1]:7070", "localhost:7070",
                             "unix:/tmp/cnp-0/cnp.sock"}) {
    EXPECT_TRUE(LoadChannelSecurity(ChannelSecurity{}, target).ok()) << target;
  }
  // --insecure is for the documents, never for a secret.
  const ChannelSecurity with_token{.auth_token_file = TokenFile(), .insecure = true};
  EXPECT_FALSE(LoadChannelSecurity(with_token, "10.0.0.5:7070").ok());
}

TEST(ChannelSecurity, ATokenTravelsOverTlsLoopbackOrAUnixSocket) {
  ChannelSecurity security{.auth_token_file = TokenFile()};
  for (const char* target : {"127.0.0.1:7070", "[::1]:7070", "localhost:7070",
                             "unix:/tmp/cnp-0/cnp.sock"}) {
    absl::StatusOr<LoadedChannelSecurity> loaded = LoadChannelSecurity(security, target);
    ASSERT_TRUE(loaded.ok()) << target << ": " << loaded.status();
    EXPECT_EQ(loaded->authorization, "Bearer s3cret-token");
  }
  security.tls = true;
  EXPECT_TRUE(LoadChannelSecurity(security, "10.0.0.5:7070").ok());
  // No token: plaintext off this host is the operator's choice, said on both ends (the
  // server's --insecure, the client's).
  EXPECT_TRUE(LoadChannelSecurity(ChannelSecurity{.insecure = true}, "10.0.0.5:7070").ok());
}

// gRPC aborts a client whose header value holds a newline or a byte outside visible ASCII,
// after logging the whole header, the token in it: two lines of `openssl rand -base64 64`
// crashed every client and leaked the token into CouchDB's log. Such a file is refused, and
// the message does not quote it.
TEST(ChannelSecurity, ATokenThatIsNotOneLineOfVisibleAsciiIsRefusedUnquoted) {
  const std::string dir = MakeTempDir("token");
  for (const std::string& content :
       {std::string("s3cret\ntoken\n"), std::string("s3cret token"), std::string("s3cret\x01"),
        std::string("s3cret\xc3\xa9")}) {
    const std::string path = dir + "/token";
    WriteFile(path, content, 0600);
    absl::StatusOr<LoadedChannelSecurity> loaded =
        LoadChannelSecurity(ChannelSecurity{.auth_token_file = path}, "127.0.0.1:7070");
    ASSERT_FALSE(loaded.ok()) << content;
    EXPECT_TRUE(absl::IsInvalidArgument(loaded.status())) << loaded.status();
    EXPECT_TRUE(absl::StrContains(loaded.status().message(), "at offset 6")) << loaded.status();
    EXPECT_FALSE(absl::StrContains(loaded.status().message(), "s3cret")) << loaded.status();
  }
}

TEST(ChannelSecurity, CouchDbCredentialsAreCheckedTheSameWay) {
  absl::Status refused =
      CheckSecretStaysPrivate(ChannelSecurity{}, "10.0.0.5:7070", "CouchDB's user and password");
  EXPECT_TRUE(absl::IsInvalidArgument(refused));
  EXPECT_TRUE(absl::StrContains(refused.message(), "refusing to send CouchDB's user and password"))
      << refused;
  EXPECT_TRUE(CheckSecretStaysPrivate(ChannelSecurity{.tls_ca_file = "ca.pem"}, "10.0.0.5:7070",
                                      "CouchDB's user and password")
                  .ok());
  EXPECT_TRUE(CheckSecretStaysPrivate(ChannelSecurity{}, "127.0.0.1:7070", "x").ok());
}

}  // namespace
}  // namespace cnp::client
