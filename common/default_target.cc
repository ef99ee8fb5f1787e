#include "common/default_target.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace cnp {

std::string DefaultRuntimeDir() { return absl::StrCat("/tmp/cnp-", ::getuid()); }

std::string DefaultTarget() {
  if (const char* env = std::getenv("CNP_TARGET"); env != nullptr && *env != '\0') return env;
  return absl::StrCat("unix:", DefaultRuntimeDir(), "/cnp.sock");
}

}  // namespace cnp
