#include "common/pem_file.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_text.h"

namespace cnp {

absl::StatusOr<std::string> ReadPemFile(absl::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFileText(path, kMaxPemFileBytes);
  if (!pem.ok()) {
    return absl::NotFoundError(absl::StrCat("--", flag, ": ", pem.status().message()));
  }
  if (static_cast<int64_t>(pem->size()) > kMaxPemFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, ": ", path, " is larger than 1 MiB; is it a PEM certificate file?"));
  }
  if (!absl::StrContains(*pem, "-----BEGIN CERTIFICATE-----")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, ": ", path, " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  return pem;
}

}  // namespace cnp
