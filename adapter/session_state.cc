#include "adapter/session_state.h"

#include <iterator>
#include <variant>

#include "absl/status/statusor.h"
#include "service/couchdb/design_functions.h"
#include "service/couchdb/json_text.h"

namespace cnp::adapter {
namespace {

// What a new stream is taught for design document `ddoc`, taught by `line`: the document's
// functions only, the one part of it the service keeps (design_doc_cache.h), so that the
// adapter holds no more of it than the service does (whole lines of 40 MB of data each, kept
// for replay, took an adapter to 629 MB for 12 of them). The whole line if that cannot be
// read, which the service, having accepted it, read.
std::string TeachingLine(const couchdb::command::DesignDocNew& ddoc, std::string_view line) {
  absl::StatusOr<std::string> functions = couchdb::DesignFunctionsJson(ddoc.doc);
  if (!functions.ok()) return std::string(line);
  std::string teach = R"(["ddoc","new",)";
  couchdb::AppendJsonString(teach, ddoc.id);
  teach += ',';
  teach += *functions;
  teach += ']';
  return teach;
}

}  // namespace

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
    case CommandKind::kAddFun: {
      // Kept as the function's name alone: the line may carry spaces or further arguments the
      // service ignores, and 4,096 lines of up to --max-line-bytes each were kept whole.
      const couchdb::Command command = couchdb::ParseCommand(line);
      const auto* add = std::get_if<couchdb::command::AddFun>(&command);
      if (add == nullptr) {
        functions_.emplace_back(line);  // the service accepted it, and read it so
        break;
      }
      std::string kept = R"(["add_fun",)";
      couchdb::AppendJsonString(kept, add->function);
      kept += ']';
      functions_.push_back(std::move(kept));
      break;
    }
    case CommandKind::kDesignDocNew: {
      const couchdb::Command command = couchdb::ParseCommand(line);
      const auto* ddoc = std::get_if<couchdb::command::DesignDocNew>(&command);
      if (ddoc == nullptr) break;  // the service would not have accepted it
      if (const auto old = design_docs_.find(ddoc->id); old != design_docs_.end()) {
        Forget(old->second);
      }
      std::string teach = TeachingLine(*ddoc, line);
      const size_t bytes = teach.size() + ddoc->id.size();
      // One alone over the bound is not kept, as the service keeps none over its own.
      if (bytes > max_design_doc_bytes_) break;
      while (!recency_.empty() && design_doc_bytes_ + bytes > max_design_doc_bytes_) {
        Forget(std::prev(recency_.end()));
      }
      recency_.push_front(DesignDoc{ddoc->id, std::move(teach)});
      design_docs_.emplace(ddoc->id, recency_.begin());
      design_doc_bytes_ += bytes;
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
  if (it == design_docs_.end()) return nullptr;
  recency_.splice(recency_.begin(), recency_, it->second);  // iterators stay valid
  return &it->second->line;
}

void SessionState::Forget(std::list<DesignDoc>::iterator doc) {
  design_doc_bytes_ -= doc->line.size() + doc->id.size();
  design_docs_.erase(doc->id);
  recency_.erase(doc);
}

}  // namespace cnp::adapter
