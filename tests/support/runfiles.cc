#include "tests/support/runfiles.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace cnp::testing {
namespace {

// The workspace's name in the runfiles tree (MODULE.bazel's module name).
constexpr char kWorkspace[] = "cnp";

}  // namespace

std::string RunfilesDir() {
  for (const char* name : {"TEST_SRCDIR", "RUNFILES_DIR"}) {
    if (const char* dir = std::getenv(name); dir != nullptr && *dir != '\0') return dir;
  }
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  return absl::StrCat(std::string(self, n > 0 ? n : 0), ".runfiles");
}

std::string Runfile(const std::string& path) {
  return absl::StrCat(RunfilesDir(), "/", kWorkspace, "/", path);
}

}  // namespace cnp::testing
