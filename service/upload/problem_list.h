// The errors and warnings found while reading and resolving YAML, collected so that a user sees
// all of them at once instead of fixing one per run.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "cnp/v1/upload.pb.h"

namespace cnp::upload {

// Bounded: an Upload's events are built before the first is sent, so a small request whose
// every line is a problem (10,000 unknown keys in a file named with 300 KB) made the server
// hold gigabytes (a security review). Of each severity, the kMaxKept problems that come first
// by place (file in `files` order, line, column; then as found) are kept, each message cut at
// kMaxMessageBytes; the rest are counted, and said in one last warning.
class ProblemList {
 public:
  static constexpr int kMaxKept = 200;
  static constexpr size_t kMaxMessageBytes = 4096;

  // `files`: the request's file names, in the order a reader meets them. Problems in no such
  // file (the request as a whole) come after those in one.
  explicit ProblemList(std::vector<std::string> files = {});

  void Error(const v1::SourceLocation& at, std::string message);
  void Warning(const v1::SourceLocation& at, std::string message);

  // The problems kept, as a reader meets them (by place), and a warning counting those left
  // out when there are any.
  std::vector<v1::UploadProblem> problems() const;
  // Every error found, kept or not.
  int error_count() const { return error_count_; }

 private:
  // Where a problem is, as a reader meets it; `found` keeps problems at one place in the order
  // they were found.
  using Place = std::tuple<size_t, int, int, int64_t>;
  struct Kept {
    Place place;
    v1::UploadProblem problem;
  };
  // The kMaxKept problems of one severity that come first: a heap whose top is the last of
  // them, replaced by one that comes before it.
  struct FirstProblems {
    std::vector<Kept> heap;
    int left_out = 0;
  };

  void Add(FirstProblems& kept, v1::UploadProblem::Severity severity,
           const v1::SourceLocation& at, std::string message);

  std::vector<std::string> files_;
  FirstProblems errors_;
  FirstProblems warnings_;
  int error_count_ = 0;
  int64_t found_ = 0;
};

}  // namespace cnp::upload
