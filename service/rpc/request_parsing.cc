#include "service/rpc/request_parsing.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "service/common/protobuf_log.h"

namespace cnp::rpc {

absl::Status ParseRequest(grpc::ByteBuffer& bytes, const char* rpc,
                          google::protobuf::Message& request) {
  if (!bytes.Valid()) {  // an empty message
    request.Clear();
    return absl::OkStatus();
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
