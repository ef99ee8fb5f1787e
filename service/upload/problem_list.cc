#include "service/upload/problem_list.h"

#include <utility>

namespace cnp::upload {

void ProblemList::Error(const v1::SourceLocation& at, std::string message) {
  Add(v1::UploadProblem::ERROR, at, std::move(message));
  ++error_count_;
}

void ProblemList::Warning(const v1::SourceLocation& at, std::string message) {
  Add(v1::UploadProblem::WARNING, at, std::move(message));
}

void ProblemList::Add(v1::UploadProblem::Severity severity, const v1::SourceLocation& at,
                      std::string message) {
  v1::UploadProblem& problem = problems_.emplace_back();
  problem.set_severity(severity);
  *problem.mutable_location() = at;
  problem.set_message(std::move(message));
}

}  // namespace cnp::upload
