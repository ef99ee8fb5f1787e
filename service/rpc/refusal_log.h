// The access-log lines for connections the server refuses or closes: one per peer, event and
// reason per interval rather than one per connection. A flood from one address would otherwise write
// a line for each connection (the log growing as fast as an attacker can connect), and one
// line per second for all peers together hid who was refused. A peer's first refusal is
// written at once; those that follow within the interval are counted, and the peer's next line
// (or, if none comes, Flush once the interval is over) says how many connections it stands for.
//
// Used from the connection acceptor's one thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <unordered_map>

#include "absl/strings/string_view.h"
#include "service/rpc/access_log.h"

namespace cnp::rpc {

class RefusalLog {
 public:
  using Clock = std::chrono::steady_clock;

  RefusalLog(const AccessLog& log, Clock::duration interval) : log_(log), interval_(interval) {}

  // `event` is the access log's event ("refused", "closed"); `key` says whose refusals are
  // counted together (an address without its port, a unix socket's path and uid); `peer` is
  // what the line names (the address with the port of the connection refused).
  void Refused(absl::string_view event, absl::string_view key, absl::string_view peer,
               absl::string_view reason, std::initializer_list<LogField> details = {});
  // Writes the counts owed for peers whose interval is over, and forgets peers with nothing
  // owed, so that a flood from many addresses does not grow this for good.
  void Flush();

 private:
  struct PeerState {
    std::string event, peer, reason;  // of the last refusal
    Clock::time_point last_line;
    int64_t unlogged = 0;  // refusals no line has told yet
  };
  void WriteLine(PeerState& state, std::initializer_list<LogField> details, Clock::time_point now);

  const AccessLog& log_;
  const Clock::duration interval_;
  std::unordered_map<std::string, PeerState> peers_;
};

}  // namespace cnp::rpc
