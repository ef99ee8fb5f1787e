// JSON in and out of the worker: exact numbers, exact unicode, NaN as null.
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

class JsonFidelityTest : public ::testing::Test {
 protected:
  void SetUp() override { worker_ = WorkerProcess::StartWithFunctions(); }

  std::string Echo(const std::string& doc) {
    Reply reply = worker_->Call(MapTask({"worker_views.echo"}, {doc}));
    EXPECT_TRUE(reply.has_map()) << reply.DebugString();
    if (!reply.has_map()) return "";
    EXPECT_EQ(reply.map().results(0).errors_size(), 0) << reply.DebugString();
    return reply.map().results(0).rows();
  }

  std::unique_ptr<WorkerProcess> worker_;
};

TEST_F(JsonFidelityTest, NumbersRoundTripExactly) {
  EXPECT_EQ(Echo(R"({"big":123456789012345678901234567890,"neg":-18446744073709551617,"max":9223372036854775807})"),
            R"([[[{"big":123456789012345678901234567890,"neg":-18446744073709551617,"max":9223372036854775807},null]]])");
  EXPECT_EQ(Echo(R"({"a":0.1,"b":1e300,"c":-0.0,"d":1.5E-7,"e":2.0,"f":1e16})"),
            R"([[[{"a":0.1,"b":1e+300,"c":-0.0,"d":1.5e-07,"e":2.0,"f":1e+16},null]]])");
}

TEST_F(JsonFidelityTest, PythonNumbersAreWrittenExactlyAndNonFiniteAsNull) {
  Reply reply = worker_->Call(MapTask({"worker_views.numbers"}, {R"({"_id":"x"})"}));
  ASSERT_TRUE(reply.has_map());
  EXPECT_EQ(reply.map().results(0).rows(),
            R"([[[[1180591620717411303424,-1208925819614629174706176,0.1,1e+300,-0.0,null,null,1.0],null]]])");
}

TEST_F(JsonFidelityTest, UnicodeRoundTripsIncludingTheAstralPlane) {
  // Escapes in, UTF-8 out; control characters and quotes stay escaped.
  EXPECT_EQ(Echo(R"({"s":"caf\u00e9 \ud83d\ude00 \"q\" \\ \n\t\u0001"})"),
            "[[[{\"s\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 \\\"q\\\" \\\\ \\n\\t\\u0001\"},null]]]");
  // Raw UTF-8 in, the same bytes out, keys included.
  EXPECT_EQ(Echo("{\"\xe6\x97\xa5\xe6\x9c\xac\":\"\xf0\x90\x8d\x88 \xe2\x82\xac\"}"),
            "[[[{\"\xe6\x97\xa5\xe6\x9c\xac\":\"\xf0\x90\x8d\x88 \xe2\x82\xac\"},null]]]");
}

// couchjs writes a lone surrogate as an escape and CouchDB indexes the row with U+FFFD in its
// place: the row is kept, not dropped with a UnicodeEncodeError. Valid text around it, keys
// and escapes are written as usual; a pair split into two code points is a pair of escapes.
TEST_F(JsonFidelityTest, LoneSurrogatesAreWrittenAsEscapesAndTheRowIsKept) {
  Reply reply = worker_->Call(MapTask({"worker_views.lone_surrogates"}, {R"({"_id":"x"})"}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).errors_size(), 0) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(),
            "[[[\"s\",\"\\ud800\"],"
            "[{\"k\\udc80\":[\"a\\\"\\ud83d\\n\\u0001\",\"\\ud83d\\ude00\"]},\"caf\xc3\xa9\"]]]");
}

TEST_F(JsonFidelityTest, NestedStructuresKeepOrderAndRepeatedKeysKeepTheLastValue) {
  EXPECT_EQ(Echo(R"({"z":[1,[2,[3,{"y":null,"x":true}]]],"a":{},"b":[],"z2":false,"k":1,"k":2})"),
            R"([[[{"z":[1,[2,[3,{"y":null,"x":true}]]],"a":{},"b":[],"z2":false,"k":2},null]]])");
}

TEST_F(JsonFidelityTest, InvalidInputsAreBadInput) {
  for (const char* doc : {"{\"a\":\"\\ud800\"}", "{\"a\":1} trailing", "{\"a\":NaN}", "\"\xff\""}) {
    Reply reply = worker_->Call(MapTask({"worker_views.echo"}, {doc}));
    ASSERT_TRUE(reply.has_failure()) << doc;
    EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_INPUT) << doc;
  }
}

}  // namespace
}  // namespace cnp::worker::testing
