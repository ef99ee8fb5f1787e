#include "client/derive/holder_id.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace cnp::derive {
namespace {

std::string HostName() {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  return host;
}

}  // namespace

std::string NewHolderId() {
  std::random_device random;
  return absl::StrFormat("%s:%d:%08x", HostName(), ::getpid(), random());
}

bool HolderEndedOnThisHost(absl::string_view holder) {
  // A host name holds no ':'; the pid and the random part come last.
  const size_t random_at = holder.rfind(':');
  if (random_at == absl::string_view::npos || random_at == 0) return false;
  const size_t pid_at = holder.rfind(':', random_at - 1);
  if (pid_at == absl::string_view::npos) return false;
  int pid = 0;
  if (!absl::SimpleAtoi(holder.substr(pid_at + 1, random_at - pid_at - 1), &pid) || pid <= 0) {
    return false;
  }
  if (holder.substr(0, pid_at) != HostName()) return false;
  // Another holder with this process's pid (never this process: the caller asks of holders
  // other than itself) ran before it: in a container restarted under the same host name each
  // run is pid 1 (a review found).
  if (pid == ::getpid()) return true;
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

}  // namespace cnp::derive
