#include "service/upload/problem_list.h"

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/utf8_text.h"

namespace cnp::upload {

void ProblemList::Error(const v1::SourceLocation& at, std::string message) {
  ++error_count_;
  if (error_count_ > kMaxKept) {
    ++errors_left_out_;
    return;
  }
  Add(v1::UploadProblem::ERROR, at, std::move(message));
}

void ProblemList::Warning(const v1::SourceLocation& at, std::string message) {
  ++warning_count_;
  if (warning_count_ > kMaxKept) {
    ++warnings_left_out_;
    return;
  }
  Add(v1::UploadProblem::WARNING, at, std::move(message));
}

void ProblemList::SortByLocation(const std::vector<std::string>& files) {
  auto key = [&](const v1::UploadProblem& p) {
    auto file = std::find(files.begin(), files.end(), p.location().file());
    return std::make_tuple(file - files.begin(), p.location().line(), p.location().column());
  };
  std::stable_sort(problems_.begin(), problems_.end(),
                   [&](const v1::UploadProblem& a, const v1::UploadProblem& b) {
                     return key(a) < key(b);
                   });
}

std::vector<v1::UploadProblem> ProblemList::problems() const {
  std::vector<v1::UploadProblem> all = problems_;
  if (errors_left_out_ + warnings_left_out_ > 0) {
    v1::UploadProblem& note = all.emplace_back();
    note.set_severity(v1::UploadProblem::WARNING);
    std::vector<std::string> counts;
    if (errors_left_out_ > 0) {
      counts.push_back(absl::StrCat(errors_left_out_, " more error",
                                    errors_left_out_ == 1 ? "" : "s"));
    }
    if (warnings_left_out_ > 0) {
      counts.push_back(absl::StrCat(warnings_left_out_, " more warning",
                                    warnings_left_out_ == 1 ? "" : "s"));
    }
    note.set_message(absl::StrCat(absl::StrJoin(counts, " and "),
                                  " not shown: only the first ", kMaxKept,
                                  " errors and the first ", kMaxKept,
                                  " warnings are; fix these and check again"));
  }
  return all;
}

void ProblemList::Add(v1::UploadProblem::Severity severity, const v1::SourceLocation& at,
                      std::string message) {
  v1::UploadProblem& problem = problems_.emplace_back();
  problem.set_severity(severity);
  *problem.mutable_location() = at;
  if (message.size() > kMaxMessageBytes) {
    message = absl::StrCat(Utf8Prefix(message, kMaxMessageBytes), "... (cut at ",
                           kMaxMessageBytes, " bytes)");
  }
  problem.set_message(std::move(message));
}

}  // namespace cnp::upload
