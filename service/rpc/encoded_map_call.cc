#include "service/rpc/encoded_map_call.h"

#include <malloc.h>

#include <atomic>
#include <chrono>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "cnp/v1/functions.pb.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "service/common/log.h"
#include "service/rpc/request_parsing.h"

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

// At most once a second, from whichever thread releases a large call: a trim walks and locks
// every arena, and a MapStream of large messages would otherwise stall every thread's
// allocations (and log a line) for each of them. What a skipped trim leaves goes back at the
// next, or at the server's own every 10 s (main.cc).
void GiveMemoryBack(size_t moved) {
  if (moved < kGiveBackAfterBytes) return;
  static std::atomic<int64_t> last_trim_ns{std::numeric_limits<int64_t>::min() / 2};
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t last = last_trim_ns.load(std::memory_order_relaxed);
  if (now - last < absl::ToInt64Nanoseconds(kGiveBackAtMostEvery)) return;
  if (!last_trim_ns.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  ::malloc_trim(0);
  LogInfo("gave the memory of a ", moved >> 20, " MiB Map call back to the system");
}

// A response's parts, owned by the slices gRPC sends: the last one released gives the call's
// memory back (only then is all of it free).
struct SentParts {
  std::vector<std::string> parts;
  std::atomic<size_t> slices_left{0};
  size_t moved = 0;

  static void Release(void* self) {
    auto* sent = static_cast<SentParts*>(self);
    if (--sent->slices_left > 0) return;
    const size_t moved = sent->moved;
    delete sent;
    GiveMemoryBack(moved);
  }
};

// The parts as one message, without a copy. A response with nothing in it (a Map of no
// documents) is still a message, of no bytes: a ByteBuffer of no slices is no message at all,
// which gRPC's clients take for a failed call ("No message returned for unary request").
grpc::ByteBuffer ToByteBuffer(std::vector<std::string> parts, size_t moved) {
  auto* sent = new SentParts{.parts = std::move(parts), .moved = moved};
  std::vector<grpc::Slice> slices;
  for (std::string& part : sent->parts) {
    if (!part.empty()) slices.emplace_back(part.data(), part.size(), &SentParts::Release, sent);
  }
  sent->slices_left = slices.size();
  if (slices.empty()) {
    delete sent;
    GiveMemoryBack(moved);
    grpc::Slice nothing;
    return grpc::ByteBuffer(&nothing, 1);
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

// The answer of a Map whose request moved `moved` bytes: its parts as one message, or the error.
absl::Status Answer(const absl::Status& status, std::vector<std::string> parts, size_t moved,
                    grpc::ByteBuffer& response) {
  if (!status.ok()) {
    parts.clear();
    GiveMemoryBack(moved);
    return status;
  }
  for (const std::string& part : parts) moved += part.size();
  response = ToByteBuffer(std::move(parts), moved);
  return absl::OkStatus();
}

}  // namespace

asio::awaitable<absl::Status> ServeEncodedMap(calls::FunctionCalls& calls, absl::Time deadline,
                                              grpc::ByteBuffer& request,
                                              grpc::ByteBuffer& response,
                                              calls::AnswerGrowth grown, const char* rpc) {
  const size_t moved = request.Length();
  std::vector<std::string> parts;
  absl::Status status;
  {
    // Walked before it is copied into one piece, so that a request refused costs its bytes
    // once. Its documents are counted in place by MapEncoded, which says how many there were.
    static const std::vector<RepeatedFieldCap> caps =
        RequestFieldCaps(std::numeric_limits<int64_t>::max());
    if (request.Valid()) {
      grpc::ProtoBufferReader wire(&request);
      if (wire.status().ok()) {
        status = CheckRequestShape(wire, rpc, *v1::MapRequest::descriptor(), caps);
      }
    }
    std::string bytes;
    if (status.ok() && !Flatten(request, bytes)) {
      co_return absl::InternalError("cannot read the request's bytes");
    }
    request.Clear();
    if (status.ok()) {
      status = co_await calls.MapEncoded(bytes, deadline, parts, std::move(grown), rpc);
    }
  }
  co_return Answer(status, std::move(parts), moved, response);
}

}  // namespace cnp::rpc
