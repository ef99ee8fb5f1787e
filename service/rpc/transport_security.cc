#include "service/rpc/transport_security.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "common/pem_file.h"
#include "common/secret_file.h"

namespace cnp::rpc {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpServerCredentials(
    const TransportSecurity& security) {
  if (!security.UsesTls()) return grpc::InsecureServerCredentials();
  // Checked here, as at every start: a file others could change or read is refused.
  absl::StatusOr<std::string> cert =
      ReadPemFile("tls-cert", security.tls_cert_file, PemFileWriters::kRootOrThisUser);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key =
      ReadSecretFile(security.tls_key_file, "the private key (--tls-key)");
  if (!key.ok()) return key.status();
  if (!security.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile(
        "tls-client-ca", security.tls_client_ca_file, PemFileWriters::kRootOrThisUser);
    if (!ca.ok()) return ca.status();
  }
  // gRPC reads the files again every kTlsFilesReadEvery, so that a renewed certificate (a
  // certbot or cert-manager renewal, a new client CA) serves new connections without a restart.
  // A certificate and key that do not match (one replaced, the other not yet) are not taken:
  // the pair before stays until both are new. Who may write the files was checked above, and
  // only those users can put new ones there.
  auto files = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      security.tls_key_file, security.tls_cert_file, security.tls_client_ca_file,
      static_cast<unsigned int>(absl::ToInt64Seconds(kTlsFilesReadEvery)));
  grpc::experimental::TlsServerCredentialsOptions options(std::move(files));
  options.watch_identity_key_cert_pairs();
  if (security.tls_client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace cnp::rpc
