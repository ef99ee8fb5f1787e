#include "tests/support/files.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace cnp::testing {
namespace {

// Directories made outside $TEST_TMPDIR (the short ones, and any made by a benchmark, which
// runs without it): nothing else would clean them up, so they are removed at exit. A
// benchmark's documents and logs took hundreds of megabytes of /tmp each run before.
class DirsRemovedAtExit {
 public:
  ~DirsRemovedAtExit() {
    absl::MutexLock lock(&mu_);
    std::error_code ignored;
    for (const std::string& dir : dirs_) std::filesystem::remove_all(dir, ignored);
  }
  void Add(std::string dir) {
    absl::MutexLock lock(&mu_);
    dirs_.push_back(std::move(dir));
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> dirs_ ABSL_GUARDED_BY(mu_);
};

DirsRemovedAtExit& RemovedAtExit() {
  static DirsRemovedAtExit* const dirs = new DirsRemovedAtExit;
  static const int registered = std::atexit([] { delete dirs; });
  (void)registered;
  return *dirs;
}

}  // namespace

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", prefix, "XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) return std::string();
  if (tmp == nullptr) RemovedAtExit().Add(pattern);
  return pattern;
}

std::string ShortTempDir() {
  char dir[] = "/tmp/cnp-test-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return std::string();
  RemovedAtExit().Add(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path, std::ios::trunc) << text;
  ::chmod(path.c_str(), mode);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace cnp::testing
