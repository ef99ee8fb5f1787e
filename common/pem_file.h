// A public PEM file named by a flag (a certificate, a CA bundle): the one reader for the TLS
// files of cnp-server and its clients (--tls-cert, --tls-ca, --tls-client-ca) and for the CA
// certificates of an https:// CouchDB (--ca-file of cnp upload, sync and derive).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cnp {

// Past this a file is not what it claims to be (a CA bundle is a few hundred KiB at most):
// reading stops here, so a huge file or a device is never read into memory.
inline constexpr int64_t kMaxPemFileBytes = int64_t{1} << 20;

// Who may change a PEM file that is read. Whoever may write a CA file decides whom the reader
// trusts: another local user who could add a CA to cnp-server's --tls-client-ca let their own
// client certificates past mutual TLS.
enum class PemFileWriters {
  // cnp-server's files: root's or the server's own user's, writable by neither group nor
  // others (common/code_ownership.h's rule).
  kRootOrThisUser,
  // A client's: not writable by every user. A user's client may trust a CA file of the
  // service's user (cnp), and a private group's write bit is the user's own.
  kNotEveryUser,
};

// The content of the PEM file `path` given with --`flag`. The error says why it is refused,
// prefixed with "--FLAG: ": NOT_FOUND "cannot read PATH: <the system's reason>";
// PERMISSION_DENIED when others than `writers` allows could change it (with the fix); or
// INVALID_ARGUMENT when it is larger than kMaxPemFileBytes or holds no
// "-----BEGIN CERTIFICATE-----" (empty, a private key, DER, the wrong file).
absl::StatusOr<std::string> ReadPemFile(absl::string_view flag, const std::string& path,
                                        PemFileWriters writers);

}  // namespace cnp
