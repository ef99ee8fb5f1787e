// A gRPC client that goes away without a word: call_cancellation_test runs it, waits until its
// MapStream message is running in a worker, and kills it with SIGKILL. Its connection then
// closes with no RST_STREAM (no cancel) sent for the stream, as when a client process is killed
// or crashes; the server learns of it only from the closed connection.
//
// Usage: disconnecting_client TARGET SIGNAL_FIFO
// Exits by itself only if something went wrong first (2: the message could not be sent, 3: the
// stream ended before the kill): the test then sees an exit instead of SIGKILL.
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "grpcpp/grpcpp.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: disconnecting_client TARGET SIGNAL_FIFO\n";
    return 1;
  }
  const std::string target = argv[1];
  const std::string signal = argv[2];
  auto stub = cnp::v1::Functions::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->MapStream(&context);
  // 20,000 documents at 10 ms each: minutes of work for one worker. The first one tells the
  // test (through the fifo) that the message has reached its worker.
  cnp::v1::MapRequest request;
  request.add_functions("rpc_fns.slow_map");
  for (int i = 0; i < 20000; ++i) {
    request.add_docs(i == 0 ? absl::StrCat(R"({"_id":"d0","signal":")", signal, R"("})")
                            : absl::StrCat(R"({"_id":"d)", i, R"("})"));
  }
  if (!stream->Write(request)) {
    std::cerr << "disconnecting_client: the message could not be sent\n";
    return 2;
  }
  // Waits for an answer that must not come before the test kills this process.
  cnp::v1::MapResponse response;
  const bool answered = stream->Read(&response);
  std::cerr << "disconnecting_client: the stream " << (answered ? "answered" : "ended")
            << " before the kill\n";
  return 3;
}
