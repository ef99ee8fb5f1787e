#include "service/upload/problem_list.h"

#include <algorithm>
#include <tuple>
#include <utility>

namespace cnp::upload {

void ProblemList::Error(const v1::SourceLocation& at, std::string message) {
  Add(v1::UploadProblem::ERROR, at, std::move(message));
  ++error_count_;
}

void ProblemList::Warning(const v1::SourceLocation& at, std::string message) {
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

void ProblemList::Add(v1::UploadProblem::Severity severity, const v1::SourceLocation& at,
                      std::string message) {
  v1::UploadProblem& problem = problems_.emplace_back();
  problem.set_severity(severity);
  *problem.mutable_location() = at;
  problem.set_message(std::move(message));
}

}  // namespace cnp::upload
