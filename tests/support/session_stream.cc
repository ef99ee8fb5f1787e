#include "tests/support/session_stream.h"

namespace cnp::testing {

SessionStream::SessionStream(const ServerProcess& server, absl::Duration patience)
    : SessionStream(server.Connect(), patience) {}

SessionStream::SessionStream(std::unique_ptr<client::Client> client, absl::Duration patience)
    : client_(std::move(client)) {
  client_->PrepareContext(context_, patience);
  stream_ = client_->stub().Session(&context_);
}

bool SessionStream::Send(const std::string& line) {
  v1::SessionInput input;
  input.set_line(line);
  return stream_->Write(input);
}

std::optional<std::vector<std::string>> SessionStream::Read() {
  v1::SessionOutput output;
  if (!stream_->Read(&output)) return std::nullopt;
  return std::vector<std::string>(output.lines().begin(), output.lines().end());
}

std::optional<std::vector<std::string>> SessionStream::Ask(const std::string& line) {
  if (!Send(line)) return std::nullopt;
  return Read();
}

grpc::Status SessionStream::Finish() {
  stream_->WritesDone();
  return stream_->Finish();
}

}  // namespace cnp::testing
