#include "adapter/session_state.h"

#include <cstdlib>

namespace cnp::adapter {
namespace {

void SkipSpace(std::string_view& text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t' || text.front() == '\r' ||
                           text.front() == '\n')) {
    text.remove_prefix(1);
  }
}

// Takes a JSON string token (quotes included) off the front of `text`.
std::optional<std::string_view> TakeString(std::string_view& text) {
  SkipSpace(text);
  if (text.empty() || text.front() != '"') return std::nullopt;
  for (size_t i = 1; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;
    } else if (text[i] == '"') {
      std::string_view token = text.substr(0, i + 1);
      text.remove_prefix(i + 1);
      return token;
    }
  }
  return std::nullopt;
}

bool TakeComma(std::string_view& text) {
  SkipSpace(text);
  if (text.empty() || text.front() != ',') return false;
  text.remove_prefix(1);
  return true;
}

// The "timeout" of a reset's configuration object, in milliseconds.
std::optional<double> TimeoutMillis(std::string_view reset) {
  const size_t key = reset.find("\"timeout\"");
  if (key == std::string_view::npos) return std::nullopt;
  std::string_view rest = reset.substr(key + 9);
  SkipSpace(rest);
  if (rest.empty() || rest.front() != ':') return std::nullopt;
  rest.remove_prefix(1);
  SkipSpace(rest);
  std::string number(rest.substr(0, rest.find_first_of(",}] \t")));
  char* end = nullptr;
  const double millis = std::strtod(number.c_str(), &end);
  if (end == number.c_str() || !(millis > 0)) return std::nullopt;
  return millis;
}

}  // namespace

Command ClassifyCommand(std::string_view line) {
  SkipSpace(line);
  if (line.empty() || line.front() != '[') return Command::kOther;
  line.remove_prefix(1);
  std::optional<std::string_view> name = TakeString(line);
  if (!name.has_value()) return Command::kOther;
  SkipSpace(line);
  const bool more = !line.empty() && line.front() == ',';
  const bool ends = !line.empty() && line.front() == ']';
  if (!more && !ends) return Command::kOther;
  if (*name == "\"reset\"") return Command::kReset;
  if (*name == "\"add_lib\"") return Command::kAddLib;
  if (*name == "\"add_fun\"") return Command::kAddFun;
  if (*name == "\"list_row\"" || *name == "\"list_end\"") return Command::kListStep;
  if (*name == "\"ddoc\"" && TakeComma(line)) {
    std::optional<std::string_view> second = TakeString(line);
    if (second == "\"new\"") return Command::kDesignDocNew;
  }
  return Command::kOther;
}

void SessionState::OnReset(std::string_view line) {
  reset_ = std::string(line);
  lib_.reset();
  functions_.clear();
  if (std::optional<double> millis = TimeoutMillis(line)) {
    couchdb_timeout_ = absl::Milliseconds(*millis);
  }
}

void SessionState::OnAccepted(Command command, std::string_view line) {
  switch (command) {
    case Command::kAddLib:
      lib_ = std::string(line);
      break;
    case Command::kAddFun:
      functions_.emplace_back(line);
      break;
    case Command::kDesignDocNew: {
      std::string_view rest = line;
      SkipSpace(rest);
      rest.remove_prefix(1);  // '['
      TakeString(rest);       // "ddoc"
      TakeComma(rest);
      TakeString(rest);  // "new"
      TakeComma(rest);
      std::string id(TakeString(rest).value_or(""));
      if (design_docs_.find(id) == design_docs_.end()) design_doc_order_.push_back(id);
      design_docs_[id] = std::string(line);
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
