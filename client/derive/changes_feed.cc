#include "client/derive/changes_feed.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/derive/couch_db.h"
#include "common/couchdb/json.h"

namespace cnp::derive {
namespace {

constexpr absl::Duration kFirstReconnectDelay = absl::Milliseconds(100);

// A seq as ?since= takes it: a string's text, a number as written.
std::string SinceText(const rapidjson::Value& seq) {
  if (seq.IsString()) return std::string(seq.GetString(), seq.GetStringLength());
  return couchdb::ToJson(seq);
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

int64_t ChangesFeed::reconnections() const {
  absl::MutexLock lock(&mu_);
  return reconnections_;
}

std::vector<std::string> ChangesFeed::TakeNotes() {
  absl::MutexLock lock(&mu_);
  return std::exchange(notes_, {});
}

rapidjson::Document ChangesFeed::Take(size_t max) {
  std::string json = "{\"results\":[";
  {
    absl::MutexLock lock(&mu_);
    size_t n = std::min(max, queue_.size());
    for (size_t i = 0; i < n; ++i) {
      absl::StrAppend(&json, i ? "," : "", queue_.front().line);
      taken_seq_json_ = std::move(queue_.front().seq_json);
      queue_.pop_front();
    }
    absl::StrAppend(&json, "],\"last_seq\":", taken_seq_json_, "}");
  }
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());  // each line was parsed when it was queued
  return doc;
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
                      "&since=", couchdb::CouchClient::EscapeSegment(since));
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
    last_byte_ = absl::Now();
    received_ = false;
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
    if (answer.ok() && ended_ == Ended::kDropped && !partial_line_.empty()) {
      std::string last = std::exchange(partial_line_, "");
      (void)OnLine(last);  // the feed's last line, sent without its newline
      if (stopping()) break;
    }
    std::string why;
    if (ended_ == Ended::kIdle) {
      why = absl::StrCat("nothing, not even a heartbeat, for ", absl::FormatDuration(idle_limit));
    } else if (ended_ == Ended::kFailed) {
      why = failure_;
    } else if (!answer.ok()) {
      why = std::string(answer.status().message());
    } else if (answer->status < 200 || answer->status > 299) {
      why = std::string(couchdb::HttpError(*answer, absl::StrCat("following the changes of ", database_),
                                          http.base_url())
                            .message());
    } else if (ended_ == Ended::kFinished) {
      // The server ended the feed itself with its last_seq (CouchDB's timeout): carry on.
      delay = kFirstReconnectDelay;
      continue;
    } else {
      why = "the server closed the feed";
    }
    if (received_) delay = kFirstReconnectDelay;
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
  size_t start = 0;
  for (size_t newline; (newline = data.find('\n', start)) != absl::string_view::npos; start = newline + 1) {
    absl::string_view piece = data.substr(start, newline - start);
    bool keep_going;
    if (partial_line_.empty()) {
      keep_going = OnLine(piece);
    } else {
      partial_line_.append(piece.data(), piece.size());
      keep_going = OnLine(partial_line_);
      partial_line_.clear();
    }
    if (!keep_going) return false;
  }
  if (partial_line_.size() + (data.size() - start) > options_.max_line_bytes) {
    ended_ = Ended::kFailed;
    failure_ = absl::StrCat("a change longer than ", options_.max_line_bytes, " bytes");
    return false;
  }
  partial_line_.append(data.data() + start, data.size() - start);
  return true;
}

bool ChangesFeed::OnLine(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  if (line.empty()) return true;  // a heartbeat
  rapidjson::Document change;
  change.Parse(line.data(), line.size());
  if (change.HasParseError() || !change.IsObject()) {
    ended_ = Ended::kFailed;
    failure_ = "a line of the feed is not a JSON object";
    return false;
  }
  if (change.HasMember("error")) {
    ended_ = Ended::kFailed;
    auto text = [&](const char* field) -> std::string {
      auto it = change.FindMember(field);
      return it != change.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
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
  Change queued{couchdb::ToJson(seq->value), std::string(line)};
  since_ = SinceText(seq->value);
  received_ = true;
  {
    absl::MutexLock lock(&mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || queue_.size() < options_.max_queued;
    };
    mu_.Await(absl::Condition(&room));
    if (stopping_) return false;
    queue_.push_back(std::move(queued));
  }
  last_byte_ = absl::Now();  // the time spent waiting for room is ours, not the server's silence
  signal_.Notify();
  return true;
}

}  // namespace cnp::derive
