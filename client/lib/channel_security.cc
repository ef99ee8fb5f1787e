#include "client/lib/channel_security.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/lib/channel_target.h"
#include "common/pem_file.h"
#include "common/secret_file.h"
#include "common/unix_target.h"

namespace cnp::client {

absl::Status CheckTlsTarget(const ChannelSecurity& security, const std::string& target) {
  if (absl::Status path = CheckNotABarePath(target); !path.ok()) return path;
  if (!security.UsesTls()) return absl::OkStatus();
  if (IsUnixTarget(target)) {
    // Taken and ignored, they would let a user believe the connection was TLS, or that a
    // certificate they named was checked (a CLI probe: --tls-cert=/nonexistent passed).
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS (--tls, --tls-ca, --tls-cert, --tls-key; ChannelSecurity's tls fields in the "
        "client library) is for TCP targets, and ", target, " is a unix socket, which never "
        "uses it (the socket's permissions and the server's check of its peer protect it): "
        "leave the TLS options out, or name the server's TCP address"));
  }
  if (!absl::StrContains(target, ',')) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "TLS (--tls, --tls-ca, --tls-cert; ChannelSecurity's tls fields in the client library) "
      "cannot be used with a list of addresses (--target=", target, "): each replica's "
      "certificate would be checked against the whole list as one name; give the replicas one "
      "DNS name their certificates carry and use --target=dns:///NAME:PORT"));
}

absl::Status CheckSecretStaysPrivate(const ChannelSecurity& security, const std::string& target,
                                     absl::string_view secret) {
  if (security.UsesTls() || TargetStaysOnThisHost(target)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "refusing to send ", secret, " in plaintext to ", target,
      ", which is not a loopback address (127.0.0.0/8, ::1, localhost) or a unix socket: anyone "
      "on the way could read it; add --tls (or --tls-ca=PEM; ChannelSecurity::tls or "
      "tls_ca_file in the client library) to reach the service over TLS (cnp-server's "
      "--tls-cert/--tls-key)"));
}

void KeepLocalTargetOffProxies(const std::string& target, grpc::ChannelArguments& args) {
  if (TargetStaysOnThisHost(target)) args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
}

absl::StatusOr<LoadedChannelSecurity> LoadChannelSecurity(const ChannelSecurity& security,
                                                          const std::string& target) {
  if (absl::Status s = CheckTlsTarget(security, target); !s.ok()) return s;
  LoadedChannelSecurity loaded;
  if (!security.auth_token_file.empty()) {
    if (absl::Status s = CheckSecretStaysPrivate(security, target, kBearerToken); !s.ok()) {
      return s;
    }
    absl::StatusOr<std::string> token = ReadAuthToken(security.auth_token_file);
    if (!token.ok()) return token.status();
    loaded.authorization = absl::StrCat("Bearer ", *token);
  }
  if (!security.UsesTls() && !security.insecure && !TargetStaysOnThisHost(target)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to connect in plaintext to ", target, ", which is not a loopback address "
        "(127.0.0.0/8, ::1, localhost) or a unix socket: anyone on the way could read the "
        "documents and answers, or pose as the service; add --tls (or --tls-ca=PEM; "
        "ChannelSecurity::tls or tls_ca_file in the client library) to reach it over TLS "
        "(cnp-server's --tls-cert/--tls-key), or --insecure (ChannelSecurity::insecure) for a "
        "network you trust"));
  }
  if (IsUnixTarget(target) || !security.UsesTls()) {
    loaded.credentials = grpc::InsecureChannelCredentials();
    return loaded;
  }
  if (security.tls_cert_file.empty() != security.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key (ChannelSecurity::tls_cert_file and tls_key_file in the "
        "client library) go together; give both or neither");
  }
  grpc::SslCredentialsOptions options;
  if (!security.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemFile("tls-ca", security.tls_ca_file, PemFileWriters::kNotEveryUser);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
  }
  if (!security.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPemFile("tls-cert", security.tls_cert_file, PemFileWriters::kNotEveryUser);
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
