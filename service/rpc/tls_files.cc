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

#include <algorithm>
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
  absl::Time expires = absl::InfiniteFuture();
};

// When `certificate` stops being valid.
absl::Time NotAfter(X509* certificate) {
  std::tm expiry{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(certificate), &expiry) != 1) {
    return absl::InfiniteFuture();
  }
  return absl::FromUnixSeconds(::timegm(&expiry));
}

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
// certificate is (and when it expires, in `expires`); an error naming the files when not. OpenSSL's error queue is left empty: it
// is per thread, and whatever reads it next on this one must not find these errors.
absl::StatusOr<std::string> CheckPair(const TransportSecurity& security, const std::string& chain,
                                      const std::string& key, absl::Time& expires) {
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
  // No passphrase: OpenSSL's default would ask for one on the terminal or stdin, and the
  // server (its control loop, at a reload) would wait there.
  EVP_PKEY* private_key =
      key_bio ? PEM_read_bio_PrivateKey(
                    key_bio, nullptr, [](char*, int, int, void*) { return 0; }, nullptr)
              : nullptr;
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
  expires = NotAfter(certificate);
  return DescribeCertificate(certificate);
}

absl::StatusOr<Snapshot> ReadSnapshot(const TransportSecurity& security) {
  absl::StatusOr<std::string> chain =
      ReadPemFile("tls-cert", security.tls_cert_file, PemFileWriters::kRootOrThisUser);
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::string> key =
      ReadSecretFile(security.tls_key_file, "the private key (--tls-key)");
  if (!key.ok()) return key.status();
  absl::Time expires;
  absl::StatusOr<std::string> certificate = CheckPair(security, *chain, *key, expires);
  if (!certificate.ok()) return certificate.status();
  Snapshot snapshot{.identity = absl::StrCat(*key, "\n", *chain),
                    .certificate = *std::move(certificate),
                    .expires = expires};
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

// A memory file holding `content`, modified at `mtime`, readable by this process only
// (close-on-exec: no worker inherits the key). No copy of the key is left in a file.
absl::StatusOr<int> MemoryFile(const std::string& content, std::time_t mtime) {
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
  const timespec times[2] = {{.tv_sec = mtime, .tv_nsec = 0}, {.tv_sec = mtime, .tv_nsec = 0}};
  ::futimens(fd, times);
  return fd;
}

// Puts `fresh` at descriptor `fd` (kept, -1 the first time) at once (dup3), so that a read of
// its /proc path gets the old file or the new, whole.
absl::Status Swap(int& fd, int fresh) {
  if (fd < 0) {
    fd = fresh;
    return absl::OkStatus();
  }
  const bool swapped = ::dup3(fresh, fd, O_CLOEXEC) >= 0;
  const int error = errno;
  ::close(fresh);
  if (!swapped) {
    return absl::InternalError(
        absl::StrCat("cannot replace the TLS files in memory: ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsFiles>> TlsFiles::Open(const TransportSecurity& security) {
  std::unique_ptr<TlsFiles> files(new TlsFiles(security));
  if (absl::StatusOr<bool> read = files->Reload(); !read.ok()) return read.status();
  return files;
}

// The descriptors stay open until the process ends: gRPC's file watcher may read their paths
// until its last reference goes, and a number closed and reused would have it read another
// file.
TlsFiles::~TlsFiles() = default;

absl::StatusOr<bool> TlsFiles::Reload() {
  absl::StatusOr<Snapshot> snapshot = ReadSnapshot(security_);
  if (!snapshot.ok()) return snapshot.status();
  if (identity_fd_ >= 0 && snapshot->identity == identity_ && snapshot->client_ca == client_ca_) {
    return false;
  }
  // gRPC reads the key and the chain by opening the path twice, and takes them as a pair when
  // the file's modification time (whole seconds) did not change between: every new file is
  // stamped a second after the one before, so that a swap between its two reads is seen.
  const std::time_t mtime = std::max(std::time(nullptr), last_mtime_ + 1);
  // Both made before either is swapped: a failure leaves what gRPC reads as it was.
  int fresh_ca = -1;
  if (!security_.tls_client_ca_file.empty()) {
    absl::StatusOr<int> made = MemoryFile(snapshot->client_ca, mtime);
    if (!made.ok()) return made.status();
    fresh_ca = *made;
  }
  absl::StatusOr<int> fresh_identity = MemoryFile(snapshot->identity, mtime);
  if (!fresh_identity.ok()) {
    if (fresh_ca >= 0) ::close(fresh_ca);
    return fresh_identity.status();
  }
  // The client CA first: a new certificate never serves before the CAs read with it.
  if (fresh_ca >= 0) {
    if (absl::Status s = Swap(client_ca_fd_, fresh_ca); !s.ok()) {
      ::close(*fresh_identity);
      return s;
    }
  }
  if (absl::Status s = Swap(identity_fd_, *fresh_identity); !s.ok()) return s;
  last_mtime_ = mtime;
  identity_ = std::move(snapshot->identity);
  client_ca_ = std::move(snapshot->client_ca);
  certificate_ = std::move(snapshot->certificate);
  expires_ = snapshot->expires;
  return true;
}

std::string TlsFiles::identity_path() const { return absl::StrCat("/proc/self/fd/", identity_fd_); }

std::string TlsFiles::client_ca_path() const {
  return client_ca_fd_ < 0 ? "" : absl::StrCat("/proc/self/fd/", client_ca_fd_);
}

}  // namespace cnp::rpc
