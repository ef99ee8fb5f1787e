#include "client/cli/command_line_credentials.h"

#include <cstring>

namespace cnp::cli {

const char kCommandLinePasswordWarning[] =
    "warning: a user and password in a URL on the command line can be read by every user of "
    "this host (ps, /proc/PID/cmdline) until cnp has started and blanked them; set "
    "CNP_COUCHDB_USER and CNP_COUCHDB_PASSWORD, or use ~/.netrc, instead";

UserInfoSpan FindUserInfo(const std::string& arg) {
  const size_t scheme_end = arg.find("://");
  if (scheme_end == std::string::npos) return {};
  const size_t start = scheme_end + 3;
  const size_t at = arg.rfind('@');
  if (at == std::string::npos || at < start) return {};
  return {start, at - start};
}

std::vector<std::string> TakeArgumentsScrubbingCredentials(int argc, char** argv,
                                                           bool& scrubbed) {
  std::vector<std::string> copies(argv, argv + argc);
  scrubbed = false;
  for (int i = 0; i < argc; ++i) {
    const UserInfoSpan span = FindUserInfo(copies[i]);
    if (span.length == 0) continue;
    // The same length: the kernel shows the bytes of the original argument area.
    std::memset(argv[i] + span.offset, 'x', span.length);
    scrubbed = true;
  }
  return copies;
}

}  // namespace cnp::cli
