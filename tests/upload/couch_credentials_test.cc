#include "client/couch/couch_credentials.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <map>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::client::couch {
namespace {

using ::testing::HasSubstr;

GetEnv EnvOf(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(CouchCredentialsTest, TheUrlWinsAndIsStripped) {
  auto found = FindCouchCredentials("http://u:p%3Aw@host:5984/",
                                    EnvOf({{"CNP_COUCHDB_USER", "env"}}));
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->url, "http://host:5984");
  EXPECT_EQ(found->username, "u");
  EXPECT_EQ(found->password, "p:w");
  EXPECT_EQ(found->source, "the URL");
}

TEST(CouchCredentialsTest, TheEnvironmentComesNext) {
  auto found = FindCouchCredentials(
      "https://host", EnvOf({{"CNP_COUCHDB_USER", "env"}, {"CNP_COUCHDB_PASSWORD", "pw"}}));
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->username, "env");
  EXPECT_EQ(found->password, "pw");
}

// A user without a password was sent with "" and CouchDB's 401 reported as "CouchDB refused
// the credentials" (found by a review): refused before anything is sent, naming the variable.
TEST(CouchCredentialsTest, AUserWithoutItsPasswordIsRefusedNamingTheVariable) {
  auto unset = FindCouchCredentials("http://localhost:5984", EnvOf({{"CNP_COUCHDB_USER", "env"}}));
  EXPECT_TRUE(absl::IsInvalidArgument(unset.status())) << unset.status();
  EXPECT_EQ(unset.status().message(),
            "CNP_COUCHDB_USER is set but CNP_COUCHDB_PASSWORD is not set: set it to CouchDB's "
            "password for that user (or unset CNP_COUCHDB_USER to use ~/.netrc)");
  auto empty = FindCouchCredentials(
      "http://localhost:5984", EnvOf({{"CNP_COUCHDB_USER", "env"}, {"CNP_COUCHDB_PASSWORD", ""}}));
  EXPECT_TRUE(absl::IsInvalidArgument(empty.status())) << empty.status();
  EXPECT_THAT(std::string(empty.status().message()),
              ::testing::HasSubstr("CNP_COUCHDB_PASSWORD is empty"));
  // A password without a user is no credential at all, as before: anonymous.
  auto password_only =
      FindCouchCredentials("http://localhost:5984", EnvOf({{"CNP_COUCHDB_PASSWORD", "pw"}}));
  ASSERT_TRUE(password_only.ok());
  EXPECT_EQ(password_only->username, "");
}

TEST(CouchCredentialsTest, ThenTheNetrcEntryForTheHost) {
  std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/netrc";
  std::ofstream(path) << "machine other login x password y\n"
                         "default login anon password none\n"
                         "machine couch.example.com\n  login admin\n  password s3cret\n";
  auto found = FindCouchCredentials("https://couch.example.com:6984/db",
                                    EnvOf({{"NETRC", path}, {"HOME", "/nonexistent"}}));
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->username, "admin");
  EXPECT_EQ(found->password, "s3cret");
  EXPECT_EQ(found->source, path);

  auto fallback = FindCouchCredentials("http://elsewhere", EnvOf({{"NETRC", path}}));
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(fallback->username, "anon");
}

// Found by a review: a quoted password (curl -n reads them, and the README shares the file
// with curl) was cut at its first space, and a host written in another case was not matched.
TEST(CouchCredentialsTest, QuotedValuesAndHostsInAnyCaseReadAsCurlReadsThem) {
  std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/netrc-quoted";
  std::ofstream(path) << "machine Couch.Example.com login \"the admin\" password \"p w \\\"q\\\" \\\\ end\"\n";
  auto found = FindCouchCredentials("https://couch.example.COM:6984/db", EnvOf({{"NETRC", path}}));
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->username, "the admin");
  EXPECT_EQ(found->password, "p w \"q\" \\ end");
}

// Found by a review: a credentials file that cannot be read was skipped without a word (the
// request went anonymously, and CouchDB's 401 pointed back at the file), a FIFO named by
// NETRC held the command for ever, and /dev/zero was read until memory ran out.
TEST(CouchCredentialsTest, ACredentialsFileThatCannotBeReadIsAnError) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR"));
  const std::string fifo = dir + "/netrc-fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {dir, fifo, std::string("/dev/zero"), dir + "/no-such-netrc"}) {
    auto refused = FindCouchCredentials("http://localhost:5984", EnvOf({{"NETRC", path}}));
    ASSERT_FALSE(refused.ok()) << path;
    EXPECT_TRUE(absl::IsInvalidArgument(refused.status())) << refused.status();
    EXPECT_THAT(refused.status().message(), HasSubstr("cannot read the credentials file " + path));
  }
  // ~/.netrc may be missing: that is no credentials, not an error.
  auto anonymous = FindCouchCredentials("http://localhost:5984", EnvOf({{"HOME", dir + "/no-home"}}));
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->username, "");
}

TEST(CouchCredentialsTest, NoneFoundMeansAnonymous) {
  auto found = FindCouchCredentials("http://localhost:5984", EnvOf({}));
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->username, "");
}

}  // namespace
}  // namespace cnp::client::couch
