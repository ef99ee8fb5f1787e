// Heartbeats on the Session stream (proto/cnp/v1/functions.proto, SessionOutput.partial and
// heartbeat_ms): the client asks for them with a request header, and the server, while a command
// runs, writes an empty partial output whenever the stream has been silent that long. Behind a
// proxy that answers HTTP/2 pings itself (nginx), silence is how cnp-adapter finds a replica
// that has stopped in time to replay the command on another within CouchDB's timeout.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"

namespace cnp {

// The request header: the interval the client asks for, in milliseconds.
inline constexpr char kHeartbeatHeader[] = "cnp-heartbeat-ms";

// What the server grants: often enough to be useful, not so often that a client could have it
// write without end (a stream asking for 1 ms heartbeats).
inline constexpr absl::Duration kShortestHeartbeat = absl::Milliseconds(200);
inline constexpr absl::Duration kLongestHeartbeat = absl::Seconds(60);

// The interval granted for the header's value: zero (no heartbeats) when it is not a number
// of milliseconds; else clamped to the bounds above.
inline absl::Duration GrantedHeartbeat(std::string_view asked_ms) {
  int64_t ms = 0;
  if (!absl::SimpleAtoi(absl::string_view(asked_ms.data(), asked_ms.size()), &ms) || ms <= 0) {
    return absl::ZeroDuration();
  }
  return absl::Milliseconds(ms) < kShortestHeartbeat  ? kShortestHeartbeat
         : absl::Milliseconds(ms) > kLongestHeartbeat ? kLongestHeartbeat
                                                      : absl::Milliseconds(ms);
}

}  // namespace cnp
