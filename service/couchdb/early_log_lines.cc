#include "service/couchdb/early_log_lines.h"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <memory>
#include <string>
#include <vector>
#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "service/common/function_log.h"
#include "service/couchdb/json_text.h"

namespace cnp::couchdb {
namespace {

// What a held line costs, its string's and its slot's bytes with it: a function logging empty
// lines must not hold far more than the bound says.
int64_t HeldCost(const std::string& line) {
  return static_cast<int64_t>(line.size() + sizeof(std::string));
}

// Early partial outputs are written in pieces of about this many bytes.
constexpr int64_t kPieceBytes = int64_t{128} << 10;

std::string DroppedLine(int64_t dropped) {
  return LogLine(absl::StrCat("cnp-server: ", dropped,
                              " log() lines of this command were dropped here: its functions "
                              "made them faster than CouchDB read them"));
}

}  // namespace

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
  if (held_bytes_ + HeldCost(line) > kMaxHeldBytes) {
    ++dropped_;
  } else {
    deadline = std::min(absl::Now() + restart_, latest_);
    held_bytes_ += HeldCost(line);
    held_.push_back(std::move(line));
  }
  for (worker::v1::FunctionLog& copy : *interim.mutable_function_logs()) {
    if (attributed_.size() >= kMaxHeldAttributed) {
      ++attributed_dropped_;
    } else {
      *attributed_.Add() = std::move(copy);
    }
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
  LogAttributed();
  std::vector<std::string> lines;
  {
    absl::MutexLock lock(&mutex_);
    flush_posted_ = false;
    lines.swap(held_);
    held_bytes_ = 0;
    // The lines dropped came after those held: said in their place, and the lines after them
    // go on as made.
    if (const int64_t dropped = std::exchange(dropped_, 0); dropped > 0) {
      lines.push_back(DroppedLine(dropped));
    }
  }
  // In pieces the stream's queue can take one at a time, so that a burst held while the client
  // lagged goes out as the stream drains rather than wait, whole, for the answer.
  size_t next = 0;
  while (next < lines.size()) {
    v1::SessionOutput early;
    early.set_partial(true);
    int64_t bytes = 0;
    size_t end = next;
    for (; end < lines.size() && (end == next || bytes < kPieceBytes); ++end) {
      bytes += static_cast<int64_t>(lines[end].size());
      early.add_lines(lines[end]);
    }
    if (!writer_(std::move(early))) break;
    next = end;
  }
  if (next == lines.size()) return;
  // The stream holds too much its client has not read: the rest waits, ahead of later lines,
  // and is tried again shortly (or goes with the answer).
  absl::MutexLock lock(&mutex_);
  std::vector<std::string> rest(std::make_move_iterator(lines.begin() + next),
                                std::make_move_iterator(lines.end()));
  for (std::string& line : held_) rest.push_back(std::move(line));
  held_.swap(rest);
  held_bytes_ = 0;
  for (const std::string& line : held_) held_bytes_ += HeldCost(line);
  if (!flush_posted_) {
    flush_posted_ = true;
    auto retry = std::make_shared<asio::steady_timer>(executor_, std::chrono::milliseconds(20));
    retry->async_wait([retry, weak = weak_from_this()](const asio::error_code&) {
      if (const std::shared_ptr<EarlyLogLines> self = weak.lock()) self->Flush();
    });
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
  if (dropped > 0) lines.push_back(DroppedLine(dropped));
  // At the head of the answer, in the order they were made.
  google::protobuf::RepeatedPtrField<std::string> answer_lines;
  answer_lines.Swap(answer.mutable_lines());
  for (std::string& line : lines) answer.add_lines(std::move(line));
  for (std::string& line : answer_lines) answer.add_lines(std::move(line));
}

void EarlyLogLines::LogAttributed() {
  google::protobuf::RepeatedPtrField<worker::v1::FunctionLog> copies;
  int64_t dropped = 0;
  {
    absl::MutexLock lock(&mutex_);
    copies.Swap(&attributed_);
    dropped = std::exchange(attributed_dropped_, 0);
  }
  LogFunctionLines(copies);
  if (dropped > 0) CountFunctionLogLinesLeftOut(dropped);
}

}  // namespace cnp::couchdb
