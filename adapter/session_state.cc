#include "adapter/session_state.h"

#include <variant>

namespace cnp::adapter {

using couchdb::CommandKind;

void SessionState::OnReset(std::string_view line) {
  reset_ = std::string(line);
  lib_.reset();
  functions_.clear();
  // The service replaces its whole configuration with each reset (QueryProtocol::Reset), and
  // one without a timeout has the default: the adapter must not wait by an older one.
  const couchdb::Command command = couchdb::ParseCommand(line);
  const auto* reset = std::get_if<couchdb::command::Reset>(&command);
  couchdb_timeout_ = reset != nullptr && reset->config.timeout.has_value()
                         ? *reset->config.timeout
                         : kDefaultCouchDBTimeout;
}

void SessionState::OnAccepted(CommandKind kind, std::string_view line) {
  switch (kind) {
    case CommandKind::kAddLib:
      lib_ = std::string(line);
      break;
    case CommandKind::kAddFun:
      functions_.emplace_back(line);
      break;
    case CommandKind::kDesignDocNew: {
      const couchdb::Command command = couchdb::ParseCommand(line);
      const auto* ddoc = std::get_if<couchdb::command::DesignDocNew>(&command);
      if (ddoc == nullptr) break;  // the service would not have accepted it
      design_docs_[ddoc->id] = std::string(line);
      break;
    }
    default:
      break;
  }
}

std::vector<std::string> SessionState::ReplayLines() const {
  std::vector<std::string> lines;
  if (reset_.has_value()) lines.push_back(*reset_);
  if (lib_.has_value()) lines.push_back(*lib_);
  lines.insert(lines.end(), functions_.begin(), functions_.end());
  return lines;
}

const std::string* SessionState::DesignDocLine(const std::string& id) const {
  const auto it = design_docs_.find(id);
  return it == design_docs_.end() ? nullptr : &it->second;
}

}  // namespace cnp::adapter
