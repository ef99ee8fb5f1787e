#include "client/lib/channel_security.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/lib/secret_file.h"

namespace cnp::client {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  }
  return text.str();
}

}  // namespace

absl::StatusOr<LoadedChannelSecurity> LoadChannelSecurity(const ChannelSecurity& security,
                                                          const std::string& target) {
  LoadedChannelSecurity loaded;
  if (!security.auth_token_file.empty()) {
    absl::StatusOr<std::string> token = ReadAuthToken(security.auth_token_file);
    if (!token.ok()) return token.status();
    loaded.authorization = absl::StrCat("Bearer ", *token);
  }
  if (absl::StartsWith(target, "unix:") || !security.UsesTls()) {
    loaded.credentials = grpc::InsecureChannelCredentials();
    return loaded;
  }
  if (security.tls_cert_file.empty() != security.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together; give both or neither");
  }
  grpc::SslCredentialsOptions options;
  if (!security.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("tls-ca", security.tls_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
  }
  if (!security.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("tls-cert", security.tls_cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadSecretFile(security.tls_key_file, "the private key");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  loaded.credentials = grpc::SslCredentials(options);
  return loaded;
}

}  // namespace cnp::client
