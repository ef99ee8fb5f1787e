#include "common/pem_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/code_ownership.h"
#include "common/file_text.h"

namespace cnp {

absl::StatusOr<std::string> ReadPemFile(absl::string_view flag, const std::string& path,
                                        PemFileWriters writers) {
  // The file stat() sees at the path, a symlink's target included.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("--", flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  // Opening a named pipe waits for a writer: the server would hang at start, saying nothing.
  if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", path, " is a pipe or socket, not a PEM certificate file"));
  }
  absl::StatusOr<std::string> pem = ReadFileText(path, kMaxPemFileBytes);
  if (!pem.ok()) {
    return absl::NotFoundError(absl::StrCat("--", flag, ": ", pem.status().message()));
  }
  if (writers == PemFileWriters::kRootOrThisUser) {
    if (std::optional<OwnershipProblem> problem = OthersCanChange(path, st, StickyBit::kNotEnough,
                                                                  "the file");
        problem.has_value()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "--", flag, ": ", path, " ", problem->what,
          ": whoever may change it decides whom cnp-server trusts; ", problem->fix));
    }
  } else if ((st.st_mode & S_IWOTH) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "--%s: %s is writable by every user (mode %04o): any of them could decide whom this "
        "client trusts; run chmod o-w %s",
        std::string(flag), path, st.st_mode & 07777, path));
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
