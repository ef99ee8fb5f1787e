#include "service/rpc/refusal_log.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace cnp::rpc {

void RefusalLog::Refused(absl::string_view event, absl::string_view key, absl::string_view peer,
                         absl::string_view reason, std::initializer_list<LogField> details,
                         absl::string_view counted) {
  const Clock::time_point now = Clock::now();
  absl::MutexLock lock(&mu_);
  // Refusals of another kind from the same peer are counted apart: a line tells one reason.
  auto [it, first] =
      peers_.try_emplace(absl::StrCat(event, "\n", reason, "\n", counted, "\n", key));
  PeerState& state = it->second;
  state.event = std::string(event);
  state.peer = std::string(peer);
  state.reason = std::string(reason);
  state.counted = std::string(counted);
  ++state.unlogged;
  if (!first && now - state.last_line < interval_) return;
  WriteLine(state, details, now);
}

void RefusalLog::Flush() {
  const Clock::time_point now = Clock::now();
  absl::MutexLock lock(&mu_);
  for (auto it = peers_.begin(); it != peers_.end();) {
    PeerState& state = it->second;
    if (now - state.last_line < interval_) {
      ++it;
    } else if (state.unlogged > 0) {
      WriteLine(state, {}, now);
      ++it;
    } else {
      it = peers_.erase(it);
    }
  }
}

void RefusalLog::WriteLine(PeerState& state, std::initializer_list<LogField> details,
                           Clock::time_point now) {
  // How many connections or calls the line stands for: this one and those counted since the
  // last line.
  const std::string count = absl::StrCat(state.unlogged);
  std::vector<LogField> fields(details);
  fields.push_back({"reason", state.reason});
  fields.push_back({state.counted, count});
  log_.Write(state.event, state.peer, fields);
  state.last_line = now;
  state.unlogged = 0;
}

}  // namespace cnp::rpc
