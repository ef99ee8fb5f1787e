// A Session stream (CouchDB's line protocol over gRPC, what a remote cnp-adapter opens) to a
// test's cnp-server, one line at a time.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/lib/cnp_client.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/server_process.h"

namespace cnp::testing {

class SessionStream {
 public:
  // Bounded by `patience`, so that a stream the server never answers fails the test instead of
  // hanging it.
  explicit SessionStream(const ServerProcess& server,
                         absl::Duration patience = absl::Minutes(2));
  // On `client`'s connection, with its token if it has one.
  explicit SessionStream(std::unique_ptr<client::Client> client,
                         absl::Duration patience = absl::Minutes(2));

  // Writes one line (a "reset" is answered by nothing: the adapter answers it).
  bool Send(const std::string& line);
  // The next answer's lines, or nothing when the stream ended.
  std::optional<std::vector<std::string>> Read();
  // Send, then Read.
  std::optional<std::vector<std::string>> Ask(const std::string& line);
  // Ends the stream from this side and returns its status.
  grpc::Status Finish();

 private:
  std::unique_ptr<client::Client> client_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SessionInput, v1::SessionOutput>> stream_;
};

}  // namespace cnp::testing
