// The bearer tokens a call over TCP may carry (--auth-token-file, one per line), shared by both
// checks (bearer_token_processor.h on TLS listeners, call_gate.h on plaintext ones). SIGHUP
// reads the file again (RpcServer::ReloadTokens), so that a token is rotated without a restart
// and without a refused call: add the new token as a second line, SIGHUP, move the clients
// over, remove the old line, SIGHUP. A check runs on one of gRPC's threads while a reload may
// swap the list: it keeps the list it started with.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "service/rpc/bearer_authorization.h"

namespace cnp::rpc {

class AcceptedTokens {
 public:
  // `tokens` empty: none is required, for good (whether calls need a token is decided at
  // start, with the listeners it allows: server_config.cc).
  explicit AcceptedTokens(std::vector<std::string> tokens);

  bool Required() const { return required_; }

  // How a call's authorization header (nullopt: none) compares with the tokens; kAccepted
  // when none is required.
  TokenCheck Check(std::optional<absl::string_view> header) const;

  // The tokens from now on; `tokens` must not be empty when tokens are required, and is
  // ignored when not.
  void Replace(std::vector<std::string> tokens);

  // Counts the Replace calls: a stream admitted earlier checks its token again only when this
  // has moved since (call_gate.h, Readmit), an atomic load per message rather than a compare.
  uint64_t Generation() const { return generation_.load(std::memory_order_acquire); }

 private:
  const bool required_;
  std::atomic<uint64_t> generation_{0};
  mutable absl::Mutex mu_;
  std::shared_ptr<const std::vector<std::string>> tokens_ ABSL_GUARDED_BY(mu_);
};

// The first 8 hex digits of `token`'s SHA-256, for the log (`printf %s TOKEN | sha256sum`): tells
// tokens apart without showing one.
std::string TokenFingerprint(absl::string_view token);

}  // namespace cnp::rpc
