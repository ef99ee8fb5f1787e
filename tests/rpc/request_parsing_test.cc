// Requests that do not parse, end to end through a real cnp-server (service/rpc/request_parsing.h):
// every RPC reads its request as bytes and parses it once the call is admitted, so on the
// plaintext TCP listener a peer without the token is told UNAUTHENTICATED whatever it sent (and
// is in the access log), and an admitted peer that sent no valid request is told
// INVALID_ARGUMENT with what was wrong - not gRPC's INTERNAL "Unable to parse request", and not
// an OK for a stream whose message did not parse. Neither writes protobuf's own line to the
// log for each request.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/server_process.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "request-parsing-test-token";

// A length-delimited protobuf field: what a proto3 string field is on the wire, whatever its
// bytes (a client library would refuse to send invalid UTF-8 in one).
std::string Field(int number, const std::string& bytes) {
  std::string out(1, static_cast<char>((number << 3) | 2));
  size_t n = bytes.size();
  do {
    out += static_cast<char>((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>= 7;
  } while (n > 0);
  return out + bytes;
}

// Bytes that are no protobuf message: field 31's tag with a wire type that does not exist.
const std::string kGarbage = "\xff\xff\xff\xff";

struct Answer {
  grpc::StatusCode code;
  std::string message;
  std::string call_limit;  // the cnp-call-limit trailer, if any
  std::string last_message;  // the bytes of the last message read, if any
};

// One call of `method` that sends `request` as its one message, on any kind of method (unary,
// client, server or bidirectional streaming look alike on the wire), and reads whatever comes
// back until the status.
Answer RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
               const std::string& request, bool with_token) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  if (with_token) context.AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, method, &cq);
  void* tag;
  bool ok;
  auto step = [&] { return cq.Next(&tag, &ok) && ok; };
  std::string last_message;
  call->StartCall(nullptr);
  if (step()) {
    grpc::Slice slice(request);
    grpc::ByteBuffer bytes(&slice, 1);
    call->WriteLast(bytes, grpc::WriteOptions(), nullptr);
    step();
    grpc::ByteBuffer answer;
    while (true) {
      call->Read(&answer, nullptr);
      if (!step()) break;
      std::vector<grpc::Slice> slices;
      last_message.clear();
      if (answer.Dump(&slices).ok()) {
        for (const grpc::Slice& part : slices) {
          last_message.append(reinterpret_cast<const char*>(part.begin()), part.size());
        }
      }
    }
  }
  grpc::Status status;
  call->Finish(&status, nullptr);
  cq.Next(&tag, &ok);
  std::string call_limit;
  const auto& trailers = context.GetServerTrailingMetadata();
  if (auto it = trailers.find("cnp-call-limit"); it != trailers.end()) {
    call_limit = std::string(it->second.data(), it->second.size());
  }
  return {status.error_code(), status.error_message(), call_limit, last_message};
}

const std::vector<std::pair<std::string, std::string>> kMethods = {
    {"Map", "cnp.v1.MapRequest"},
    {"Reduce", "cnp.v1.ReduceRequest"},
    {"Validate", "cnp.v1.ValidateRequest"},
    {"CallDesignFunction", "cnp.v1.DesignFunctionRequest"},
    {"Resolve", "cnp.v1.ResolveRequest"},
    {"MapStream", "cnp.v1.MapRequest"},
    {"Session", "cnp.v1.SessionInput"},
    {"Upload", "cnp.v1.UploadRequest"},
};

class RequestParsingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::ShortTempDir();
    testing::WriteFile(dir + "/token", absl::StrCat(kToken, "\n"));
    auto server = ServerProcess::Start(
        {"--listen=127.0.0.1:0", "--auth-token-file=" + dir + "/token",
         "--python-path=" + testing::Runfile("tests/functions/server"), "--workers=1"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    tcp_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->Port()),
                               grpc::InsecureChannelCredentials());
    unix_ = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
  }

  // Lines of the server's log that protobuf wrote, or that tell of protobuf's.
  int ProtobufLines() const {
    int n = 0;
    for (absl::string_view line : absl::StrSplit(server_->Log(), '\n')) {
      // A failed call's own line quotes the answer it got (service/rpc/failed_call_log.h).
      if (absl::StrContains(line, "call failed: ")) continue;
      if (absl::StrContains(line, "libprotobuf") || absl::StrContains(line, "protobuf:") ||
          absl::StrContains(line, "invalid UTF-8")) {
        ++n;
      }
    }
    return n;
  }

  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> tcp_, unix_;
};

TEST_F(RequestParsingTest, APeerWithoutTheTokenIsUnauthenticatedWhateverItSends) {
  for (const auto& [rpc, type] : kMethods) {
    const std::string method = absl::StrCat("/cnp.v1.Functions/", rpc);
    for (const std::string& request : {kGarbage, Field(1, "a.\xff")}) {
      Answer answer = RawCall(tcp_, method, request, /*with_token=*/false);
      EXPECT_EQ(answer.code, grpc::StatusCode::UNAUTHENTICATED) << rpc << ": " << answer.message;
      EXPECT_THAT(answer.message, HasSubstr("bearer token")) << rpc;
    }
    EXPECT_TRUE(server_->WaitForLog(absl::StrCat("call=", rpc, " code=UNAUTHENTICATED"),
                                    absl::Seconds(30)))
        << rpc << ": no access-log line\n"
        << server_->Log();
  }
  EXPECT_EQ(ProtobufLines(), 0) << server_->Log();
}

TEST_F(RequestParsingTest, AnAdmittedRequestThatDoesNotParseIsInvalidArgument) {
  for (const auto& [rpc, type] : kMethods) {
    const std::string method = absl::StrCat("/cnp.v1.Functions/", rpc);
    // Garbage, over TCP with the token and over the unix socket (which needs none).
    for (const auto& channel : {tcp_, unix_}) {
      Answer answer = RawCall(channel, method, kGarbage, /*with_token=*/true);
      EXPECT_EQ(answer.code, grpc::StatusCode::INVALID_ARGUMENT) << rpc << ": " << answer.message;
      EXPECT_THAT(answer.message, HasSubstr(absl::StrCat("not a valid ", type))) << rpc;
    }
    // A string field that is not UTF-8 (Session's line is bytes: any bytes are a line).
    if (rpc == "Session") continue;
    const std::string name = Field(rpc == "CallDesignFunction" ? 2 : 1, "a.\xff");
    const std::string request = rpc == "Upload" ? Field(1, name) : name;  // a file's name
    Answer answer = RawCall(unix_, method, request, /*with_token=*/false);
    EXPECT_EQ(answer.code, grpc::StatusCode::INVALID_ARGUMENT) << rpc << ": " << answer.message;
    EXPECT_THAT(answer.message,
                AllOf(HasSubstr(absl::StrCat("the ", rpc, " request is not a valid ", type, ": ")),
                      HasSubstr("invalid UTF-8"), Not(HasSubstr("Use the 'bytes' type"))))
        << rpc;
  }
  // What protobuf said went into the answers, not into the log.
  EXPECT_EQ(ProtobufLines(), 0) << server_->Log();
}

// A Map, a MapStream message, a Reduce or a Resolve may name at most 4,096 functions; their
// names are counted in the request's bytes before it is parsed (service/rpc/wire_shape.h), so
// ten million of them cost no more than their bytes (a Reduce of 10.5 M names took 708 MB to
// parse, a MapStream message of 5 M names and 1,024 documents 4.77 GB to parse and cut into
// parts, a Resolve of 33 M empty names 1.96 GB and a worker past its cap: security reviews).
TEST_F(RequestParsingTest, MoreFunctionsThanACallMayNameAreRefusedBeforeParsing) {
  std::string names;
  for (int i = 0; i < 4096; ++i) names += Field(1, "svc_fns.doubled");
  for (const char* rpc : {"Map", "MapStream", "Reduce", "Resolve"}) {
    const std::string method = absl::StrCat("/cnp.v1.Functions/", rpc);
    const std::string rest = std::string(rpc) == "Reduce"    ? Field(3, "[]")
                             : std::string(rpc) == "Resolve" ? ""
                                                             : Field(2, "{}");
    Answer refused = RawCall(unix_, method, names + Field(1, "svc_fns.doubled") + rest, false);
    EXPECT_EQ(refused.code, grpc::StatusCode::RESOURCE_EXHAUSTED) << rpc << ": " << refused.message;
    EXPECT_EQ(refused.message,
              "the request names more than the 4096 functions one call may name; split them "
              "over several calls")
        << rpc;
    EXPECT_EQ(refused.call_limit, "functions 4096") << rpc;
    Answer taken = RawCall(unix_, method, names + rest, false);
    EXPECT_NE(taken.code, grpc::StatusCode::RESOURCE_EXHAUSTED) << rpc << ": " << taken.message;
  }
}

// A request of many fields its type does not have is refused before it is parsed, whichever RPC
// it goes to: protobuf kept each as an unknown field, 66 MB of them 615-680 MB of memory.
TEST_F(RequestParsingTest, UnknownFieldsAreRefusedBeforeParsing) {
  // Field 15 is no field of any request but an Upload's, whose field 4 is reserved.
  auto many = [](int number) {
    std::string fields;
    for (int i = 0; i < 100000; ++i) fields += Field(number, "");
    return fields;
  };
  const std::string unknown = many(15);
  for (const auto& [rpc, type] : kMethods) {
    const std::string method = absl::StrCat("/cnp.v1.Functions/", rpc);
    const int number = rpc == "Upload" ? 4 : 15;
    Answer refused = RawCall(unix_, method, many(number), /*with_token=*/false);
    EXPECT_EQ(refused.code, grpc::StatusCode::INVALID_ARGUMENT) << rpc << ": " << refused.message;
    EXPECT_THAT(refused.message,
                AllOf(HasSubstr(absl::StrCat("the ", rpc, " request is not a valid ", type)),
                      HasSubstr(absl::StrCat(type, " has no field ", number))))
        << rpc;
  }
  // A known field of another wire type would be kept as an unknown one just the same: an
  // Upload's field 15 is a bool.
  Answer mistyped = RawCall(unix_, "/cnp.v1.Functions/Upload", unknown, /*with_token=*/false);
  EXPECT_EQ(mistyped.code, grpc::StatusCode::INVALID_ARGUMENT) << mistyped.message;
  EXPECT_THAT(mistyped.message, HasSubstr("field 15 (allow_system_databases) of "
                                          "cnp.v1.UploadRequest came as length-delimited bytes"));
  // Inside an Upload's file too.
  Answer nested = RawCall(unix_, "/cnp.v1.Functions/Upload", Field(1, Field(1, "a.yaml") + unknown),
                          /*with_token=*/false);
  EXPECT_EQ(nested.code, grpc::StatusCode::INVALID_ARGUMENT) << nested.message;
  EXPECT_THAT(nested.message, HasSubstr("cnp.v1.UploadFile has no field 15"));
}

// The health service needs no token (balancers use it), so a peer that may call nothing else
// reached gRPC's own parse of its request: 60 MB of unknown fields in a Check took the server
// from 23 to 594 MB (and kept 539). Its requests are walked as every other request is.
TEST_F(RequestParsingTest, HealthRequestsAreCheckedBeforeParsingAndStillAnswered) {
  std::string unknown;
  for (int i = 0; i < 100; ++i) unknown += Field(15, "");
  // Longer than a service name: refused by its size alone, unparsed (the health service needs
  // no token, and a 60 MB Check was parsed into a second copy: a security probe).
  std::string large;
  for (int i = 0; i < 100000; ++i) large += Field(15, "");
  for (const char* rpc : {"Check", "Watch"}) {
    const std::string method = absl::StrCat("/grpc.health.v1.Health/", rpc);
    Answer refused = RawCall(tcp_, method, unknown, /*with_token=*/false);
    EXPECT_EQ(refused.code, grpc::StatusCode::INVALID_ARGUMENT) << rpc << ": " << refused.message;
    EXPECT_THAT(refused.message,
                AllOf(HasSubstr(absl::StrCat("the Health/", rpc, " request is not a valid "
                                             "grpc.health.v1.HealthCheckRequest")),
                      HasSubstr("has no field 15")))
        << rpc;
    Answer too_large = RawCall(tcp_, method, large, /*with_token=*/false);
    EXPECT_EQ(too_large.code, grpc::StatusCode::INVALID_ARGUMENT) << rpc;
    EXPECT_THAT(too_large.message, HasSubstr("a health request of 200000 bytes")) << rpc;
  }
  // A well-formed Check, without the token, is answered: SERVING (status 1).
  Answer serving = RawCall(tcp_, "/grpc.health.v1.Health/Check", "", /*with_token=*/false);
  EXPECT_EQ(serving.code, grpc::StatusCode::OK) << serving.message;
  EXPECT_EQ(serving.last_message, std::string("\x08\x01", 2));
}

// Found by a security review: one byte (0x01, a tag of field number 0) crashed cnp-server, sent
// to the health service without a token or to any RPC. Refused as no message, and the server
// answers on.
TEST_F(RequestParsingTest, AFieldNumberedZeroIsRefusedAndTheServerLives) {
  const std::string zero_field = std::string("\x01") + std::string(8, '\0');
  for (const char* rpc : {"Check", "Watch"}) {
    Answer refused = RawCall(tcp_, absl::StrCat("/grpc.health.v1.Health/", rpc), zero_field,
                             /*with_token=*/false);
    EXPECT_EQ(refused.code, grpc::StatusCode::INVALID_ARGUMENT) << rpc << ": " << refused.message;
  }
  for (const auto& [rpc, type] : kMethods) {
    Answer refused = RawCall(tcp_, absl::StrCat("/cnp.v1.Functions/", rpc), zero_field,
                             /*with_token=*/true);
    EXPECT_EQ(refused.code, grpc::StatusCode::INVALID_ARGUMENT) << rpc << ": " << refused.message;
  }
  Answer serving = RawCall(tcp_, "/grpc.health.v1.Health/Check", "", /*with_token=*/false);
  EXPECT_EQ(serving.code, grpc::StatusCode::OK) << serving.message;
}

// An Upload of more than 1,024 files (empty ones: 33 M of them took 1.9 GB to parse) is refused
// before it is parsed.
TEST_F(RequestParsingTest, AnUploadOfTooManyFilesIsRefusedBeforeParsing) {
  std::string files;
  for (int i = 0; i < 1025; ++i) files += Field(1, "");
  Answer refused = RawCall(unix_, "/cnp.v1.Functions/Upload", files, /*with_token=*/false);
  EXPECT_EQ(refused.code, grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.message;
  EXPECT_EQ(refused.message,
            "the Upload carries more than the 1024 files one Upload may carry; upload them in "
            "several calls");
}

// A client without the token calling in a loop does not grow the access log as fast as it can
// call: one line per peer, method and reason per 10 s, the next counting the calls between.
TEST_F(RequestParsingTest, ManyCallsWithoutTheTokenAreOneAccessLogLine) {
  constexpr int kCalls = 200;
  for (int i = 0; i < kCalls; ++i) {
    Answer answer = RawCall(tcp_, "/cnp.v1.Functions/Resolve", Field(1, "svc_fns.doubled"),
                            /*with_token=*/false);
    ASSERT_EQ(answer.code, grpc::StatusCode::UNAUTHENTICATED) << answer.message;
  }
  ASSERT_TRUE(server_->WaitForLog("call=Resolve code=UNAUTHENTICATED", absl::Seconds(30)))
      << server_->Log();
  // With the token the call goes through, and is no refusal.
  Answer fine = RawCall(tcp_, "/cnp.v1.Functions/Resolve", Field(1, "svc_fns.doubled"), true);
  EXPECT_EQ(fine.code, grpc::StatusCode::OK) << fine.message;
  int lines = 0;
  for (absl::string_view line : absl::StrSplit(server_->Log(), '\n')) {
    if (absl::StrContains(line, "call=Resolve code=UNAUTHENTICATED")) {
      ++lines;
      EXPECT_THAT(line, AllOf(HasSubstr("reason=\"no bearer token\""), HasSubstr("calls=1")));
    }
  }
  EXPECT_EQ(lines, 1) << server_->Log();
}

TEST_F(RequestParsingTest, ManyRequestsThatDoNotParseWriteNoLogLineEach) {
  constexpr int kRequests = 200;
  for (int i = 0; i < kRequests; ++i) {
    Answer answer = RawCall(i % 2 == 0 ? tcp_ : unix_, "/cnp.v1.Functions/Resolve",
                            Field(1, "a.\xff"), /*with_token=*/false);
    ASSERT_EQ(answer.code, i % 2 == 0 ? grpc::StatusCode::UNAUTHENTICATED
                                      : grpc::StatusCode::INVALID_ARGUMENT)
        << answer.message;
  }
  // The server still serves, and the log holds no line of protobuf's.
  Answer fine = RawCall(unix_, "/cnp.v1.Functions/Resolve", Field(1, "svc_fns.doubled"), false);
  EXPECT_EQ(fine.code, grpc::StatusCode::OK) << fine.message;
  EXPECT_EQ(ProtobufLines(), 0) << server_->Log();
}

}  // namespace
}  // namespace cnp
