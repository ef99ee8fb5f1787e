#include "service/rpc/tls_files.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/pem_file.h"
#include "common/secret_file.h"

namespace cnp::rpc {
namespace {

struct Snapshot {
  std::string identity;  // the key, then the certificate chain
  std::string client_ca;
  std::string certificate;  // subject and expiry
};

// "CN=localhost, expires 2027-03-01 12:00 UTC", for the log.
std::string DescribeCertificate(X509* certificate) {
  char subject[256] = "";
  X509_NAME_oneline(X509_get_subject_name(certificate), subject, sizeof subject);
  std::string description = subject[0] == '/' ? subject + 1 : subject;
  std::tm expiry{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(certificate), &expiry) == 1) {
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &expiry);
    absl::StrAppend(&description, ", expires ", when);
  }
  return description;
}

// Whether `key` is the private key of the first certificate in `chain`, and what that
// certificate is; an error naming the files when not. OpenSSL's error queue is left empty for
// gRPC, which reads it on the same thread.
absl::StatusOr<std::string> CheckPair(const TransportSecurity& security, const std::string& chain,
                                      const std::string& key) {
  absl::Cleanup clear_errors = [] { ERR_clear_error(); };
  BIO* chain_bio = BIO_new_mem_buf(chain.data(), static_cast<int>(chain.size()));
  X509* certificate = chain_bio ? PEM_read_bio_X509(chain_bio, nullptr, nullptr, nullptr) : nullptr;
  BIO_free(chain_bio);
  absl::Cleanup free_certificate = [certificate] { X509_free(certificate); };
  if (certificate == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-cert ", security.tls_cert_file,
                                                   " holds no PEM certificate"));
  }
  BIO* key_bio = BIO_new_mem_buf(key.data(), static_cast<int>(key.size()));
  EVP_PKEY* private_key =
      key_bio ? PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr) : nullptr;
  BIO_free(key_bio);
  absl::Cleanup free_key = [private_key] { EVP_PKEY_free(private_key); };
  if (private_key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key ", security.tls_key_file,
        " holds no PEM private key that can be read without a passphrase"));
  }
  if (X509_check_private_key(certificate, private_key) != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the private key in ", security.tls_key_file, " is not the key of the certificate in ",
        security.tls_cert_file, " (", DescribeCertificate(certificate),
        "): replace both, each by renaming a new file into place, then reload"));
  }
  return DescribeCertificate(certificate);
}

absl::StatusOr<Snapshot> ReadSnapshot(const TransportSecurity& security) {
  absl::StatusOr<std::string> chain =
      ReadPemFile("tls-cert", security.tls_cert_file, PemFileWriters::kRootOrThisUser);
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::string> key =
      ReadSecretFile(security.tls_key_file, "the private key (--tls-key)");
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> certificate = CheckPair(security, *chain, *key);
  if (!certificate.ok()) return certificate.status();
  Snapshot snapshot{.identity = absl::StrCat(*key, "\n", *chain),
                    .certificate = *std::move(certificate)};
  if (!security.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile("tls-client-ca", security.tls_client_ca_file,
                                                 PemFileWriters::kRootOrThisUser);
    if (!ca.ok()) return ca.status();
    // An emptied CA file would leave gRPC on the CAs before, and a CA taken out trusted.
    BIO* ca_bio = BIO_new_mem_buf(ca->data(), static_cast<int>(ca->size()));
    X509* first = ca_bio ? PEM_read_bio_X509(ca_bio, nullptr, nullptr, nullptr) : nullptr;
    BIO_free(ca_bio);
    X509_free(first);
    ERR_clear_error();
    if (first == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls-client-ca ", security.tls_client_ca_file,
          " holds no PEM certificate: name the CAs whose client certificates are trusted"));
    }
    snapshot.client_ca = *std::move(ca);
  }
  return snapshot;
}

// A memory file holding `content`, readable by this process only (close-on-exec: no worker
// inherits the key). No copy of the key is left on a disk.
absl::StatusOr<int> MemoryFile(const std::string& content) {
  const int fd = ::memfd_create("cnp-tls", MFD_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot hold the TLS files in memory (memfd_create): ",
                                            std::strerror(errno)));
  }
  ::fchmod(fd, 0600);
  for (size_t written = 0; written < content.size();) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return absl::InternalError(
          absl::StrCat("cannot hold the TLS files in memory: ", std::strerror(errno)));
    }
    written += static_cast<size_t>(n);
  }
  return fd;
}

// Makes `fd` (kept, -1 the first time) the memory file holding `content`: a new file put at the
// same descriptor number at once (dup3), so that a read of its /proc path gets the old content
// or the new, whole.
absl::Status Replace(int& fd, const std::string& content) {
  absl::StatusOr<int> fresh = MemoryFile(content);
  if (!fresh.ok()) return fresh.status();
  if (fd < 0) {
    fd = *fresh;
    return absl::OkStatus();
  }
  const bool replaced = ::dup3(*fresh, fd, O_CLOEXEC) >= 0;
  const int error = errno;
  ::close(*fresh);
  if (!replaced) {
    return absl::InternalError(
        absl::StrCat("cannot replace the TLS files in memory: ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsFiles>> TlsFiles::Open(const TransportSecurity& security) {
  std::unique_ptr<TlsFiles> files(new TlsFiles(security));
  if (absl::Status s = files->Reload(); !s.ok()) return s;
  return files;
}

TlsFiles::~TlsFiles() {
  if (identity_fd_ >= 0) ::close(identity_fd_);
  if (client_ca_fd_ >= 0) ::close(client_ca_fd_);
}

absl::Status TlsFiles::Reload() {
  absl::StatusOr<Snapshot> snapshot = ReadSnapshot(security_);
  if (!snapshot.ok()) return snapshot.status();
  // The client CA first: a new certificate never serves before the CAs read with it.
  if (!security_.tls_client_ca_file.empty()) {
    if (absl::Status s = Replace(client_ca_fd_, snapshot->client_ca); !s.ok()) return s;
  }
  if (absl::Status s = Replace(identity_fd_, snapshot->identity); !s.ok()) return s;
  certificate_ = std::move(snapshot->certificate);
  return absl::OkStatus();
}

std::string TlsFiles::identity_path() const { return absl::StrCat("/proc/self/fd/", identity_fd_); }

std::string TlsFiles::client_ca_path() const {
  return client_ca_fd_ < 0 ? "" : absl::StrCat("/proc/self/fd/", client_ca_fd_);
}

}  // namespace cnp::rpc
