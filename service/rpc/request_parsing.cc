#include "service/rpc/request_parsing.h"

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "cnp/v1/functions.pb.h"
#include "cnp/v1/upload.pb.h"
#include "common/call_limit.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "service/calls/function_calls.h"
#include "service/common/protobuf_log.h"

namespace cnp::rpc {
namespace {

absl::Status TooManyFunctions(int64_t) { return calls::TooManyFunctions(); }

absl::Status TooManyFiles(int64_t most) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the Upload carries more than the ", most,
      " files one Upload may carry; upload them in several calls"));
}

absl::Status TooManyDocuments(int64_t most) {
  return WithCallLimit(
      absl::ResourceExhaustedError(absl::StrCat(
          "the request holds more than the ", most,
          " documents one call may carry; split the batch, or raise cnp-server's "
          "--max-docs-per-call")),
      {CallLimit::Kind::kDocuments, most});
}

}  // namespace

std::vector<RepeatedFieldCap> RequestFieldCaps(int64_t max_docs_per_call) {
  auto field = [](const google::protobuf::Descriptor* type, int number) {
    return type->FindFieldByNumber(number);
  };
  return {
      {field(v1::MapRequest::descriptor(), v1::MapRequest::kFunctionsFieldNumber),
       kMaxFunctionsPerCall, &TooManyFunctions},
      {field(v1::ReduceRequest::descriptor(), v1::ReduceRequest::kFunctionsFieldNumber),
       kMaxFunctionsPerCall, &TooManyFunctions},
      {field(v1::ResolveRequest::descriptor(), v1::ResolveRequest::kFunctionsFieldNumber),
       kMaxFunctionsPerCall, &TooManyFunctions},
      {field(v1::UploadRequest::descriptor(), v1::UploadRequest::kFilesFieldNumber),
       kMaxUploadFiles, &TooManyFiles},
      {field(v1::MapRequest::descriptor(), v1::MapRequest::kDocsFieldNumber), max_docs_per_call,
       &TooManyDocuments},
  };
}

absl::Status CheckRequestShape(google::protobuf::io::ZeroCopyInputStream& wire, const char* rpc,
                               const google::protobuf::Descriptor& type,
                               absl::Span<const RepeatedFieldCap> caps) {
  absl::Status shaped = CheckWireShape(type, wire, caps);
  if (shaped.ok() || shaped.code() != absl::StatusCode::kInvalidArgument) return shaped;
  return absl::InvalidArgumentError(absl::StrCat("the ", rpc, " request is not a valid ",
                                                 type.full_name(), ": ", shaped.message()));
}

absl::Status ParseRequest(grpc::ByteBuffer& bytes, const char* rpc,
                          google::protobuf::Message& request,
                          absl::Span<const RepeatedFieldCap> caps) {
  if (!bytes.Valid()) {  // an empty message
    request.Clear();
    return absl::OkStatus();
  }
  {
    grpc::ProtoBufferReader scan(&bytes);
    if (scan.status().ok()) {
      if (absl::Status shaped = CheckRequestShape(scan, rpc, *request.GetDescriptor(), caps);
          !shaped.ok()) {
        bytes.Clear();
        return shaped;
      }
    }
  }
  bool parsed = false;
  ProtobufLogCapture protobuf_said;
  {
    grpc::ProtoBufferReader reader(&bytes);
    parsed = reader.status().ok() && request.ParseFromZeroCopyStream(&reader);
  }
  bytes.Clear();
  if (parsed) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("the ", rpc, " request is not a valid ",
                                                 request.GetDescriptor()->full_name(), ": ",
                                                 protobuf_said.Reason()));
}

}  // namespace cnp::rpc
