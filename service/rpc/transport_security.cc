#include "service/rpc/transport_security.h"

#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "service/rpc/tls_files.h"

namespace cnp::rpc {

std::shared_ptr<grpc::ServerCredentials> TcpServerCredentials(const TransportSecurity& security,
                                                              const TlsFiles* files) {
  if (!security.UsesTls() || files == nullptr) return grpc::InsecureServerCredentials();
  // gRPC reads the snapshot again every second, so that what a reload made of the files
  // serves new connections a second later.
  auto watched = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files->identity_path(), files->identity_path(), files->client_ca_path(),
      /*refresh_interval_sec=*/1);
  grpc::experimental::TlsServerCredentialsOptions options(std::move(watched));
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
