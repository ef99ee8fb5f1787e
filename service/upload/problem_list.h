// The errors and warnings found while reading and resolving YAML, collected so that a user sees
// all of them at once instead of fixing one per run.
#pragma once

#include <string>
#include <vector>

#include "cnp/v1/upload.pb.h"

namespace cnp::upload {

// Bounded: an Upload's events are built before the first is sent, so a small request whose
// every line is a problem (10,000 unknown keys in a file named with 300 KB) made the server
// hold gigabytes (a security review). The first kMaxKept errors and kMaxKept warnings are kept,
// each message cut at kMaxMessageBytes; the rest are counted, and said in one last warning.
class ProblemList {
 public:
  static constexpr int kMaxKept = 200;
  static constexpr size_t kMaxMessageBytes = 4096;

  void Error(const v1::SourceLocation& at, std::string message);
  void Warning(const v1::SourceLocation& at, std::string message);

  // Orders the problems as a reader meets them: by file (in `files` order), line, column; the
  // note of those left out, if any, last.
  void SortByLocation(const std::vector<std::string>& files);

  // The problems kept, and a warning counting those left out when there are any.
  std::vector<v1::UploadProblem> problems() const;
  // Every error found, kept or not.
  int error_count() const { return error_count_; }

 private:
  void Add(v1::UploadProblem::Severity severity, const v1::SourceLocation& at,
           std::string message);

  std::vector<v1::UploadProblem> problems_;
  int error_count_ = 0;
  int warning_count_ = 0;
  int errors_left_out_ = 0;
  int warnings_left_out_ = 0;
};

}  // namespace cnp::upload
