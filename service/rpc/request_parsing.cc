#include "service/rpc/request_parsing.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "cnp/v1/functions.pb.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "service/calls/function_calls.h"
#include "service/common/protobuf_log.h"

namespace cnp::rpc {

absl::Status ParseRequest(grpc::ByteBuffer& bytes, const char* rpc,
                          google::protobuf::Message& request) {
  if (!bytes.Valid()) {  // an empty message
    request.Clear();
    return absl::OkStatus();
  }
  // A Map's or a Reduce's names are counted before any is built (function_calls.h).
  if (request.GetDescriptor() == v1::MapRequest::descriptor() ||
      request.GetDescriptor() == v1::ReduceRequest::descriptor()) {
    grpc::ProtoBufferReader scan(&bytes);
    if (scan.status().ok()) {
      if (absl::Status counted = calls::CheckFunctionCountBeforeParsing(scan); !counted.ok()) {
        bytes.Clear();
        return counted;
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
