// Running an Uploader in a test and looking at what it reported.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cnp/v1/upload.pb.h"
#include "service/upload/uploader.h"

namespace cnp::upload::testing {

struct UploadResult {
  absl::Status status;
  std::vector<v1::UploadEvent> events;

  std::vector<v1::UploadProblem> errors() const { return Problems(v1::UploadProblem::ERROR); }
  std::vector<v1::UploadProblem> warnings() const {
    return Problems(v1::UploadProblem::WARNING);
  }
  std::vector<v1::UploadProblem> Problems(v1::UploadProblem::Severity severity) const {
    std::vector<v1::UploadProblem> out;
    for (const auto& e : events) {
      if (e.has_problem() && e.problem().severity() == severity) out.push_back(e.problem());
    }
    return out;
  }
  // What every problem reported says, whatever its severity, in order.
  std::vector<std::string> problem_messages() const {
    std::vector<std::string> out;
    for (const auto& e : events) {
      if (e.has_problem()) out.push_back(e.problem().message());
    }
    return out;
  }
  std::vector<v1::DesignDocOutcome> outcomes() const {
    std::vector<v1::DesignDocOutcome> out;
    for (const auto& e : events) {
      if (e.has_outcome()) out.push_back(e.outcome());
    }
    return out;
  }
  // The outcome for `id` in `database` ("" for check_only); an empty one when there is none.
  v1::DesignDocOutcome Outcome(const std::string& id, const std::string& database = "") const {
    for (const auto& o : outcomes()) {
      if (o.id() == id && o.database() == database) return o;
    }
    return {};
  }
  // Every event, one per line, for failure messages.
  std::string Dump() const {
    std::string out;
    for (const auto& e : events) absl::StrAppend(&out, e.ShortDebugString(), "\n");
    return out;
  }
};

inline UploadResult RunUpload(Uploader& uploader, const v1::UploadRequest& request) {
  UploadResult result;
  result.status = uploader.Run(request, [&](const v1::UploadEvent& event) {
    result.events.push_back(event);
    return true;
  });
  return result;
}

inline v1::UploadFile File(const std::string& name, const std::string& text) {
  v1::UploadFile file;
  file.set_name(name);
  file.set_text(text);
  return file;
}

}  // namespace cnp::upload::testing
