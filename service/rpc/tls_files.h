// The TLS certificate, key and client CA as gRPC reads them: a snapshot of the operator's files
// (--tls-cert, --tls-key, --tls-client-ca) held in memory files of this process, replaced whole
// by Reload (SIGHUP, and every minute) once the new files pass the checks made at start and the
// key goes with the certificate. gRPC's file watcher reads the snapshot every second
// (transport_security.cc), so a renewed certificate serves new connections a second after the
// reload. Read straight from the
// operator's files, a certificate renewed before its key (two files cannot change at once)
// broke every new handshake until the key followed; now such a reload is refused, said in the
// log, and the pair before goes on serving.
#pragma once

#include <ctime>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/rpc/transport_security.h"

namespace cnp::rpc {

class TlsFiles {
 public:
  // Reads and checks the files `security` names (it must use TLS).
  static absl::StatusOr<std::unique_ptr<TlsFiles>> Open(const TransportSecurity& security);
  ~TlsFiles();
  TlsFiles(const TlsFiles&) = delete;
  TlsFiles& operator=(const TlsFiles&) = delete;

  // Reads and checks the files again and, if they pass, makes them what gRPC reads from now on
  // (true when they changed, false when they hold what is served); else they are left as they
  // were and the error says why.
  absl::StatusOr<bool> Reload();

  // Where gRPC reads the key and certificate chain (one file holding both, so that it never
  // reads one without the other) and the client CA ("" without one).
  std::string identity_path() const;
  std::string client_ca_path() const;
  // The certificate served, for the log: its subject and when it expires.
  const std::string& certificate() const { return certificate_; }
  absl::Time expires() const { return expires_; }

 private:
  explicit TlsFiles(TransportSecurity security) : security_(std::move(security)) {}

  const TransportSecurity security_;
  int identity_fd_ = -1;
  int client_ca_fd_ = -1;
  std::time_t last_mtime_ = 0;
  // What the memory files hold, to tell a change.
  std::string identity_;
  std::string client_ca_;
  std::string certificate_;
  absl::Time expires_ = absl::InfiniteFuture();
};

}  // namespace cnp::rpc
