#include "tests/support/process_memory.h"

#include <fstream>

#include "absl/strings/str_cat.h"

namespace cnp::testing {
namespace {

int64_t StatusBytes(const std::string& path, const std::string& field) {
  std::ifstream status(path);
  std::string key;
  while (status >> key) {
    if (key == field + ":") {
      int64_t kb = 0;
      status >> kb;
      return kb << 10;
    }
  }
  return -1;
}

}  // namespace

int64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  return StatusBytes(absl::StrCat("/proc/", pid, "/status"), field);
}

int64_t OwnResidentBytes() { return StatusBytes("/proc/self/status", "VmRSS"); }

}  // namespace cnp::testing
