#include "service/rpc/refusal_log.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace cnp::rpc {

void RefusalLog::Refused(absl::string_view event, absl::string_view key, absl::string_view peer,
                         absl::string_view reason, std::initializer_list<LogField> details,
                         absl::string_view counted) {
  const Clock::time_point now = Clock::now();
  std::vector<Line> lines;
  {
    absl::MutexLock lock(&mu_);
    // Refusals of another kind from the same peer are counted apart: a line tells one reason.
    auto [it, first] =
        peers_.try_emplace(absl::StrCat(event, "\n", reason, "\n", counted, "\n", key));
    PeerState& state = it->second;
    state.event = std::string(event);
    state.peer = std::string(peer);
    state.reason = std::string(reason);
    state.counted = std::string(counted);
    state.details.clear();
    for (const LogField& field : details) {
      state.details.push_back({std::string(field.key), std::string(field.value), field.number});
    }
    ++state.unlogged;
    if (!first && now - state.last_line < interval_) return;
    lines.push_back(LineFor(state, now));
  }
  Write(lines);
}

void RefusalLog::Flush() { FlushOwed(/*all=*/false); }

void RefusalLog::FlushAll() { FlushOwed(/*all=*/true); }

void RefusalLog::FlushOwed(bool all) {
  const Clock::time_point now = Clock::now();
  std::vector<Line> lines;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = peers_.begin(); it != peers_.end();) {
      PeerState& state = it->second;
      if (!all && now - state.last_line < interval_) {
        ++it;
      } else if (state.unlogged > 0) {
        lines.push_back(LineFor(state, now));
        ++it;
      } else {
        it = peers_.erase(it);
      }
    }
  }
  Write(lines);
}

RefusalLog::Line RefusalLog::LineFor(PeerState& state, Clock::time_point now) {
  Line line{state.event, state.peer, state.details};
  line.fields.push_back({"reason", state.reason});
  // How many connections or calls the line stands for: this one and those counted since the
  // last line.
  line.fields.push_back({state.counted, absl::StrCat(state.unlogged), true});
  state.last_line = now;
  state.unlogged = 0;
  return line;
}

void RefusalLog::Write(const std::vector<Line>& lines) const {
  for (const Line& line : lines) {
    std::vector<LogField> fields;
    fields.reserve(line.fields.size());
    for (const Field& field : line.fields) {
      fields.push_back({field.key, field.value, field.number});
    }
    log_.Write(line.event, line.peer, fields);
  }
}

}  // namespace cnp::rpc
