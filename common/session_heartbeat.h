// Heartbeats on the Session stream (proto/cnp/v1/functions.proto, SessionOutput.partial and
// heartbeat_ms): the client asks for them with a request header, and the server, while a command
// runs, writes an empty partial output whenever the stream has been silent that long. Behind a
// proxy that answers HTTP/2 pings itself (nginx), silence is how cnp-adapter finds a replica
// that has stopped in time to replay the command on another within CouchDB's timeout.
#pragma once

#include <cstdint>
#include <optional>
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

// The interval granted for the header's value: zero (no heartbeats) for 0 or less; else
// clamped to the bounds above. Nothing when the value is not a whole number of milliseconds:
// a client that took its stream for one with heartbeats would take a long command for a
// server that has stopped, so the stream is refused instead.
inline std::optional<absl::Duration> GrantedHeartbeat(std::string_view asked_ms) {
  int64_t ms = 0;
  const absl::string_view text(asked_ms.data(), asked_ms.size());
  if (!absl::SimpleAtoi(text, &ms)) {
    // Digits past int64's range ask for more than the longest: granted that.
    if (!text.empty() && text.find_first_not_of("0123456789") == absl::string_view::npos) {
      return kLongestHeartbeat;
    }
    return std::nullopt;
  }
  if (ms <= 0) return absl::ZeroDuration();
  return absl::Milliseconds(ms) < kShortestHeartbeat  ? kShortestHeartbeat
         : absl::Milliseconds(ms) > kLongestHeartbeat ? kLongestHeartbeat
                                                      : absl::Milliseconds(ms);
}

}  // namespace cnp
