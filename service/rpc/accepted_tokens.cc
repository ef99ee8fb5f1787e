#include "service/rpc/accepted_tokens.h"

#include <openssl/sha.h>

#include <utility>

#include "absl/strings/str_format.h"

namespace cnp::rpc {

AcceptedTokens::AcceptedTokens(std::vector<std::string> tokens)
    : required_(!tokens.empty()),
      tokens_(std::make_shared<const std::vector<std::string>>(std::move(tokens))) {}

TokenCheck AcceptedTokens::Check(std::optional<absl::string_view> header) const {
  if (!required_) return TokenCheck::kAccepted;
  std::shared_ptr<const std::vector<std::string>> tokens;
  {
    absl::ReaderMutexLock lock(&mu_);
    tokens = tokens_;
  }
  return CheckBearerAuthorization(header, *tokens);
}

void AcceptedTokens::Replace(std::vector<std::string> tokens) {
  if (!required_ || tokens.empty()) return;
  auto replacement = std::make_shared<const std::vector<std::string>>(std::move(tokens));
  absl::MutexLock lock(&mu_);
  tokens_ = std::move(replacement);
  // Under the lock, after the swap: whoever sees the new generation checks the new tokens.
  generation_.fetch_add(1, std::memory_order_release);
}

std::string TokenFingerprint(absl::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  std::string hex;
  for (int i = 0; i < 4; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

}  // namespace cnp::rpc
