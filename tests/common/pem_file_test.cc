// The one reader of PEM certificate files (TLS files of cnp-server and its clients, --ca-file of
// cnp upload, sync and derive): bounded, checked, and refusing with the reason.
#include "common/pem_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/secret_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/as_user.h"
#include "tests/support/files.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;

constexpr char kCertificate[] =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";

TEST(PemFileTest, ReadsACertificateFile) {
  const std::string path = testing::MakeTempDir("pem") + "/ca.pem";
  testing::WriteFile(path, kCertificate);
  absl::StatusOr<std::string> pem = ReadPemFile("tls-ca", path, PemFileWriters::kNotEveryUser);
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_EQ(*pem, kCertificate);
}

TEST(PemFileTest, SaysWhyAFileIsRefused) {
  const std::string dir = testing::MakeTempDir("pem");
  absl::StatusOr<std::string> missing =
      ReadPemFile("tls-cert", dir + "/none.pem", PemFileWriters::kNotEveryUser);
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_EQ(missing.status().message(),
            "--tls-cert: cannot read " + dir + "/none.pem: No such file or directory");

  absl::StatusOr<std::string> folder = ReadPemFile("ca-file", dir, PemFileWriters::kNotEveryUser);
  EXPECT_TRUE(absl::IsNotFound(folder.status())) << folder.status();
  EXPECT_THAT(folder.status().message(), HasSubstr("Is a directory"));

  for (const char* text : {"", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}) {
    testing::WriteFile(dir + "/other.pem", text);
    absl::StatusOr<std::string> other =
        ReadPemFile("ca-file", dir + "/other.pem", PemFileWriters::kNotEveryUser);
    EXPECT_TRUE(absl::IsInvalidArgument(other.status())) << other.status();
    EXPECT_EQ(other.status().message(),
              "--ca-file: " + dir +
                  "/other.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  }
}

// A certificate at the start of a file far over the limit is still refused: the reader stops
// at the bound instead of taking the whole file into memory.
TEST(PemFileTest, RefusesAFileLargerThanTheBound) {
  const std::string path = testing::MakeTempDir("pem") + "/huge.pem";
  testing::WriteFile(path, kCertificate + std::string(3 * kMaxPemFileBytes, '\n'));
  absl::StatusOr<std::string> pem =
      ReadPemFile("tls-client-ca", path, PemFileWriters::kNotEveryUser);
  EXPECT_TRUE(absl::IsInvalidArgument(pem.status())) << pem.status();
  EXPECT_EQ(pem.status().message(),
            "--tls-client-ca: " + path + " is larger than 1 MiB; is it a PEM certificate file?");
}

// A probe: a named pipe given as a TLS file (or the token file) left cnp-server waiting at
// start for a writer, saying nothing.
TEST(PemFileTest, ANamedPipeIsRefusedWithoutWaitingForAWriter) {
  const std::string path = testing::MakeTempDir("pem") + "/ca.pem";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  absl::StatusOr<std::string> pem = ReadPemFile("tls-cert", path, PemFileWriters::kRootOrThisUser);
  EXPECT_TRUE(absl::IsInvalidArgument(pem.status())) << pem.status();
  EXPECT_THAT(pem.status().message(), HasSubstr("is a pipe or socket, not a PEM certificate"));
  absl::StatusOr<std::string> token = ReadAuthToken(path);
  EXPECT_TRUE(absl::IsInvalidArgument(token.status())) << token.status();
  EXPECT_THAT(token.status().message(), HasSubstr("is not a regular file"));
}

// A probe: another local user who could write cnp-server's --tls-client-ca added their own CA
// to it and passed mutual TLS with a client certificate of their own.
TEST(PemFileTest, AFileOthersCouldChangeIsRefusedAsTheReaderTrustsIt) {
  const std::string path = testing::MakeTempDir("pem") + "/ca.pem";
  testing::WriteFile(path, kCertificate, 0666);
  ::chmod(path.c_str(), 0666);  // whatever the umask
  for (PemFileWriters writers : {PemFileWriters::kRootOrThisUser, PemFileWriters::kNotEveryUser}) {
    absl::StatusOr<std::string> pem = ReadPemFile("tls-client-ca", path, writers);
    EXPECT_TRUE(absl::IsPermissionDenied(pem.status())) << pem.status();
    EXPECT_THAT(pem.status().message(), HasSubstr("is writable by every user (mode 0666)"));
  }
  // Its group's write bit: refused for the server, a client's own (a private group's) passes.
  ::chmod(path.c_str(), 0664);
  absl::StatusOr<std::string> server = ReadPemFile("tls-client-ca", path,
                                                   PemFileWriters::kRootOrThisUser);
  EXPECT_TRUE(absl::IsPermissionDenied(server.status())) << server.status();
  EXPECT_THAT(server.status().message(), HasSubstr("run chmod go-w " + path));
  EXPECT_TRUE(ReadPemFile("tls-ca", path, PemFileWriters::kNotEveryUser).ok());
  // Another user's file is theirs to change: refused for the server.
  ::chmod(path.c_str(), 0644);
  // Root outside Bazel's sandbox, whose user namespace refuses a chown to another uid.
  if (::chown(path.c_str(), 65534, 65534) != 0) GTEST_SKIP() << "cannot give the file away";
  absl::StatusOr<std::string> theirs = ReadPemFile("tls-cert", path,
                                                   PemFileWriters::kRootOrThisUser);
  EXPECT_TRUE(absl::IsPermissionDenied(theirs.status())) << theirs.status();
  EXPECT_THAT(theirs.status().message(), HasSubstr("belongs to uid 65534"));
  EXPECT_TRUE(ReadPemFile("tls-ca", path, PemFileWriters::kNotEveryUser).ok());
}

// A secret's group never reads it, root's own included (a group-readable root:cnp 0640 key was
// allowed for a while: cnp is also the socket's group, of the users the server serves). A
// program refused a root-owned 0600 key is told what would let it read one (an operator's
// trial: "Permission denied" alone).
TEST(SecretFileTest, ItsGroupNeverReadsItAndARefusedReaderIsToldWhatWould) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to own the file as root and to drop to 65534";
  const std::string dir = testing::MakeReachableTempDir("secret_file_test");
  ASSERT_FALSE(dir.empty());
  const std::string grouped = dir + "/grouped";
  testing::WriteFile(grouped, "s3cret", 0640);
  ASSERT_EQ(::chmod(grouped.c_str(), 0640), 0);
  ASSERT_EQ(::chown(grouped.c_str(), 0, 65534), 0);
  absl::StatusOr<std::string> as_root = ReadSecretFile(grouped, "the key");
  EXPECT_TRUE(absl::IsPermissionDenied(as_root.status())) << as_root.status();
  EXPECT_THAT(as_root.status().message(),
              HasSubstr("has mode 0640: the members of its group nogroup on this host could read "
                        "or change it; run chmod 600 " + grouped));
  ::chmod(grouped.c_str(), 0604);
  EXPECT_THAT(ReadSecretFile(grouped, "the key").status().message(),
              HasSubstr("has mode 0604: every user on this host"));
  ::chmod(grouped.c_str(), 0640);

  const std::string locked = dir + "/locked";  // root's 0600
  testing::WriteFile(locked, "s3cret", 0600);
  const int status = testing::ExitStatusAsUser(65534, 65534, [&] {
    // In the file's group: refused all the same.
    absl::StatusOr<std::string> group_read = ReadSecretFile(grouped, "the key");
    if (group_read.ok() ||
        std::string(group_read.status().message()).find("the members of its group") ==
            std::string::npos) {
      return 11;
    }
    absl::StatusOr<std::string> refused = ReadSecretFile(locked, "the key");
    if (refused.ok()) return 12;
    const std::string message(refused.status().message());
    if (message.find("Permission denied; this process runs as ") == std::string::npos ||
        message.find("(uid 65534): give it the file (chown ") == std::string::npos ||
        message.find("install -o ") == std::string::npos) {
      return 13;
    }
    return 0;
  });
  EXPECT_EQ(status, 0) << "125 could not become 65534, 11 its group's 0640 was read, 12 root's "
                          "0600 was read, 13 the message lacked the fix";
  std::filesystem::remove_all(dir);
}

// A server's token file lists the tokens it accepts, one per line, so that a token is rotated
// without a refused call; a client's holds the one it sends, and says so when given a list.
TEST(AuthTokenFileTest, AServersFileListsTokensOnePerLine) {
  const std::string path = testing::MakeTempDir("tokens") + "/tokens";
  testing::WriteFile(path, "new-token-2b9e41d07a\n\n  old-token-f3c8a65e19 \r\n", 0600);
  absl::StatusOr<std::vector<std::string>> tokens = ReadAuthTokens(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_THAT(*tokens, ::testing::ElementsAre("new-token-2b9e41d07a", "old-token-f3c8a65e19"));

  absl::StatusOr<std::string> one = ReadAuthToken(path);
  EXPECT_TRUE(absl::IsInvalidArgument(one.status())) << one.status();
  EXPECT_THAT(one.status().message(), HasSubstr("holds more than one line"));
  EXPECT_THAT(one.status().message(), ::testing::Not(HasSubstr("token\n")));

  testing::WriteFile(path, "\n \n", 0600);
  EXPECT_THAT(ReadAuthTokens(path).status().message(), HasSubstr("is empty"));

  // A line that is no token is refused by its place in the file, unquoted.
  testing::WriteFile(path, "new-token-2b9e41d07a\nold token\n", 0600);
  absl::StatusOr<std::vector<std::string>> spaced = ReadAuthTokens(path);
  EXPECT_TRUE(absl::IsInvalidArgument(spaced.status())) << spaced.status();
  EXPECT_THAT(spaced.status().message(), HasSubstr("byte 0x20 at offset 24"));
  EXPECT_THAT(spaced.status().message(), ::testing::Not(HasSubstr("old token")));

  // A '#' line meant as a comment was accepted as a token (a security probe).
  for (const char* comment : {"# rotated 2026-01", "#oldtoken-rotated-2026-01-01-below"}) {
    testing::WriteFile(path, absl::StrCat("new-token-2b9e41d07a\n", comment, "\n"), 0600);
    absl::StatusOr<std::vector<std::string>> commented = ReadAuthTokens(path);
    EXPECT_TRUE(absl::IsInvalidArgument(commented.status())) << commented.status();
    EXPECT_THAT(commented.status().message(),
                ::testing::AllOf(HasSubstr("a line starting with '#' (line 2)"),
                                 HasSubstr("the file has no comments"),
                                 ::testing::Not(HasSubstr("rotated"))));
  }
}

// A server accepts no token short enough to guess by trying many, and says which line holds
// one without showing it; a client sends what it is given (the server judges).
TEST(AuthTokenFileTest, AServerRefusesATokenShorterThan16Characters) {
  const std::string path = testing::MakeTempDir("tokens") + "/tokens";
  testing::WriteFile(path, "new-token-2b9e41d07a\n\nchangeme\n", 0600);
  absl::StatusOr<std::vector<std::string>> tokens = ReadAuthTokens(path);
  EXPECT_TRUE(absl::IsInvalidArgument(tokens.status())) << tokens.status();
  EXPECT_THAT(tokens.status().message(),
              ::testing::AllOf(HasSubstr("a token of 8 characters on line 3"),
                               HasSubstr("16 characters"), HasSubstr("openssl rand -hex 32"),
                               ::testing::Not(HasSubstr("changeme"))));

  testing::WriteFile(path, "exactly-16-chars\n", 0600);
  EXPECT_TRUE(ReadAuthTokens(path).ok());
  testing::WriteFile(path, "changeme\n", 0600);
  EXPECT_TRUE(ReadAuthToken(path).ok());
}

}  // namespace
}  // namespace cnp
