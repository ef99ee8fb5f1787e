#include "client/derive/changes_feed.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/derive/change_header.h"
#include "client/derive/couch_db.h"
#include "common/couchdb/json.h"
#include "common/couchdb/json_value_count.h"

namespace cnp::derive {
namespace {

constexpr absl::Duration kFirstReconnectDelay = absl::Milliseconds(100);
// Of a line longer than max_line_bytes, what is kept to find its seq and id (which CouchDB
// sends before the document).
constexpr size_t kKeptStartBytes = 64 << 10;

// A seq as ?since= takes it: a string's text, a number as written.
std::string SinceText(const rapidjson::Value& seq) {
  if (seq.IsString()) return std::string(seq.GetString(), seq.GetStringLength());
  return couchdb::ToJson(seq);
}

// 4xx answers other than 408 (request timeout) and 429 (too many requests) say the request
// itself is refused: a deleted database (404), revoked credentials (401, 403).
bool IsPermanent(long status) { return status >= 400 && status <= 499 && status != 408 && status != 429; }

// What a refusal means, with what CouchDB said (couchdb::Reason: trimmed, no control
// characters).
std::string Refusal(const couchdb::HttpResponse& response) {
  absl::string_view meaning;
  switch (response.status) {
    case 401: meaning = "the credentials are refused"; break;
    case 403: meaning = "the user may not read this database"; break;
    case 404: meaning = "the database does not exist, or no longer"; break;
    default: meaning = "the request is refused"; break;
  }
  return absl::StrCat(meaning, ": ", couchdb::Reason(response));
}

}  // namespace

void ChangeSignal::Notify() {
  absl::MutexLock lock(&mu_);
  ++count_;
}

int64_t ChangeSignal::count() const {
  absl::MutexLock lock(&mu_);
  return count_;
}

bool ChangeSignal::WaitPast(int64_t seen, absl::Duration max_wait) {
  absl::MutexLock lock(&mu_);
  auto moved = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ != seen; };
  return mu_.AwaitWithTimeout(absl::Condition(&moved), max_wait);
}

ChangesFeed::ChangesFeed(couchdb::CouchClient::Options http, std::string database,
                         std::string since, Options options, ChangeSignal& signal)
    : http_(std::move(http)),
      database_(std::move(database)),
      options_(options),
      signal_(signal),
      since_(std::move(since)) {
  {
    absl::MutexLock lock(&mu_);
    rapidjson::Value text(rapidjson::StringRef(since_.data(), since_.size()));
    taken_seq_json_ = couchdb::ToJson(text);
  }
  reader_ = std::thread([this] { Run(); });
}

ChangesFeed::~ChangesFeed() {
  RequestStop();
  reader_.join();
}

void ChangesFeed::RequestStop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

size_t ChangesFeed::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

absl::Status ChangesFeed::failure() const {
  absl::MutexLock lock(&mu_);
  return failure_status_;
}

int64_t ChangesFeed::reconnections() const {
  absl::MutexLock lock(&mu_);
  return reconnections_;
}

std::vector<std::string> ChangesFeed::TakeNotes() {
  absl::MutexLock lock(&mu_);
  return std::exchange(notes_, {});
}

ChangesAnswer ChangesFeed::Take(size_t max, size_t max_bytes) {
  std::string json = "{\"results\":[";
  {
    absl::MutexLock lock(&mu_);
    size_t n = std::min(max, queue_.size());
    size_t bytes = 0;
    for (size_t i = 0; i < n; ++i) {
      const size_t line_bytes = queue_.front().line.size();
      if (i > 0 && bytes + line_bytes > max_bytes) break;
      bytes += line_bytes;
      absl::StrAppend(&json, i ? "," : "", queue_.front().line);
      taken_seq_json_ = std::move(queue_.front().seq_json);
      queued_bytes_ -= line_bytes;
      queue_.pop_front();
    }
    absl::StrAppend(&json, "],\"last_seq\":", taken_seq_json_, "}");
  }
  // Each line was parsed (its depth bounded, its UTF-8 checked) when it was queued: this cannot
  // fail, given the two levels ({"results": [) that hold the lines here.
  absl::StatusOr<ChangesAnswer> answer = ParseChanges(json, couchdb::kMaxJsonDepth + 2);
  return answer.ok() ? *std::move(answer) : ChangesAnswer{};
}

void ChangesFeed::Note(std::string note) {
  {
    absl::MutexLock lock(&mu_);
    notes_.push_back(std::move(note));
  }
  signal_.Notify();
}

std::string ChangesFeed::ChangesPath(const std::string& since) const {
  return absl::StrCat(DbPath(database_), "/_changes?feed=continuous&include_docs=true&heartbeat=",
                      std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.heartbeat)),
                      "&since=", couchdb::CouchClient::EscapeSegment(since), "&style=all_docs");
}

void ChangesFeed::Run() {
  couchdb::CouchClient http(http_);
  // Three heartbeats without a byte: the connection is dead even if TCP has not noticed.
  const absl::Duration idle_limit = options_.heartbeat * 3;
  absl::Duration delay = kFirstReconnectDelay;
  auto stopping = [this] {
    absl::MutexLock lock(&mu_);
    return stopping_;
  };
  while (!stopping()) {
    partial_line_.clear();
    line_bytes_ = 0;
    line_values_ = {};
    last_byte_ = absl::Now();
    received_ = false;
    brought_change_ = false;
    ended_ = Ended::kDropped;
    failure_.clear();
    absl::StatusOr<couchdb::HttpResponse> answer = http.GetStreaming(
        ChangesPath(since_), [this](absl::string_view data) { return OnData(data); },
        [&] {
          if (stopping()) {
            ended_ = Ended::kStopped;
            return false;
          }
          if (absl::Now() - last_byte_ > idle_limit) {
            ended_ = Ended::kIdle;
            return false;
          }
          return true;
        });
    if (stopping()) break;
    bool cut = false;
    if (answer.ok() && ended_ == Ended::kDropped && !partial_line_.empty()) {
      std::string last = std::exchange(partial_line_, "");
      // The feed's last line, sent without its newline; or, when it is not JSON, a change the
      // connection was closed in the middle of, which the next connection brings whole (since_
      // is still before it). Too long, it would be unreadable whole as well.
      if (line_bytes_ > options_.max_line_bytes ||
          line_values_.values() > couchdb::MaxJsonValuesFor(options_.max_line_bytes)) {
        (void)OnUnreadableLine(last, TooLongLine());
      } else if (couchdb::ParseJsonExact(absl::StripAsciiWhitespace(last)).ok()) {
        (void)OnLine(last);
      } else {
        cut = true;
      }
      if (stopping()) break;
    }
    std::string why;
    if (cut) {
      why = "the server closed the feed in the middle of a change";
    } else if (ended_ == Ended::kIdle) {
      why = absl::StrCat("nothing, not even a heartbeat, for ", absl::FormatDuration(idle_limit));
    } else if (ended_ == Ended::kFailed) {
      why = failure_;
    } else if (!answer.ok()) {
      why = std::string(answer.status().message());
    } else if (answer->status < 200 || answer->status > 299) {
      absl::Status error = couchdb::HttpError(*answer, absl::StrCat("following the changes of ", database_),
                                              http.base_url());
      if (IsPermanent(answer->status)) {
        // Asking again cannot help: the database is gone, or the credentials no longer do.
        // Not INVALID_ARGUMENT (a usage error) nor FAILED_PRECONDITION (a lost lease).
        absl::StatusCode code = error.code();
        if (code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kFailedPrecondition) {
          code = absl::StatusCode::kUnknown;
        }
        {
          absl::MutexLock lock(&mu_);
          failure_status_ = absl::Status(
              code, absl::StrCat("the changes feed of ", database_, " at ", http.base_url(),
                                 " was refused with HTTP ", answer->status, " (", Refusal(*answer),
                                 "), which retrying will not change"));
        }
        Note(absl::StrCat("the changes feed of ", database_, " stopped: HTTP ", answer->status));
        break;
      }
      why = std::string(error.message());
    } else if (ended_ == Ended::kFinished && brought_change_) {
      // The server ended the feed itself with its last_seq (CouchDB's timeout) after changes:
      // carry on at once.
      delay = kFirstReconnectDelay;
      continue;
    } else if (ended_ == Ended::kFinished) {
      // Ended at once with nothing new: reopening at once would be a busy loop against
      // whatever answers like this (a proxy, say), so it waits as after an error.
      why = "the server ended it without a change";
    } else {
      why = "the server closed the feed";
    }
    if (brought_change_) delay = kFirstReconnectDelay;
    {
      absl::MutexLock lock(&mu_);
      ++reconnections_;
    }
    Note(absl::StrCat("the changes feed of ", database_, " ended (", why, "); reconnecting from seq ",
                      since_, " in ", absl::FormatDuration(delay)));
    absl::MutexLock lock(&mu_);
    auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stop), delay)) break;
    delay = std::min(delay * 2, options_.max_reconnect_delay);
  }
}

bool ChangesFeed::OnData(absl::string_view data) {
  last_byte_ = absl::Now();
  for (size_t start = 0;;) {
    const size_t newline = data.find('\n', start);
    absl::string_view piece = data.substr(start, newline == absl::string_view::npos ? newline : newline - start);
    line_bytes_ += piece.size();
    line_values_.Add(piece);
    const bool too_long = line_bytes_ > options_.max_line_bytes ||
                          line_values_.values() > couchdb::MaxJsonValuesFor(options_.max_line_bytes);
    if (too_long) {
      // Past the limit only the line's start is kept: enough to say which change it was.
      if (partial_line_.size() > kKeptStartBytes) {
        partial_line_.resize(kKeptStartBytes);
        partial_line_.shrink_to_fit();
      }
      piece = piece.substr(0, kKeptStartBytes - partial_line_.size());
    }
    if (newline == absl::string_view::npos) {
      partial_line_.append(piece.data(), piece.size());
      return true;
    }
    bool keep_going;
    if (too_long) {
      partial_line_.append(piece.data(), piece.size());
      keep_going = OnUnreadableLine(partial_line_, TooLongLine());
    } else if (partial_line_.empty()) {
      keep_going = OnLine(piece);
    } else {
      partial_line_.append(piece.data(), piece.size());
      keep_going = OnLine(partial_line_);
    }
    partial_line_.clear();
    line_bytes_ = 0;
    line_values_ = {};
    if (!keep_going) return false;
    start = newline + 1;
  }
}

std::string ChangesFeed::TooLongLine() const {
  return absl::StrCat("a change longer than ", options_.max_line_bytes, " bytes or holding more than ",
                      couchdb::MaxJsonValuesFor(options_.max_line_bytes),
                      " JSON values (one per 16 of those bytes)");
}

bool ChangesFeed::OnLine(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  if (line.empty()) return true;  // a heartbeat
  // Bounded in depth and parsed without recursion: a document is anyone's data, and one nested
  // a million levels deep must cost its own change, not the process a stack overflow nor the
  // feed its progress. Numbers of any size are read (CouchDB stores integers past a double's
  // range): such a document is derived, not skipped.
  absl::StatusOr<rapidjson::Document> parsed = couchdb::ParseJsonExact(line);
  if (!parsed.ok()) return OnUnreadableLine(line, std::string(parsed.status().message()));
  if (!parsed->IsObject()) {
    ended_ = Ended::kFailed;
    failure_ = "a line of the feed is not a JSON object";
    return false;
  }
  rapidjson::Document& change = *parsed;
  if (change.HasMember("error")) {
    ended_ = Ended::kFailed;
    auto text = [&](const char* field) -> std::string {
      return std::string(couchdb::StringMember(change, field));
    };
    failure_ = absl::StrCat("the server sent an error in the feed: ", text("error"), ": ", text("reason"));
    if (failure_.size() > 300) failure_.resize(300);
    return false;
  }
  if (auto last = change.FindMember("last_seq"); last != change.MemberEnd() && !change.HasMember("id")) {
    since_ = SinceText(last->value);
    received_ = true;
    ended_ = Ended::kFinished;
    return true;
  }
  auto seq = change.FindMember("seq");
  if (seq == change.MemberEnd() || seq->value.IsNull() || !change.HasMember("id")) return true;
  since_ = SinceText(seq->value);
  return Enqueue(couchdb::ToJson(seq->value), std::string(line));
}

bool ChangesFeed::OnUnreadableLine(absl::string_view text, const std::string& why) {
  std::optional<ChangeHeader> header = ScanChangeHeader(text, ChangeText::kRow);
  if (!header.has_value()) {
    ended_ = Ended::kFailed;
    failure_ = absl::StrCat("a line of the feed is not usable (", why, ") and names no change (seq and id)");
    return false;
  }
  absl::StatusOr<rapidjson::Document> seq = couchdb::ParseJson(header->seq_json);
  if (!seq.ok()) return false;  // cannot be: the scanner wrote it
  since_ = SinceText(*seq);
  return Enqueue(header->seq_json, UnreadableChangeJson(*header, why));
}

bool ChangesFeed::Enqueue(std::string seq_json, std::string line) {
  received_ = true;
  brought_change_ = true;
  {
    absl::MutexLock lock(&mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || queue_.empty() ||
             (queue_.size() < options_.max_queued && queued_bytes_ < options_.max_queued_bytes);
    };
    mu_.Await(absl::Condition(&room));
    if (stopping_) return false;
    queued_bytes_ += line.size();
    queue_.push_back(Change{std::move(seq_json), std::move(line)});
  }
  last_byte_ = absl::Now();  // the time spent waiting for room is ours, not the server's silence
  signal_.Notify();
  return true;
}

}  // namespace cnp::derive
