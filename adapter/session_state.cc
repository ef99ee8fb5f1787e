#include "adapter/session_state.h"

#include <variant>

namespace cnp::adapter {

using couchdb::CommandKind;

void SessionState::OnReset(std::string_view line) {
  reset_ = std::string(line);
  lib_.reset();
  functions_.clear();
  const couchdb::Command command = couchdb::ParseCommand(line);
  if (const auto* reset = std::get_if<couchdb::command::Reset>(&command)) {
    if (reset->config.timeout.has_value()) couchdb_timeout_ = *reset->config.timeout;
  }
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
      if (design_docs_.find(ddoc->id) == design_docs_.end()) design_doc_order_.push_back(ddoc->id);
      design_docs_[ddoc->id] = std::string(line);
      break;
    }
    default:
      break;
  }
}

std::vector<std::string> SessionState::ReplayLines() const {
  std::vector<std::string> lines;
  // Design documents first: a reset does not forget them, and the reset must come right before
  // the library and functions it scopes.
  for (const std::string& id : design_doc_order_) lines.push_back(design_docs_.at(id));
  if (reset_.has_value()) lines.push_back(*reset_);
  if (lib_.has_value()) lines.push_back(*lib_);
  lines.insert(lines.end(), functions_.begin(), functions_.end());
  return lines;
}

}  // namespace cnp::adapter
