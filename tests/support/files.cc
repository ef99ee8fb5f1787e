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

// The short directories live outside $TEST_TMPDIR, so nothing else would clean them up.
class ShortDirs {
 public:
  ~ShortDirs() {
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

}  // namespace

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", prefix, "XXXXXX");
  return ::mkdtemp(pattern.data()) != nullptr ? pattern : std::string();
}

std::string ShortTempDir() {
  static ShortDirs* const dirs = new ShortDirs;
  static const int registered = std::atexit([] { delete dirs; });
  (void)registered;
  char dir[] = "/tmp/cnp-test-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return std::string();
  dirs->Add(dir);
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
