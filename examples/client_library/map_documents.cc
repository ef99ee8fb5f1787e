// map_documents TARGET FUNCTION DOC...: maps each JSON document with FUNCTION on the cnp-server
// at TARGET and prints each document's rows, one line each; a failed call prints what a caller
// would act on - the code, and which of the client library's marks the status carries.
//
// On one line (a backslash would end this comment's line in C++ too):
//   bazel run //examples/client_library:map_documents -- unix:/tmp/cnp-$(id -u)/cnp.sock
//       myviews.townmap '{"_id":"a","town":"Oslo"}'
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/lib/cnp_client.h"
#include "common/call_limit.h"
#include "common/retry_advice.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " TARGET FUNCTION DOC...\n";
    return 2;
  }
  const std::string target = argv[1];
  const std::vector<std::string> docs(argv + 3, argv + argc);
  // The token and TLS, when the server wants them, go in ChannelSecurity; here none.
  absl::StatusOr<std::unique_ptr<cnp::client::Client>> client = cnp::client::Client::Connect(
      target, cnp::client::ChannelSecurity{},
      cnp::client::ClientOptions{.retry = cnp::client::RetryPolicy::kNone,
                                 .call_timeout = absl::Seconds(30)});
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return 1;
  }
  absl::StatusOr<cnp::v1::MapResponse> mapped = (*client)->Map({argv[2]}, docs);
  if (mapped.ok()) {
    for (const cnp::v1::MapResult& result : mapped->results()) std::cout << result.rows() << "\n";
    return 0;
  }
  const absl::Status& failed = mapped.status();
  std::cout << absl::StatusCodeToString(failed.code());
  // A caller that retries by itself: a crashed worker's request must not be sent again; a
  // server that did not answer may be tried again (or another replica).
  if (cnp::IsNotRetryable(failed)) std::cout << " not-retryable";
  if (cnp::client::IsServerUnreachable(failed)) std::cout << " server-unreachable";
  if (auto limit = cnp::CallLimitOf(failed)) std::cout << " server-limit=" << cnp::CallLimitText(*limit);
  if (auto limit = cnp::client::ClientLimitOf(failed)) {
    std::cout << " client-limit=" << cnp::CallLimitText(*limit);
  }
  std::cout << "\n" << failed.message() << "\n";
  return 1;
}
