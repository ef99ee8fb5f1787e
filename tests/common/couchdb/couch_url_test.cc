#include "common/couchdb/couch_url.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_client.h"

namespace cnp::couchdb {
namespace {

TEST(CouchUrlTest, CredentialsAreTakenOutOfTheUrl) {
  absl::StatusOr<CouchUrl> url = ParseCouchUrl("http://admin:p%40ss:w@localhost:5984/");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->base, "http://localhost:5984");
  EXPECT_EQ(url->username, "admin");
  EXPECT_EQ(url->password, "p@ss:w");
}

TEST(CouchUrlTest, APathPrefixIsKept) {
  absl::StatusOr<CouchUrl> url = ParseCouchUrl("HTTPS://couch.example.com/proxy/couch//");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->base, "https://couch.example.com/proxy/couch");
  EXPECT_EQ(url->username, "");
}

TEST(CouchUrlTest, BadUrlsAreRejectedWithoutShowingThePassword) {
  for (const char* bad : {"ftp://u:secret@host", "u:secret@host:5984", "http://u:secret@",
                          "http://u:secret@host/?x=1"}) {
    absl::StatusOr<CouchUrl> url = ParseCouchUrl(bad);
    ASSERT_FALSE(url.ok()) << bad;
    EXPECT_THAT(std::string(url.status().message()), ::testing::Not(::testing::HasSubstr("secret")))
        << url.status();
  }
}

// libcurl refuses such ports only at the first request, as "URL using bad/illegal format",
// which the commands reported as CouchDB being unreachable.
TEST(CouchUrlTest, APortOutOfRangeOrNotANumberIsRefused) {
  for (const char* bad : {"http://localhost:99999", "http://localhost:0/", "http://localhost:59a4",
                          "http://u:secret@localhost:-1/db", "http://[::1]:70000",
                          "http://[::1", "http://[::1]x:5984", "http://:5984", "http://fe80::1",
                          "http://localhost:5984:5984"}) {
    absl::StatusOr<CouchUrl> url = ParseCouchUrl(bad);
    ASSERT_FALSE(url.ok()) << bad << " parsed as " << url->base;
    EXPECT_TRUE(absl::IsInvalidArgument(url.status())) << url.status();
    EXPECT_THAT(std::string(url.status().message()), ::testing::Not(::testing::HasSubstr("secret")));
  }
  EXPECT_THAT(std::string(ParseCouchUrl("http://localhost:99999").status().message()),
              ::testing::HasSubstr("port \"99999\"; a port is a number from 1 to 65535"));
  for (const char* good : {"http://localhost:5984", "http://127.0.0.1:1", "http://[::1]:65535/x",
                           "http://[::1]", "http://couch:/", "https://u:p@couch.example.com"}) {
    EXPECT_TRUE(ParseCouchUrl(good).ok()) << good << ": " << ParseCouchUrl(good).status();
  }
}

// A URL whose path steps out of itself would pass a --couchdb-allow prefix by its text and
// reach another path once libcurl (or a proxy) resolves it: "/allowed/.." is "/".
TEST(CouchUrlTest, PathsThatStepOutOfThemselvesAreRefused) {
  for (const char* bad :
       {"http://localhost:5984/allowed/..", "http://localhost:5984/allowed/../victim",
        "http://localhost:5984/allowed/%2e%2E", "http://localhost:5984/allowed/.%2E/",
        "http://localhost:5984/./allowed", "http://localhost:5984/allowed%2F..%2Fvictim",
        "http://u:secret@localhost:5984/a/../b"}) {
    absl::StatusOr<CouchUrl> url = ParseCouchUrl(bad);
    ASSERT_FALSE(url.ok()) << bad << " parsed as " << url->base;
    EXPECT_THAT(std::string(url.status().message()), ::testing::HasSubstr("path segment"));
    EXPECT_THAT(std::string(url.status().message()), ::testing::Not(::testing::HasSubstr("secret")));
  }
  // Dots inside a segment are a name, not a step.
  for (const char* good : {"http://localhost:5984/a..b", "http://localhost:5984/.well/couch",
                           "http://localhost:5984/v1.2/couch"}) {
    EXPECT_TRUE(ParseCouchUrl(good).ok()) << good;
  }
}

TEST(CouchUrlTest, RedactRemovesUserInfo) {
  EXPECT_EQ(RedactUrl("http://a:b@h:1/x"), "http://h:1/x");
  EXPECT_EQ(RedactUrl("http://h:1/x"), "http://h:1/x");
}

TEST(CouchUrlTest, PathSegmentsAreEscaped) {
  EXPECT_EQ(CouchClient::EscapeSegment("account/ab/cd-2"), "account%2Fab%2Fcd-2");
  // Not path steps: "/db/_design/.." must not reach "/db".
  EXPECT_EQ(CouchClient::EscapeSegment(".."), "%2E%2E");
  EXPECT_EQ(CouchClient::EscapeSegment("."), "%2E");
  EXPECT_EQ(CouchClient::EscapeSegment("a..b"), "a..b");
  // CouchDB 3.2+ decodes a path's "+" as a space: a database named "a+b" is "a%2Bb".
  EXPECT_EQ(CouchClient::EscapeSegment("account/a+b$(c)"), "account%2Fa%2Bb$(c)");
  EXPECT_EQ(DesignDocPath("a/b", "x y"), "/a%2Fb/_design/x%20y");
}

}  // namespace
}  // namespace cnp::couchdb
