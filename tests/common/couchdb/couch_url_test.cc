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
  EXPECT_EQ(DesignDocPath("a/b", "x y"), "/a%2Fb/_design/x%20y");
}

}  // namespace
}  // namespace cnp::couchdb
