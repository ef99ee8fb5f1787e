// The access-log lines for connections and calls the server refuses or closes: one per peer,
// event and reason per interval rather than one per connection or call. A flood from one
// address would otherwise write a line for each (the log growing as fast as an attacker can
// connect or call, token or not), and one line per second for all peers together hid who was
// refused. A peer's first refusal is written at once; those that follow within the interval are
// counted, and the peer's next line (or, if none comes, Flush once the interval is over, or
// FlushAll at shutdown) says how many connections or calls it stands for.
//
// Shared by the connection acceptor's thread (which calls Flush on its sweep) and the threads
// that check calls' tokens.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "service/rpc/access_log.h"

namespace cnp::rpc {

// How often a peer's refused connections or calls get an access-log line at most.
inline constexpr std::chrono::seconds kRefusalLogInterval{10};

class RefusalLog {
 public:
  using Clock = std::chrono::steady_clock;

  RefusalLog(const AccessLog& log, Clock::duration interval) : log_(log), interval_(interval) {}

  // `event` is the access log's event ("refused", "closed"); `key` says whose refusals are
  // counted together (an address without its port, a unix socket's path and uid); `peer` is
  // what the line names (the address with the port of the connection refused). `counted` names
  // what the line's count stands for: "connections", or "calls" for a call refused its token.
  void Refused(absl::string_view event, absl::string_view key, absl::string_view peer,
               absl::string_view reason, std::initializer_list<LogField> details = {},
               absl::string_view counted = "connections") ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the counts owed for peers whose interval is over, and forgets peers with nothing
  // owed, so that a flood from many addresses does not grow this for good.
  void Flush() ABSL_LOCKS_EXCLUDED(mu_);
  // Writes every count owed, interval over or not: at shutdown, when no later Flush will come
  // (the refusals of a stop's last seconds were lost before).
  void FlushAll() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A line decided under the lock, written after it (a slow log must not hold up the threads
  // that check tokens).
  // A field kept past the call that gave it (LogField's, owned).
  struct Field {
    std::string key, value;
    bool number = false;
  };
  struct Line {
    std::string event, peer;
    std::vector<Field> fields;
  };
  struct PeerState {
    // Of the last refusal: what a line counting it says, the details included.
    std::string event, peer, reason, counted;
    std::vector<Field> details;
    Clock::time_point last_line;
    int64_t unlogged = 0;  // refusals no line has told yet
  };
  static Line LineFor(PeerState& state, Clock::time_point now);
  // The lines owed: by peers whose interval is over, or by all when `all`.
  void FlushOwed(bool all) ABSL_LOCKS_EXCLUDED(mu_);
  void Write(const std::vector<Line>& lines) const;

  const AccessLog& log_;
  const Clock::duration interval_;
  absl::Mutex mu_;
  std::unordered_map<std::string, PeerState> peers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cnp::rpc
