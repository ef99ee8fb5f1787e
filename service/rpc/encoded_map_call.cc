#include "service/rpc/encoded_map_call.h"

#include <malloc.h>

#include <string>
#include <vector>

#include "service/rpc/status_mapping.h"

namespace cnp::rpc {
namespace {

// The request's bytes in one piece (gRPC receives a large message as many slices, and a
// document may straddle two).
bool Flatten(grpc::ByteBuffer& buffer, std::string& bytes) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  bytes.reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return true;
}

// The parts as one message, without a copy: each slice owns its part's string.
grpc::ByteBuffer ToByteBuffer(std::vector<std::string>& parts) {
  std::vector<grpc::Slice> slices;
  slices.reserve(parts.size());
  for (std::string& part : parts) {
    if (part.empty()) continue;
    auto* owned = new std::string(std::move(part));
    slices.emplace_back(
        owned->data(), owned->size(), [](void* p) { delete static_cast<std::string*>(p); },
        owned);
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace

grpc::Status ServeEncodedMap(FunctionCalls& calls, absl::Time deadline, grpc::ByteBuffer& request,
                             grpc::ByteBuffer& response) {
  size_t moved = request.Length();
  absl::Status status;
  {
    std::string bytes;
    if (!Flatten(request, bytes)) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "cannot read the request's bytes");
    }
    request.Clear();
    std::vector<std::string> parts;
    status = calls.MapEncoded(bytes, deadline, parts);
    if (status.ok()) {
      for (const std::string& part : parts) moved += part.size();
      response = ToByteBuffer(parts);
    }
  }
  // The request's copy and every task and reply of the call are gone by now; the response
  // is one block per part, freed when gRPC has sent it.
  if (moved >= kGiveBackAfterBytes) ::malloc_trim(0);
  return ToGrpcStatus(status);
}

}  // namespace cnp::rpc
