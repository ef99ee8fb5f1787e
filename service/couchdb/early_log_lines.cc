#include "service/couchdb/early_log_lines.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/post.hpp"
#include "service/couchdb/json_text.h"

namespace cnp::couchdb {

void EarlyLogLines::Arm(absl::Duration restart, absl::Time latest) {
  absl::MutexLock lock(&mutex_);
  restart_ = restart;
  latest_ = latest;
}

absl::Time EarlyLogLines::OnLog(worker::v1::Reply interim) {
  std::string line = LogLine(interim.task_log().message());
  absl::MutexLock lock(&mutex_);
  // A dropped line restarts nothing: CouchDB does not get it.
  absl::Time deadline = absl::InfinitePast();
  if (held_bytes_ + static_cast<int64_t>(line.size()) > kMaxHeldBytes) {
    ++dropped_;
  } else {
    deadline = std::min(absl::Now() + restart_, latest_);
    held_bytes_ += static_cast<int64_t>(line.size());
    held_.push_back(std::move(line));
  }
  for (worker::v1::FunctionLog& copy : *interim.mutable_function_logs()) {
    if (attributed_.size() >= kMaxHeldAttributed) break;
    *attributed_.Add() = std::move(copy);
  }
  if (!flush_posted_) {
    flush_posted_ = true;
    asio::post(executor_, [weak = weak_from_this()] {
      if (const std::shared_ptr<EarlyLogLines> self = weak.lock()) self->Flush();
    });
  }
  return deadline;
}

void EarlyLogLines::Flush() {
  std::vector<std::string> lines;
  {
    absl::MutexLock lock(&mutex_);
    flush_posted_ = false;
    // Lines dropped must be said before any that follow them: those wait for the answer.
    if (dropped_ > 0) return;
    lines.swap(held_);
    held_bytes_ = 0;
  }
  if (lines.empty()) return;
  v1::SessionOutput early;
  early.set_partial(true);
  for (std::string& line : lines) early.add_lines(std::move(line));
  if (writer_(early)) return;
  // The stream holds too much its client has not read: they wait, ahead of later lines.
  absl::MutexLock lock(&mutex_);
  for (std::string& line : held_) early.add_lines(std::move(line));
  held_.clear();
  held_bytes_ = 0;
  for (std::string& line : *early.mutable_lines()) {
    held_bytes_ += static_cast<int64_t>(line.size());
    held_.push_back(std::move(line));
  }
}

void EarlyLogLines::TakeUnwritten(v1::SessionOutput& answer) {
  std::vector<std::string> lines;
  int64_t dropped = 0;
  {
    absl::MutexLock lock(&mutex_);
    lines.swap(held_);
    held_bytes_ = 0;
    dropped = std::exchange(dropped_, 0);
  }
  if (lines.empty() && dropped == 0) return;
  if (dropped > 0) {
    lines.push_back(LogLine(absl::StrCat(
        "cnp-server: ", dropped, " more log() lines of this command were dropped: its functions "
        "made them faster than CouchDB read them")));
  }
  // At the head of the answer, in the order they were made.
  google::protobuf::RepeatedPtrField<std::string> answer_lines;
  answer_lines.Swap(answer.mutable_lines());
  for (std::string& line : lines) answer.add_lines(std::move(line));
  for (std::string& line : answer_lines) answer.add_lines(std::move(line));
}

void EarlyLogLines::TakeAttributed(
    google::protobuf::RepeatedPtrField<worker::v1::FunctionLog>& into) {
  absl::MutexLock lock(&mutex_);
  into.Swap(&attributed_);
  attributed_.Clear();
}

}  // namespace cnp::couchdb
