#include "service/rpc/transport_security.h"

#include "absl/strings/str_cat.h"
#include "common/pem_file.h"
#include "common/secret_file.h"

namespace cnp::rpc {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpServerCredentials(
    const TransportSecurity& security) {
  if (!security.UsesTls()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert =
      ReadPemFile("tls-cert", security.tls_cert_file, PemFileWriters::kRootOrThisUser);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key =
      ReadSecretFile(security.tls_key_file, "the private key (--tls-key)");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!security.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile(
        "tls-client-ca", security.tls_client_ca_file, PemFileWriters::kRootOrThisUser);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace cnp::rpc
