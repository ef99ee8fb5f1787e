#include "client/upload/local_files.h"

#include "absl/strings/str_cat.h"
#include "common/file_text.h"

namespace cnp::client::upload {

absl::StatusOr<std::string> ReadBounded(const std::string& path, int64_t max_bytes) {
  return ReadFileText(path, max_bytes);
}

absl::StatusOr<std::string> ReadCaCertificates(const std::string& path) {
  constexpr int64_t kMaxCaBytes = 1 << 20;
  absl::StatusOr<std::string> pem = ReadBounded(path, kMaxCaBytes);
  if (!pem.ok()) return absl::NotFoundError(absl::StrCat("--ca-file: ", pem.status().message()));
  if (static_cast<int64_t>(pem->size()) > kMaxCaBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ca-file: ", path, " is larger than 1 MiB; is it a PEM certificate file?"));
  }
  if (pem->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ca-file: ", path, " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  return pem;
}

}  // namespace cnp::client::upload
