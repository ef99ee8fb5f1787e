// The errors and warnings found while reading and resolving YAML, collected so that a user sees
// all of them at once instead of fixing one per run.
#pragma once

#include <string>
#include <vector>

#include "cnp/v1/upload.pb.h"

namespace cnp::upload {

class ProblemList {
 public:
  void Error(const v1::SourceLocation& at, std::string message);
  void Warning(const v1::SourceLocation& at, std::string message);

  // Orders the problems as a reader meets them: by file (in `files` order), line, column.
  void SortByLocation(const std::vector<std::string>& files);

  const std::vector<v1::UploadProblem>& problems() const { return problems_; }
  int error_count() const { return error_count_; }

 private:
  void Add(v1::UploadProblem::Severity severity, const v1::SourceLocation& at,
           std::string message);

  std::vector<v1::UploadProblem> problems_;
  int error_count_ = 0;
};

}  // namespace cnp::upload
