// Issue 7, item 3: Upload talks HTTP only to the CouchDB servers the operator allowed, reads
// no more than a bounded answer, and passes on nothing of a foreign answer but CouchDB's own
// "error" and "reason", trimmed.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/upload/couch_allow_list.h"
#include "common/couchdb/couch_client.h"
#include "service/upload/uploader.h"
#include "tests/support/scripted_http_server.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {

using ::cnp::testing::AsCouchDB;
using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kYaml[] = "location:\n  views:\n    towns: myviews.townmap\n";

class CouchHttpLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override { runner_.Define("myviews.townmap", 1); }

  static v1::UploadRequest Request(const std::string& url) {
    v1::UploadRequest request;
    request.set_couchdb_url(url);
    request.set_database("db");
    *request.add_files() = File("design.yml", kYaml);
    return request;
  }

  // Every message the caller would see: the problems and the final status.
  static std::string Messages(const UploadResult& result) {
    std::string all(result.status.message());
    for (const auto& e : result.errors()) absl::StrAppend(&all, "\n", e.message());
    return all;
  }

  ::cnp::testing::FakeBlockingTaskRunner runner_;
};

TEST_F(CouchHttpLimitsTest, AnAnswerOverTheLimitIsCutOff) {
  ScriptedHttpServer couch(AsCouchDB([](const HttpRequest&) {
    ScriptedResponse response;
    response.body = "{\"db_name\": \"";
    response.streamed_filler_bytes = int64_t{256} << 20;  // far more than the limit
    return response;
  }));
  Uploader::Options options;
  options.max_couchdb_response_bytes = 1 << 20;
  Uploader uploader(runner_, options);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  EXPECT_TRUE(absl::IsResourceExhausted(result.status)) << result.status;
  EXPECT_THAT(result.status.message(), HasSubstr("exceeded 1048576 bytes"));
  EXPECT_THAT(result.status.message(), HasSubstr("--max-couchdb-response-bytes"));
}

// The client is shared by cnp-server's Upload and the command line's upload, sync and derive:
// the setting a message names is the caller's. (It named cnp-server's flag to `cnp derive`.)
TEST_F(CouchHttpLimitsTest, TheAdviceForAnAnswerOverTheLimitIsTheCallers) {
  ScriptedHttpServer couch([](const HttpRequest&) {
    ScriptedResponse response;
    response.body = "{\"results\": [";
    response.streamed_filler_bytes = int64_t{16} << 20;
    return response;
  });
  couchdb::CouchClient plain({.base_url = couch.url(), .max_response_bytes = 1 << 20});
  absl::StatusOr<couchdb::HttpResponse> answer = plain.Get("/db/_changes");
  EXPECT_TRUE(absl::IsResourceExhausted(answer.status())) << answer.status();
  EXPECT_THAT(answer.status().message(), HasSubstr("exceeded 1048576 bytes"));
  EXPECT_THAT(answer.status().message(), ::testing::Not(HasSubstr("cnp-server")));
  couchdb::CouchClient advised({.base_url = couch.url(),
                                .max_response_bytes = 1 << 20,
                                .response_limit_advice = "cnp derive's --max-couchdb-response-bytes raises the limit"});
  answer = advised.Get("/db/_changes");
  EXPECT_THAT(answer.status().message(), HasSubstr("cnp derive's --max-couchdb-response-bytes raises the limit"));
}

// Within the byte limit, text as dense as [0,0,...] took 24 times its size once parsed (a 63 MB
// answer took cnp-server's Upload to 1.5 GB): an answer may hold one JSON value per 16 bytes of
// the limit. One as long but made of longer values is read.
TEST_F(CouchHttpLimitsTest, AnAnswerDenserThanTheLimitAllowsIsRefused) {
  std::string dense = "[";
  for (int i = 0; i < 300000; ++i) dense += "0,";
  dense += "0]";
  ASSERT_LT(dense.size(), size_t{1} << 20);
  std::string sparse = "[";
  for (int i = 0; i < 20000; ++i) absl::StrAppend(&sparse, "\"", std::string(24, 'x'), "\",");
  sparse += "0]";
  ASSERT_LT(sparse.size(), size_t{1} << 20);
  ScriptedHttpServer couch([&](const HttpRequest& request) {
    return ScriptedResponse{200, request.target == "/db/dense" ? dense : sparse};
  });
  couchdb::CouchClient client({.base_url = couch.url(),
                               .max_response_bytes = 1 << 20,
                               .response_limit_advice = "raise --max-couchdb-response-bytes"});
  absl::StatusOr<couchdb::HttpResponse> answer = client.Get("/db/dense");
  EXPECT_TRUE(absl::IsResourceExhausted(answer.status())) << answer.status();
  EXPECT_THAT(answer.status().message(), HasSubstr("more than 65536 JSON values"));
  EXPECT_THAT(answer.status().message(), HasSubstr("GET /db/dense"));
  EXPECT_THAT(answer.status().message(), HasSubstr("raise --max-couchdb-response-bytes"));

  answer = client.Get("/db/sparse");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->body, sparse);
}

// The server's Upload reads the stored design document through the same client.
TEST_F(CouchHttpLimitsTest, AnUploadReadingADenseDocumentFailsWithTheLimitsName) {
  ScriptedHttpServer couch(AsCouchDB([](const HttpRequest& request) {
    if (!absl::StrContains(request.target, "_design")) return ScriptedResponse{200, R"({"db_name":"db"})"};
    std::string doc = R"({"_id":"_design/location","_rev":"1-a","padding":[)";
    for (int i = 0; i < 100000; ++i) doc += "0,";
    doc += "0]}";
    return ScriptedResponse{200, doc};
  }));
  Uploader::Options options;
  options.max_couchdb_response_bytes = 1 << 20;
  Uploader uploader(runner_, options);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  EXPECT_TRUE(absl::IsResourceExhausted(result.status)) << result.status;
  EXPECT_THAT(Messages(result), HasSubstr("JSON values"));
  EXPECT_THAT(Messages(result), HasSubstr("--max-couchdb-response-bytes"));
}

TEST_F(CouchHttpLimitsTest, AForeignBodyIsNotPassedOn) {
  ScriptedHttpServer couch(AsCouchDB([](const HttpRequest&) {
    return ScriptedResponse{500, "<html>internal admin page: SECRET-TOKEN-123</html>"};
  }));
  Uploader uploader(runner_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  EXPECT_FALSE(result.status.ok());
  EXPECT_THAT(Messages(result), Not(HasSubstr("SECRET-TOKEN")));
  EXPECT_THAT(Messages(result), HasSubstr("HTTP 500"));
  EXPECT_THAT(Messages(result), HasSubstr("not shown"));
}

TEST_F(CouchHttpLimitsTest, CouchDBsReasonIsTrimmedAndStrippedOfControlCharacters) {
  const std::string long_reason = absl::StrCat("\\u001b[2Jstart-", std::string(5000, 'r'), "-END");
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest&) {
    return ScriptedResponse{
        500, absl::StrCat(R"({"error": "internal_server_error", "reason": ")", long_reason,
                          R"(", "extra": "NOT-SHOWN"})")};
  }));
  Uploader uploader(runner_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  ASSERT_EQ(result.errors().size(), 1u) << result.Dump();
  const std::string message(result.errors()[0].message());
  EXPECT_THAT(message, HasSubstr("internal_server_error: "));
  EXPECT_THAT(message, HasSubstr("start-rrr"));
  EXPECT_THAT(message, Not(HasSubstr("-END")));
  EXPECT_THAT(message, Not(HasSubstr("NOT-SHOWN")));
  EXPECT_THAT(message, Not(HasSubstr("\x1b")));
  EXPECT_LT(message.size(), 600u);
}

TEST_F(CouchHttpLimitsTest, AnAnswerNestedTooDeepIsRefusedNotRecursedInto) {
  ScriptedHttpServer couch(AsCouchDB([](const HttpRequest& r) {
    if (r.target == "/db") return ScriptedResponse{200, R"({"db_name": "db"})"};
    return ScriptedResponse{200, absl::StrCat("{\"a\":", std::string(200000, '['),
                                              std::string(200000, ']'), "}")};
  }));
  Uploader uploader(runner_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  EXPECT_FALSE(result.status.ok());
  EXPECT_THAT(Messages(result), HasSubstr("malformed"));
}

// Security review: on the default allow list (loopback, any port and path) a caller made the
// service read another HTTP service of its host through /PATH/db/_design/x, its JSON echoed
// back in the outcome, and PUT to it without dry_run. Now a server that does not answer GET /
// with CouchDB's welcome gets nothing else, and what it answered is not quoted.
TEST_F(CouchHttpLimitsTest, AServiceThatIsNotCouchDBGetsOnlyGetRoot) {
  ScriptedHttpServer service([](const HttpRequest& r) {
    if (r.target == "/admin/") return ScriptedResponse{200, R"({"service": "INTERNAL-ROOT"})"};
    if (r.target == "/admin/db") return ScriptedResponse{200, R"({"db_name": "db"})"};
    return ScriptedResponse{200, R"({"_id": "_design/design", "secret": "INTERNAL-DATA"})"};
  });
  Uploader uploader(runner_);
  for (bool dry_run : {true, false}) {
    v1::UploadRequest request = Request(service.url() + "/admin");
    request.set_dry_run(dry_run);
    UploadResult result = RunUpload(uploader, request);
    EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
    EXPECT_THAT(Messages(result), HasSubstr("is not CouchDB's root"));
    EXPECT_THAT(result.Dump(), Not(HasSubstr("INTERNAL")));
  }
  EXPECT_THAT(service.requests(), ElementsAre("GET /admin/", "GET /admin/"));
}

TEST_F(CouchHttpLimitsTest, WithoutAllowListOnlyLoopbackIsAllowed) {
  Uploader uploader(runner_);
  for (const char* url : {"http://couch.example.invalid:5984", "https://10.0.0.5:6984",
                          "http://127.0.0.1.example.invalid:5984", "http://[::2]:5984"}) {
    UploadResult result = RunUpload(uploader, Request(url));
    EXPECT_TRUE(absl::IsPermissionDenied(result.status)) << url << ": " << result.status;
    EXPECT_THAT(result.status.message(), HasSubstr("--couchdb-allow")) << url;
  }
  // Refused before anything else happens: no function was resolved.
  EXPECT_EQ(runner_.resolve_tasks(), 0);
  for (const char* url : {"http://localhost:5984", "http://127.0.0.2:1", "http://[::1]:5984"}) {
    absl::StatusOr<couchdb::CouchUrl> parsed = couchdb::ParseCouchUrl(url);
    ASSERT_TRUE(parsed.ok());
    EXPECT_TRUE(CouchAllowList().Check(*parsed).ok()) << url;
  }
}

// Every spelling of loopback is loopback (common/loopback.h), and nothing that only looks like
// it. [::ffff:127.0.0.1] was refused before: the allow list had a loopback rule of its own that
// missed IPv4-mapped addresses, which the listeners and the clients counted as loopback.
TEST_F(CouchHttpLimitsTest, WithoutAllowListEverySpellingOfLoopbackIsAllowed) {
  for (const char* url : {"http://[::ffff:127.0.0.1]:5984", "http://[::FFFF:127.1.2.3]:5984",
                          "http://127.1.2.3:5984", "http://LOCALHOST:5984", "https://[::1]"}) {
    absl::StatusOr<couchdb::CouchUrl> parsed = couchdb::ParseCouchUrl(url);
    ASSERT_TRUE(parsed.ok()) << url;
    EXPECT_TRUE(CouchAllowList().Check(*parsed).ok()) << url;
  }
  for (const char* url : {"http://127.0.0.1.evil.com:5984", "http://[::ffff:10.0.0.1]:5984",
                          "http://0.0.0.0:5984", "http://[::]:5984", "http://localhost.:5984",
                          "http://[127.0.0.1]:5984", "http://127.1:5984"}) {
    absl::StatusOr<couchdb::CouchUrl> parsed = couchdb::ParseCouchUrl(url);
    ASSERT_TRUE(parsed.ok()) << url;
    EXPECT_TRUE(absl::IsPermissionDenied(CouchAllowList().Check(*parsed))) << url;
  }

  // And an IPv4-mapped URL does reach CouchDB on 127.0.0.1: it is this host.
  ScriptedHttpServer couch(AsCouchDB([](const HttpRequest& r) {
    if (r.target == "/db") return ScriptedResponse{200, R"({"db_name": "db"})"};
    if (r.method == "GET") return ScriptedResponse{404, R"({"error": "not_found"})"};
    return ScriptedResponse{201, R"({"ok": true, "rev": "1-a"})"};
  }));
  std::string mapped = couch.url();
  ASSERT_TRUE(absl::StrContains(mapped, "//127.0.0.1:")) << mapped;
  absl::StrReplaceAll({{"//127.0.0.1:", "//[::ffff:127.0.0.1]:"}}, &mapped);
  Uploader uploader(runner_);
  UploadResult result = RunUpload(uploader, Request(mapped));
  EXPECT_TRUE(result.status.ok()) << mapped << ": " << result.status << result.Dump();
  EXPECT_THAT(couch.requests(), Not(IsEmpty()));
}

TEST_F(CouchHttpLimitsTest, TheAllowListDecidesWhereUploadsGo) {
  ScriptedHttpServer couch(AsCouchDB([](const HttpRequest& r) {
    if (r.target == "/db") return ScriptedResponse{200, R"({"db_name": "db"})"};
    if (r.method == "GET") return ScriptedResponse{404, R"({"error": "not_found"})"};
    return ScriptedResponse{201, R"({"ok": true, "rev": "1-a"})"};
  }));
  // A prefix ends at a path boundary: port 1 does not allow port 1xxxx.
  Uploader::Options other;
  other.couchdb_allow = CouchAllowList::FromPrefixes({"http://127.0.0.1:1"}).value();
  Uploader refusing(runner_, other);
  UploadResult refused = RunUpload(refusing, Request(couch.url()));
  EXPECT_TRUE(absl::IsPermissionDenied(refused.status)) << refused.status;
  EXPECT_THAT(refused.status.message(), HasSubstr("--couchdb-allow"));
  EXPECT_THAT(couch.requests(), IsEmpty());

  Uploader::Options allowed_options;
  allowed_options.couchdb_allow = CouchAllowList::FromPrefixes({couch.url()}).value();
  Uploader allowed(runner_, allowed_options);
  UploadResult result = RunUpload(allowed, Request(couch.url()));
  EXPECT_TRUE(result.status.ok()) << result.status << result.Dump();

  absl::StatusOr<couchdb::CouchUrl> remote = couchdb::ParseCouchUrl("https://COUCH.example.com:6984/base/x");
  ASSERT_TRUE(remote.ok());
  EXPECT_TRUE(CouchAllowList::FromPrefixes({"https://couch.example.com:6984/base"})
                  ->Check(*remote).ok());
  EXPECT_FALSE(CouchAllowList::FromPrefixes({"https://couch.example.com:6984/ba"})
                   ->Check(*remote).ok());
  EXPECT_TRUE(CouchAllowList::FromPrefixes({"*"})->Check(*remote).ok());
}

// `*` allows any server, not a password in clear across the network: credentials go over
// http:// off this host only where the operator named that http:// URL.
TEST_F(CouchHttpLimitsTest, CredentialsGoInPlainTextOnlyWhereTheOperatorNamedTheHttpUrl) {
  auto check = [](const std::vector<std::string>& prefixes, const char* url) {
    absl::StatusOr<couchdb::CouchUrl> parsed = couchdb::ParseCouchUrl(url);
    EXPECT_TRUE(parsed.ok()) << url;
    return CouchAllowList::FromPrefixes(prefixes)->CheckCredentialsMayGo(*parsed);
  };
  EXPECT_TRUE(absl::IsPermissionDenied(check({"*"}, "http://couch.example.com:5984")));
  EXPECT_TRUE(absl::IsPermissionDenied(
      check({"https://couch.example.com:5984"}, "http://couch.example.com:5984")));
  EXPECT_TRUE(check({"http://couch.example.com:5984"}, "http://COUCH.example.com:5984/x").ok());
  EXPECT_TRUE(check({"*"}, "https://couch.example.com:6984").ok());
  EXPECT_TRUE(check({"*"}, "http://127.0.0.1:5984").ok());
  EXPECT_TRUE(check({}, "http://[::1]:5984").ok());

  // Through the Upload: refused before any request, whether the credentials come in the URL
  // or apart, and the message says what to do without showing them.
  Uploader::Options any;
  any.couchdb_allow = CouchAllowList::FromPrefixes({"*"}).value();
  Uploader uploader(runner_, any);
  v1::UploadRequest apart = Request("http://couch.invalid:5984");
  apart.mutable_credentials()->set_username("admin");
  apart.mutable_credentials()->set_password("s3cret");
  for (const v1::UploadRequest& request :
       {apart, Request("http://admin:s3cret@couch.invalid:5984")}) {
    UploadResult result = RunUpload(uploader, request);
    EXPECT_TRUE(absl::IsPermissionDenied(result.status)) << result.status << result.Dump();
    EXPECT_THAT(result.status.message(), HasSubstr("--couchdb-allow=http://couch.invalid:5984"));
    EXPECT_THAT(Messages(result), Not(HasSubstr("s3cret")));
  }
}

TEST_F(CouchHttpLimitsTest, BadAllowListEntriesAreRefused) {
  for (const char* bad : {"ftp://couch", "couch:5984", "http://admin:pw@couch:5984"}) {
    absl::StatusOr<CouchAllowList> list = CouchAllowList::FromPrefixes({bad});
    EXPECT_TRUE(absl::IsInvalidArgument(list.status())) << bad;
    EXPECT_THAT(list.status().message(), HasSubstr("--couchdb-allow")) << bad;
    EXPECT_THAT(list.status().message(), Not(HasSubstr("pw@"))) << bad;
  }
}

}  // namespace
}  // namespace cnp::upload::testing
