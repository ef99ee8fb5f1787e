#include "service/listen/descriptor_cap.h"

#include <sys/resource.h>

#include <algorithm>

namespace cnp::listen {

int DescriptorCapForLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 1 << 30;
  const rlim_t soft = std::min<rlim_t>(limit.rlim_cur, 1 << 30);
  // Workers, their pipes, gRPC's own descriptors, log files and uploads' HTTP connections
  // live in the headroom.
  const rlim_t headroom = std::max<rlim_t>(64, soft / 16);
  return soft > headroom ? static_cast<int>(soft - headroom) : static_cast<int>(soft / 2);
}

}  // namespace cnp::listen
