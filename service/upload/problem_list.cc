#include "service/upload/problem_list.h"

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/utf8_text.h"

namespace cnp::upload {

ProblemList::ProblemList(std::vector<std::string> files) : files_(std::move(files)) {}

void ProblemList::Error(const v1::SourceLocation& at, std::string message) {
  ++error_count_;
  Add(errors_, v1::UploadProblem::ERROR, at, std::move(message));
}

void ProblemList::Warning(const v1::SourceLocation& at, std::string message) {
  Add(warnings_, v1::UploadProblem::WARNING, at, std::move(message));
}

void ProblemList::Add(FirstProblems& kept, v1::UploadProblem::Severity severity,
                      const v1::SourceLocation& at, std::string message) {
  const size_t file = static_cast<size_t>(
      std::find(files_.begin(), files_.end(), at.file()) - files_.begin());
  Place place{file, at.line(), at.column(), found_++};
  auto comes_first = [](const Kept& a, const Kept& b) { return a.place < b.place; };
  if (kept.heap.size() == static_cast<size_t>(kMaxKept)) {
    ++kept.left_out;
    if (!(place < kept.heap.front().place)) return;
    std::pop_heap(kept.heap.begin(), kept.heap.end(), comes_first);
    kept.heap.pop_back();
  }
  if (message.size() > kMaxMessageBytes) {
    message = absl::StrCat(Utf8Prefix(message, kMaxMessageBytes), "... (cut at ",
                           kMaxMessageBytes, " bytes)");
  }
  Kept& added = kept.heap.emplace_back();
  added.place = place;
  added.problem.set_severity(severity);
  *added.problem.mutable_location() = at;
  added.problem.set_message(std::move(message));
  std::push_heap(kept.heap.begin(), kept.heap.end(), comes_first);
}

std::vector<v1::UploadProblem> ProblemList::problems() const {
  std::vector<const Kept*> all;
  for (const FirstProblems* kept : {&errors_, &warnings_}) {
    for (const Kept& k : kept->heap) all.push_back(&k);
  }
  std::sort(all.begin(), all.end(),
            [](const Kept* a, const Kept* b) { return a->place < b->place; });
  std::vector<v1::UploadProblem> out;
  out.reserve(all.size() + 1);
  for (const Kept* k : all) out.push_back(k->problem);
  if (errors_.left_out + warnings_.left_out > 0) {
    std::vector<std::string> counts;
    if (errors_.left_out > 0) {
      counts.push_back(absl::StrCat(errors_.left_out, " more error",
                                    errors_.left_out == 1 ? "" : "s"));
    }
    if (warnings_.left_out > 0) {
      counts.push_back(absl::StrCat(warnings_.left_out, " more warning",
                                    warnings_.left_out == 1 ? "" : "s"));
    }
    v1::UploadProblem& note = out.emplace_back();
    note.set_severity(v1::UploadProblem::WARNING);
    note.set_message(absl::StrCat(absl::StrJoin(counts, " and "),
                                  " not shown: only the first ", kMaxKept,
                                  " errors and the first ", kMaxKept,
                                  " warnings by place are; fix these and check again"));
  }
  return out;
}

}  // namespace cnp::upload
