// cnp derive's continuous _changes feed against a scripted server that drops it, ends it with
// a last_seq, and falls silent: each time the feed reconnects from the last sequence it read,
// and nothing is lost or read twice.
#include "client/derive/changes_feed.h"
#include "client/derive/change_header.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/json.h"
#include "tests/support/scripted_http_server.h"

namespace cnp::derive {
namespace {

using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr absl::Duration kWait = absl::Seconds(30);

std::string Change(const std::string& seq, const std::string& id) {
  return absl::StrCat(R"({"seq":)", seq, R"(,"id":")", id, R"(","changes":[{"rev":"1-x"}],"doc":{"_id":")", id,
                      R"(","_rev":"1-x"}})", "\n");
}

// Collects what the feed hands out until `done` says enough, waiting on its signal.
class Reader {
 public:
  Reader(ChangesFeed& feed, ChangeSignal& signal) : feed_(feed), signal_(signal) {}
  bool WaitFor(const std::function<bool()>& done) {
    absl::Time deadline = absl::Now() + kWait;
    while (true) {
      int64_t seen = signal_.count();
      Drain();
      if (done()) return true;
      if (absl::Now() > deadline) return false;
      signal_.WaitPast(seen, deadline - absl::Now());
    }
  }
  void Drain() {
    ChangesAnswer answer = feed_.Take(100);
    const rapidjson::Document& batch = answer.json;
    if (!batch.IsObject()) {
      notes.push_back("Take() answered no batch");
      return;
    }
    for (rapidjson::SizeType r = 0; r < batch["results"].Size(); ++r) {
      const auto& change = batch["results"][r];
      docs[change["id"].GetString()] = std::string(answer.DocText(r));
      ids.push_back(change["id"].GetString());
      if (change.HasMember(kUnreadableMember)) unreadable[change["id"].GetString()] = change[kUnreadableMember].GetString();
    }
    if (!batch["results"].Empty()) last_seq = couchdb::ToJson(batch["last_seq"]);
    for (std::string& note : feed_.TakeNotes()) notes.push_back(std::move(note));
  }
  bool Noted(const std::string& text) const {
    for (const std::string& note : notes) {
      if (absl::StrContains(note, text)) return true;
    }
    return false;
  }

  std::vector<std::string> ids;
  std::map<std::string, std::string> unreadable;  // id -> why
  std::map<std::string, std::string> docs;        // id -> its document as the server wrote it
  std::vector<std::string> notes;
  std::string last_seq;

 private:
  ChangesFeed& feed_;
  ChangeSignal& signal_;
};

TEST(ChangesFeedTest, ReconnectsFromTheLastSequenceAfterADropAnEndAndSilence) {
  absl::Mutex mu;
  bool released = false;
  int calls = 0;
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    ++calls;
    if (!absl::StartsWith(r.target, "/src/_changes?")) return {500, R"({"error":"unscripted"})"};
    if (calls == 1) {
      // Two changes and a heartbeat, then the connection's answer ends without a last_seq:
      // the server dropped the feed.
      return {200, absl::StrCat(Change("1", "a"), "\n", Change("2", "b"))};
    }
    if (calls == 2) {
      // An opaque CouchDB 3 sequence, then the feed's own end (CouchDB's timeout).
      return {200, absl::StrCat("\n", Change(R"("3-g1AAAA")", "c"), R"({"last_seq":"3-g1AAAA","pending":0})", "\n")};
    }
    // Then silence: not even a heartbeat, until the test is done.
    mu.Await(absl::Condition(&released));
    return {200, ""};
  });
  ChangeSignal signal;
  {
    ChangesFeed feed({.base_url = couch.url()}, "src", "0", {.heartbeat = absl::Milliseconds(100)}, signal);
    Reader reader(feed, signal);
    ASSERT_TRUE(reader.WaitFor([&] { return reader.ids.size() >= 3; })) << reader.ids.size();
    EXPECT_THAT(reader.ids, ElementsAre("a", "b", "c"));
    EXPECT_EQ(reader.last_seq, R"("3-g1AAAA")");
    // The third connection is silent: the feed gives up on it after three heartbeats.
    ASSERT_TRUE(reader.WaitFor([&] { return reader.Noted("not even a heartbeat"); }))
        << ::testing::PrintToString(reader.notes);
    EXPECT_TRUE(reader.Noted("the changes feed of src ended (the server closed the feed); reconnecting from seq 2"))
        << ::testing::PrintToString(reader.notes);
    EXPECT_GE(feed.reconnections(), 2);
    EXPECT_EQ(feed.queued(), 0u);
  }
  {
    absl::MutexLock lock(&mu);
    released = true;
  }
  std::vector<std::string> requests = couch.requests();
  ASSERT_GE(requests.size(), 3u);
  // Each connection asked for what followed the last change (or last_seq) it had read.
  EXPECT_THAT(requests[0], StartsWith("GET /src/_changes?feed=continuous&include_docs=true&heartbeat=100&since=0"));
  EXPECT_THAT(requests[1], HasSubstr("&since=2"));
  EXPECT_THAT(requests[2], HasSubstr("&since=3-g1AAAA"));
}

// A feed whose answer ends in the middle of a change (the connection closed mid-line): the cut
// change is read again from the next connection, not handed out as unreadable.
TEST(ChangesFeedTest, AFeedCutInTheMiddleOfAChangeReconnectsBeforeIt) {
  absl::Mutex mu;
  int calls = 0;
  const std::string cut = Change("2", "b");
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    ++calls;
    if (!absl::StartsWith(r.target, "/src/_changes?")) return {500, R"({"error":"unscripted"})"};
    if (calls == 1) return {200, absl::StrCat(Change("1", "a"), cut.substr(0, cut.size() / 2))};
    if (calls == 2) return {200, absl::StrCat(cut, R"({"last_seq":"2","pending":0})", "\n")};
    return {200, R"({"last_seq":"2","pending":0})"};
  });
  ChangeSignal signal;
  ChangesFeed feed({.base_url = couch.url()}, "src", "0", {.heartbeat = absl::Milliseconds(100)}, signal);
  Reader reader(feed, signal);
  ASSERT_TRUE(reader.WaitFor([&] { return reader.ids.size() >= 2; })) << reader.ids.size();
  EXPECT_THAT(reader.ids, ElementsAre("a", "b"));
  EXPECT_TRUE(reader.unreadable.empty()) << ::testing::PrintToString(reader.unreadable);
  EXPECT_TRUE(reader.Noted("in the middle of a change")) << ::testing::PrintToString(reader.notes);
  std::vector<std::string> requests = couch.requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_THAT(requests[1], HasSubstr("&since=1&"));
}

// What this shows: with 50 changes in one answer and room for 8, the queue is seen holding exactly
// 8 before anyone takes from it, and once a reader takes them all 50 arrive, in order, none lost.
// (That the reader is paused meanwhile, rather than e.g. still parsing, is not observed here.)
TEST(ChangesFeedTest, AQueueFillsToItsLimitAndEveryChangeArrivesInOrderOnceTaken) {
  std::string many;
  for (int i = 1; i <= 50; ++i) many += Change(absl::StrCat(i), absl::StrCat("d", i));
  absl::Mutex mu;
  bool released = false;
  int calls = 0;
  ScriptedHttpServer couch([&](const HttpRequest&) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    if (++calls == 1) return {200, many + R"({"last_seq":50})" "\n"};
    mu.Await(absl::Condition(&released));
    return {200, ""};
  });
  ChangeSignal signal;
  {
    ChangesFeed feed({.base_url = couch.url()}, "src", "0",
                     {.heartbeat = absl::Seconds(10), .max_queued = 8}, signal);
    // The reader fills the queue, then waits for room.
    absl::Time deadline = absl::Now() + kWait;
    for (int64_t seen = signal.count(); feed.queued() < 8 && absl::Now() < deadline; seen = signal.count()) {
      signal.WaitPast(seen, deadline - absl::Now());
    }
    EXPECT_EQ(feed.queued(), 8u);
    Reader reader(feed, signal);
    ASSERT_TRUE(reader.WaitFor([&] { return reader.ids.size() >= 50; })) << reader.ids.size();
    EXPECT_EQ(reader.ids.front(), "d1");
    EXPECT_EQ(reader.ids.back(), "d50");
    EXPECT_EQ(reader.last_seq, "50");
  }
  absl::MutexLock lock(&mu);
  released = true;
}

// A deleted database (404) or revoked credentials (401, 403) do not heal by asking again: the
// feed stops at the first such answer and says why. A 429 (too many requests) is retried.
TEST(ChangesFeedTest, ARefusalThatRetryingCannotChangeStopsTheFeed) {
  for (int refusal : {404, 401, 403}) {
    SCOPED_TRACE(refusal);
    absl::Mutex mu;
    int calls = 0;
    ScriptedHttpServer couch([&](const HttpRequest&) -> ScriptedResponse {
      absl::MutexLock lock(&mu);
      if (++calls == 1) return {429, R"({"error":"too_many_requests","reason":"slow down"})"};
      return {refusal, R"({"error":"refused","reason":"Database does not exist."})"};
    });
    ChangeSignal signal;
    ChangesFeed feed({.base_url = couch.url()}, "src", "0", {.heartbeat = absl::Seconds(10)}, signal);
    Reader reader(feed, signal);
    ASSERT_TRUE(reader.WaitFor([&] { return !feed.failure().ok(); })) << ::testing::PrintToString(reader.notes);
    const absl::Status failure = feed.failure();
    EXPECT_THAT(failure.message(), HasSubstr("the changes feed of src"));
    EXPECT_THAT(failure.message(), HasSubstr(absl::StrCat("HTTP ", refusal)));
    EXPECT_THAT(failure.message(), HasSubstr("Database does not exist."));
    EXPECT_FALSE(absl::IsInvalidArgument(failure) || absl::IsFailedPrecondition(failure)) << failure;
    ASSERT_TRUE(reader.WaitFor([&] { return reader.Noted(absl::StrCat("stopped: HTTP ", refusal)); }))
        << ::testing::PrintToString(reader.notes);
    // The 429 was retried; the refusal was not.
    EXPECT_TRUE(reader.Noted("HTTP 429")) << ::testing::PrintToString(reader.notes);
    EXPECT_EQ(couch.requests().size(), 2u);
  }
}

// True when `text` is well-formed UTF-8 (no sequence cut short).
bool IsWholeUtf8(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3
                                        : (lead >> 3) == 0x1E ? 4 : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    i += length;
  }
  return true;
}

// What CouchDB said in a refusal is shown as every other CouchDB error is (couchdb::Reason):
// a terminal escape in it is made harmless, and a long reason is cut at a character boundary,
// not in the middle of one (before, the feed kept its own copy that did neither).
TEST(ChangesFeedTest, ARefusalShowsCouchDbsReasonTrimmedAndWithoutControlCharacters) {
  // 1 + 2 * 150 bytes: the 200-byte cut falls inside an "é".
  std::string reason = "x";
  for (int i = 0; i < 150; ++i) reason += "\u00e9";
  ScriptedHttpServer couch([&](const HttpRequest&) -> ScriptedResponse {
    return {404, absl::StrCat(R"({"error":"not_found\u001b[31m","reason":")", reason, R"("})")};
  });
  ChangeSignal signal;
  ChangesFeed feed({.base_url = couch.url()}, "src", "0", {.heartbeat = absl::Seconds(10)}, signal);
  Reader reader(feed, signal);
  ASSERT_TRUE(reader.WaitFor([&] { return !feed.failure().ok(); })) << ::testing::PrintToString(reader.notes);
  const std::string message(feed.failure().message());
  EXPECT_THAT(message, HasSubstr("the database does not exist, or no longer"));
  EXPECT_THAT(message, HasSubstr("not_found [31m: x\xC3\xA9"));
  EXPECT_EQ(message.find('\x1b'), std::string::npos) << message;
  EXPECT_TRUE(IsWholeUtf8(message)) << message;
  EXPECT_THAT(message, HasSubstr("\xC3\xA9...)"));
}

// A document is anyone's data: one nested deeper than cnp parses (a recursive parse of a
// million levels would overflow the stack), one that is not valid UTF-8, one longer than the
// feed reads, one as dense as [0,0,...] (24 times its size once parsed), each costs its own
// change and no more. The change comes out
// marked unreadable with its seq and id (to be recorded as that document's error), and the
// feed goes on past it without reconnecting: reading it again could only fail again. (Before,
// the first of them ended the feed, which reopened at the same place and failed for ever.)
TEST(ChangesFeedTest, AChangeThatCannotBeReadIsHandedOutAsUnreadableAndTheFeedGoesOn) {
  const std::string deep = absl::StrCat(R"({"seq":2,"id":"deep","changes":[{"rev":"1-x"}],)",
                                        R"("doc":{"_id":"deep","_rev":"1-x","x":)",
                                        std::string(5000, '['), std::string(5000, ']'),
                                        "}}\n");
  const std::string not_utf8 = "{\"seq\":\"3-g1AA\",\"id\":\"latin1\",\"changes\":[{\"rev\":\"1-x\"}],"
                               "\"doc\":{\"_id\":\"latin1\",\"town\":\"Troms\xf8\"}}\n";
  // Not unreadable: a line exactly 4096 levels deep (the line, its document, and 4094 levels of
  // "x"), whose batch is two levels deeper ({"results": [...]}).
  const std::string deepest = absl::StrCat(R"({"seq":"2-g1AB","id":"deepest","changes":[{"rev":"1-x"}],)",
                                           R"("doc":{"_id":"deepest","x":)", std::string(4094, '['),
                                           std::string(4094, ']'), "}}\n");
  // Nor an integer past a double's range, which CouchDB stores (jiffy's bignums).
  const std::string big_doc = absl::StrCat(R"({"_id":"big","n":)", std::string(401, '7'), "}");
  const std::string big = absl::StrCat(R"({"seq":"3-g1AB","id":"big","changes":[{"rev":"1-x"}],"doc":)", big_doc, "}\n");
  const std::string too_long = absl::StrCat(R"({"seq":4,"id":"long","changes":[{"rev":"1-x"}],"doc":{"pad":")",
                                            std::string(3500000, 'x'), "\"}}\n");
  // 200,000 values in 400 KB, within the 3 MB limit but past its 187,500 values.
  std::string zeros;
  for (int i = 0; i < 200000; ++i) zeros += "0,";
  const std::string dense = absl::StrCat(R"({"seq":4,"id":"dense","changes":[{"rev":"1-x"}],"doc":{"x":[)",
                                         zeros, "0]}}\n");
  absl::Mutex mu;
  bool released = false;
  int calls = 0;
  ScriptedHttpServer couch([&](const HttpRequest&) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    if (++calls == 1) {
      return {200, absl::StrCat(Change("1", "first"), deep, deepest, not_utf8, big, too_long, dense, Change("5", "last"),
                                R"({"last_seq":5})", "\n")};
    }
    mu.Await(absl::Condition(&released));
    return {200, ""};
  });
  ChangeSignal signal;
  {
    ChangesFeed feed({.base_url = couch.url()}, "src", "0",
                     {.heartbeat = absl::Seconds(10), .max_line_bytes = 3000000}, signal);
    Reader reader(feed, signal);
    ASSERT_TRUE(reader.WaitFor([&] { return reader.ids.size() >= 8; })) << ::testing::PrintToString(reader.notes);
    EXPECT_THAT(reader.ids, ElementsAre("first", "deep", "deepest", "latin1", "big", "long", "dense", "last"));
    EXPECT_EQ(reader.last_seq, "5");
    EXPECT_THAT(reader.unreadable,
                ::testing::UnorderedElementsAre(
                    ::testing::Pair("deep", HasSubstr("nested deeper than 4096 levels")),
                    ::testing::Pair("latin1", HasSubstr("a string that is not valid UTF-8")),
                    ::testing::Pair("long", HasSubstr("a change longer than 3000000 bytes")),
                    ::testing::Pair("dense", HasSubstr("holding more than 187500 JSON values"))));
    // Handed out whole, its document as the server wrote it (for the Map call).
    EXPECT_EQ(reader.docs["big"], big_doc);
    // The feed ended with its last_seq and was reopened at once from there: no failure, no
    // reconnection after an error.
    EXPECT_EQ(feed.reconnections(), 0);
    EXPECT_THAT(reader.notes, ::testing::IsEmpty());
    EXPECT_TRUE(feed.failure().ok()) << feed.failure();
  }
  absl::MutexLock lock(&mu);
  released = true;
}

// A line that cannot be parsed and does not say which change it was cannot be passed over: the
// feed ends (and reopens from the last change it read), as before.
TEST(ChangesFeedTest, AnUnreadableLineThatNamesNoChangeEndsTheFeed) {
  ScriptedHttpServer couch([&](const HttpRequest&) -> ScriptedResponse {
    return {200, Change("1", "first") + "{\"id\":\"no-seq\",\"doc\":" + std::string(5000, '[') + "\n"};
  });
  ChangeSignal signal;
  ChangesFeed feed({.base_url = couch.url()}, "src", "0", {.heartbeat = absl::Seconds(10)}, signal);
  Reader reader(feed, signal);
  ASSERT_TRUE(reader.WaitFor([&] { return reader.Noted("names no change"); }))
      << ::testing::PrintToString(reader.notes);
  EXPECT_EQ(reader.ids.front(), "first");
  EXPECT_TRUE(reader.Noted("reconnecting from seq 1")) << ::testing::PrintToString(reader.notes);
}

// Large documents: Take hands out no more bytes than asked (at least one change), and the reader
// stops reading once the queue holds max_queued_bytes, however few changes that is.
TEST(ChangesFeedTest, BatchesAndTheQueueAreBoundedInBytes) {
  std::string big;
  for (int i = 1; i <= 6; ++i) {
    big += absl::StrCat(R"({"seq":)", i, R"(,"id":"big)", i, R"(","changes":[{"rev":"1-x"}],"doc":{"pad":")",
                        std::string(10000, 'x'), "\"}}\n");
  }
  absl::Mutex mu;
  bool released = false;
  int calls = 0;
  ScriptedHttpServer couch([&](const HttpRequest&) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    if (++calls == 1) return {200, big};
    mu.Await(absl::Condition(&released));
    return {200, ""};
  });
  ChangeSignal signal;
  {
    ChangesFeed feed({.base_url = couch.url()}, "src", "0",
                     {.heartbeat = absl::Seconds(10), .max_queued_bytes = 25000}, signal);
    absl::Time deadline = absl::Now() + kWait;
    for (int64_t seen = signal.count(); feed.queued() < 3 && absl::Now() < deadline; seen = signal.count()) {
      signal.WaitPast(seen, deadline - absl::Now());
    }
    EXPECT_EQ(feed.queued(), 3u);  // 2 lines are under 25000 bytes, the third passes them
    ChangesAnswer first = feed.Take(100, 21000);
    ASSERT_EQ(first.json["results"].Size(), 2u);
    ChangesAnswer one = feed.Take(100, 10);
    ASSERT_EQ(one.json["results"].Size(), 1u);
    EXPECT_EQ(std::string(one.json["results"][0]["id"].GetString()), "big3");
    Reader reader(feed, signal);
    ASSERT_TRUE(reader.WaitFor([&] { return reader.ids.size() >= 3; })) << reader.ids.size();
    EXPECT_THAT(reader.ids, ElementsAre("big4", "big5", "big6"));
  }
  absl::MutexLock lock(&mu);
  released = true;
}

// A server (or a proxy) that ends every feed at once with only its last_seq must not be asked
// again at once: each reopening waits the reconnect delay, which doubles.
TEST(ChangesFeedTest, AFeedEndedAtOnceWithoutAChangeIsReopenedAfterADelay) {
  absl::Mutex mu;
  std::vector<absl::Time> asked;
  ScriptedHttpServer couch([&](const HttpRequest&) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    asked.push_back(absl::Now());
    return {200, R"({"last_seq":"5-g1AAAA","pending":0})" "\n"};
  });
  ChangeSignal signal;
  std::vector<std::string> notes;
  std::vector<absl::Time> first_five;
  {
    ChangesFeed feed({.base_url = couch.url()}, "src", "0", {.heartbeat = absl::Seconds(10)}, signal);
    {
      absl::MutexLock lock(&mu);  // released before the feed stops: its request may need it
      auto five = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return asked.size() >= 5; };
      ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&five), kWait)) << asked.size();
      first_five.assign(asked.begin(), asked.begin() + 5);
    }
    notes = feed.TakeNotes();
  }
  // Delays of 100, 200, 400 and 800 ms lie between the first request and the fifth; without
  // them the five come within milliseconds.
  EXPECT_GE(first_five[4] - first_five[0], absl::Milliseconds(1500));
  ASSERT_FALSE(notes.empty());
  EXPECT_THAT(notes[0], HasSubstr("the changes feed of src ended (the server ended it without a change); "
                                  "reconnecting from seq 5-g1AAAA in 100ms"));
  EXPECT_THAT(couch.requests().back(), HasSubstr("&since=5-g1AAAA"));
}

}  // namespace
}  // namespace cnp::derive
