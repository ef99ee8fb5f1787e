// `cnp derive --once` over documents holding integers past a double's range, which CouchDB
// stores (jiffy keeps them as bignums) and serves digit for digit. Before, the batch holding one
// could not be parsed (rapidjson refuses such a number) and the document was recorded as
// UnreadableChange, its rows never written. Now its document reaches the handler as CouchDB
// wrote it (the handler gets the exact int), the rows it yields are written with every digit,
// and a reduce over them sums exact ints; a number of 5000 digits, past the 4300 digits Python's
// int() converts, fails that document alone, as its handler's error.
//
// pouchdb-server cannot store such numbers (JavaScript's numbers are doubles: a 401-digit
// integer comes back as null), so the CouchDB here is a small one in memory that keeps each
// document's text as it was written, as CouchDB keeps the digits.
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/couchdb/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/scripted_http_server.h"
#include "tests/support/server_process.h"

namespace cnp::derive {
namespace {

using ::cnp::testing::ChildProcess;
using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(120);

// CouchDB's HTTP API as cnp derive uses it, in memory: databases, documents kept as the JSON
// text written (with their _rev), _changes with include_docs, _all_docs by keys and by id
// range, _find on mr_key, _index, _local documents and _bulk_docs with revision checks.
class MemoryCouch {
 public:
  struct Database {
    std::map<std::string, std::string> docs;          // id -> JSON text, _rev included
    std::map<std::string, int> seq_of;                // id -> the seq of its last change
    std::map<std::string, std::string> local;         // _local documents by id
    int seq = 0;
  };

  // Stores `json` (an object with an "_id") in `db` as a new revision.
  std::string Write(const std::string& db, const std::string& json) {
    absl::MutexLock lock(&mu_);
    return WriteLocked(dbs_[db], json);
  }

  ScriptedResponse Answer(const HttpRequest& r) {
    absl::MutexLock lock(&mu_);
    const std::string& t = r.target;
    if (t == "/") return {200, R"({"couchdb":"Welcome","version":"3.4.3"})"};
    const std::string path = t.substr(0, t.find('?'));
    const std::string query = t.find('?') == std::string::npos ? "" : t.substr(t.find('?') + 1);
    const size_t slash = path.find('/', 1);
    const std::string name = Unescape(path.substr(1, slash == std::string::npos ? std::string::npos : slash - 1));
    const std::string rest = slash == std::string::npos ? "" : path.substr(slash);
    if (rest.empty()) {
      if (r.method == "PUT") {
        if (dbs_.count(name) > 0) return {412, R"({"error":"file_exists"})"};
        dbs_[name];
        return {201, R"({"ok":true})"};
      }
      if (dbs_.count(name) == 0) return {404, R"({"error":"not_found"})"};
      return {200, absl::StrCat(R"({"db_name":")", name, R"(","update_seq":)", dbs_[name].seq, "}")};
    }
    if (dbs_.count(name) == 0) return {404, R"({"error":"not_found","reason":"Database does not exist."})"};
    Database& db = dbs_[name];
    if (absl::StartsWith(rest, "/_local/")) {
      const std::string id = Unescape(rest.substr(8));
      if (r.method == "PUT") {
        db.local[id] = r.body;
        return {201, absl::StrCat(R"({"ok":true,"rev":"0-)", ++local_revs_, R"("})")};
      }
      auto it = db.local.find(id);
      if (it == db.local.end()) return {404, R"({"error":"not_found"})"};
      absl::StatusOr<rapidjson::Document> doc = couchdb::ParseJsonExact(it->second);
      doc->RemoveMember("_rev");
      doc->AddMember("_rev", rapidjson::Value(absl::StrCat("0-", local_revs_).c_str(), doc->GetAllocator()),
                     doc->GetAllocator());
      return {200, couchdb::ToJson(*doc)};
    }
    if (rest == "/_index") return {200, R"({"result":"created"})"};
    if (rest == "/_bulk_docs") {
      bulks_[name].push_back(r.body);
      absl::StatusOr<rapidjson::Document> body = couchdb::ParseJsonExact(r.body);
      std::string answer;
      for (const rapidjson::Value& doc : (*body)["docs"].GetArray()) {
        const std::string id = doc["_id"].GetString();
        const std::string rev = doc.HasMember("_rev") ? doc["_rev"].GetString() : "";
        auto it = db.docs.find(id);
        const std::string current = it == db.docs.end() ? "" : Field(it->second, "_rev");
        std::string result;
        if (rev != current) {
          result = absl::StrCat(R"({"id":")", id, R"(","error":"conflict","reason":"Document update conflict."})");
        } else {
          result = absl::StrCat(R"({"id":")", id, R"(","ok":true,"rev":")", WriteLocked(db, couchdb::ToJson(doc)), R"("})");
        }
        absl::StrAppend(&answer, answer.empty() ? "" : ",", result);
      }
      return {201, absl::StrCat("[", answer, "]")};
    }
    if (rest == "/_all_docs" && r.method == "POST") {
      absl::StatusOr<rapidjson::Document> body = couchdb::ParseJsonExact(r.body);
      std::vector<std::string> ids;
      for (const rapidjson::Value& id : (*body)["keys"].GetArray()) ids.push_back(id.GetString());
      return {200, Rows(db, ids, /*missing_too=*/true)};
    }
    if (rest == "/_all_docs") {
      const std::string start = JsonString(Param(query, "startkey")), end = JsonString(Param(query, "endkey"));
      std::vector<std::string> ids;
      for (const auto& [id, text] : db.docs) {
        if (id >= start && id <= end && !Deleted(text)) ids.push_back(id);
      }
      int limit = 0;
      if (absl::SimpleAtoi(Param(query, "limit"), &limit) && static_cast<int>(ids.size()) > limit) ids.resize(limit);
      return {200, Rows(db, ids, /*missing_too=*/false)};
    }
    if (rest == "/_changes") {
      int since = 0, limit = 0;
      if (!absl::SimpleAtoi(Param(query, "since"), &since) || !absl::SimpleAtoi(Param(query, "limit"), &limit)) {
        return {400, R"({"error":"bad_request"})"};
      }
      std::vector<std::pair<int, std::string>> changed;
      for (const auto& [id, seq] : db.seq_of) {
        if (seq > since) changed.emplace_back(seq, id);
      }
      std::sort(changed.begin(), changed.end());
      std::string results;
      int last = since, n = 0;
      for (const auto& [seq, id] : changed) {
        if (n++ == limit) break;
        const std::string& text = db.docs[id];
        absl::StrAppend(&results, results.empty() ? "" : ",", R"({"seq":)", seq, R"(,"id":")", id,
                        R"(","changes":[{"rev":")", Field(text, "_rev"), R"("}],)",
                        Deleted(text) ? R"("deleted":true,)" : "", R"("doc":)", text, "}");
        last = seq;
      }
      const int pending = std::max(0, static_cast<int>(changed.size()) - limit);
      return {200, absl::StrCat(R"({"results":[)", results, R"(],"last_seq":)", last, R"(,"pending":)", pending, "}")};
    }
    if (rest == "/_find") {
      // {"selector":{"mr_key":{"$eq":KEY}},...}: the live documents whose mr_key is KEY, compared
      // as JSON text (every digit).
      absl::StatusOr<rapidjson::Document> body = couchdb::ParseJsonExact(r.body);
      const std::string key = couchdb::ToJson((*body)["selector"]["mr_key"]["$eq"]);
      std::string docs;
      for (const auto& [id, text] : db.docs) {
        absl::StatusOr<rapidjson::Document> doc = couchdb::ParseJsonExact(text);
        if (Deleted(text) || !doc->HasMember("mr_key") || couchdb::ToJson((*doc)["mr_key"]) != key) continue;
        absl::StrAppend(&docs, docs.empty() ? "" : ",", text);
      }
      return {200, absl::StrCat(R"({"docs":[)", docs, R"(],"bookmark":"nil"})")};
    }
    return {500, R"({"error":"unscripted"})"};
  }

  // The text of every live document of `db` whose text holds `part`.
  std::vector<std::string> DocsWith(const std::string& db, const std::string& part) {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> found;
    for (const auto& [id, text] : dbs_[db].docs) {
      if (absl::StrContains(text, part) && !Deleted(text)) found.push_back(text);
    }
    return found;
  }
  std::string Local(const std::string& db, const std::string& id) {
    absl::MutexLock lock(&mu_);
    return dbs_[db].local[id];
  }
  std::vector<std::string> Bulks(const std::string& db) {
    absl::MutexLock lock(&mu_);
    return bulks_[db];
  }

 private:
  std::string WriteLocked(Database& db, const std::string& json) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<rapidjson::Document> doc = couchdb::ParseJsonExact(json);
    const std::string id = (*doc)["_id"].GetString();
    auto it = db.docs.find(id);
    const int generation = it == db.docs.end() ? 1 : std::stoi(Field(it->second, "_rev")) + 1;
    const std::string rev = absl::StrCat(generation, "-r", ++db.seq);
    doc->RemoveMember("_rev");
    doc->AddMember("_rev", rapidjson::Value(rev.c_str(), doc->GetAllocator()), doc->GetAllocator());
    db.docs[id] = couchdb::ToJson(*doc);
    db.seq_of[id] = db.seq;
    return rev;
  }
  static std::string Field(const std::string& json, const char* field) {
    absl::StatusOr<rapidjson::Document> doc = couchdb::ParseJsonExact(json);
    return std::string(couchdb::StringMember(*doc, field));
  }
  static bool Deleted(const std::string& json) {
    absl::StatusOr<rapidjson::Document> doc = couchdb::ParseJsonExact(json);
    return doc->HasMember("_deleted") && (*doc)["_deleted"].IsTrue();
  }
  std::string Rows(Database& db, const std::vector<std::string>& ids, bool missing_too) {
    std::string rows;
    for (const std::string& id : ids) {
      auto it = db.docs.find(id);
      rapidjson::Value id_value(rapidjson::StringRef(id.data(), id.size()));
      const std::string id_json = couchdb::ToJson(id_value);
      if (it == db.docs.end() || Deleted(it->second)) {
        if (missing_too) absl::StrAppend(&rows, rows.empty() ? "" : ",", R"({"key":)", id_json, R"(,"error":"not_found"})");
        continue;
      }
      absl::StrAppend(&rows, rows.empty() ? "" : ",", R"({"id":)", id_json, R"(,"key":)", id_json,
                      R"(,"value":{"rev":")", Field(it->second, "_rev"), R"("},"doc":)", it->second, "}");
    }
    return absl::StrCat(R"({"rows":[)", rows, "]}");
  }
  static std::string Param(const std::string& query, const std::string& name) {
    for (absl::string_view part : absl::StrSplit(query, '&')) {
      if (absl::StartsWith(part, name + "=")) return Unescape(part.substr(name.size() + 1));
    }
    return "";
  }
  static std::string JsonString(const std::string& json) {
    absl::StatusOr<rapidjson::Document> doc = couchdb::ParseJsonExact(json);
    return doc.ok() && doc->IsString() ? std::string(couchdb::StringView(*doc)) : "";
  }
  static std::string Unescape(absl::string_view text) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '%' && i + 2 < text.size()) {
        out.push_back(static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16)));
        i += 2;
      } else {
        out.push_back(text[i]);
      }
    }
    return out;
  }

  absl::Mutex mu_;
  std::map<std::string, Database> dbs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::string>> bulks_ ABSL_GUARDED_BY(mu_);
  int local_revs_ ABSL_GUARDED_BY(mu_) = 0;
};

// `digits` decimal digits, not a repeating pattern, starting with 1.
std::string Digits(size_t digits) {
  std::string text = "1";
  for (size_t i = 1; i < digits; ++i) text.push_back(static_cast<char>('0' + (i * 7 + i / 13) % 10));
  return text;
}

// Twice `number` (decimal digits), computed digit by digit.
std::string Twice(const std::string& number) {
  std::string out;
  int carry = 0;
  for (size_t i = number.size(); i-- > 0;) {
    const int d = (number[i] - '0') * 2 + carry;
    out.insert(out.begin(), static_cast<char>('0' + d % 10));
    carry = d / 10;
  }
  if (carry > 0) out.insert(out.begin(), '1');
  return out;
}

TEST(LargeNumbersTest, DocumentsWithIntegersPastADoublesRangeAreDerivedDigitForDigit) {
  MemoryCouch couch;
  ScriptedHttpServer http([&](const HttpRequest& r) { return couch.Answer(r); });
  const std::string big = Digits(401);
  const std::string huge = Digits(5000);  // past Python's 4300-digit int() limit
  couch.Write("src", absl::StrCat(R"({"_id":"a","n":)", big, "}"));
  couch.Write("src", absl::StrCat(R"({"_id":"b","n":)", big, R"(,"note":"the same key as a"})"));
  couch.Write("src", absl::StrCat(R"({"_id":"c","n":)", huge, "}"));
  couch.Write("src", R"({"_id":"d","n":5})");

  auto service = testing::ServerProcess::Start({"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"});
  ASSERT_TRUE(service.ok()) << service.status();
  const std::string dir = testing::MakeTempDir("large-numbers");
  const std::string declaration = dir + "/derive.yml";
  testing::WriteFile(declaration,
                     "name: big\n"
                     "handlers:\n"
                     "  tgt:\n"
                     "    src: {type: map, version: 1, handler: derive_fns.number_both}\n"
                     "  totals:\n"
                     "    tgt: {type: reduce, version: 1, handler: derive_fns.value_total}\n");
  auto run = ChildProcess::Start({testing::Runfile("client/cli/cnp"), "derive", "--once",
                                  "--target=" + (*service)->target(), http.url(), declaration},
                                 dir, "holding the lease", kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  std::optional<int> exit_code = (*run)->WaitForExitCode(kWait);
  ASSERT_TRUE(exit_code.has_value()) << "still running; it printed:\n" << (*run)->output();
  const std::string out = (*run)->output();
  // c's error was recorded: --once says so by its exit status.
  EXPECT_EQ(*exit_code, 3) << out;
  EXPECT_THAT(out, Not(HasSubstr("UnreadableChange"))) << out;

  // a's and b's rows: the key and the value with every digit, in the stored text.
  for (const char* id : {"a", "b"}) {
    std::vector<std::string> rows = couch.DocsWith("tgt", absl::StrCat(R"("mr_source_id":")", id, R"(")"));
    ASSERT_EQ(rows.size(), 1u) << id << "\n" << out;
    EXPECT_THAT(rows[0], HasSubstr(absl::StrCat(R"("mr_value":)", big, ",")));
    EXPECT_THAT(rows[0], HasSubstr(absl::StrCat(R"("mr_key":)", big, ",")));
  }
  // So were they sent: the _bulk_docs requests held the digits, not a rounded double.
  bool sent = false;
  for (const std::string& body : couch.Bulks("tgt")) sent = sent || absl::StrContains(body, absl::StrCat(R"("mr_key":)", big));
  EXPECT_TRUE(sent);
  // d, an ordinary document, is derived beside them; c, whose number Python's int() refuses,
  // is not, and is recorded as its handler's error, not as an unreadable change.
  EXPECT_EQ(couch.DocsWith("tgt", R"("mr_source_id":"d")").size(), 1u) << out;
  EXPECT_THAT(couch.DocsWith("tgt", R"("mr_source_id":"c")"), ::testing::IsEmpty());
  const std::string errors = couch.Local("tgt", "cnp-derive:big:errors");
  EXPECT_THAT(errors, HasSubstr(R"("doc_id":"c")")) << out;
  EXPECT_THAT(errors, HasSubstr(R"("type":"ValueError")")) << errors;
  EXPECT_THAT(errors, Not(HasSubstr("UnreadableChange")));
  EXPECT_THAT(errors, Not(HasSubstr(R"("doc_id":"a")")));

  // The reduce over a's and b's rows (one key): the sum of two exact ints.
  std::vector<std::string> totals = couch.DocsWith("totals", absl::StrCat(R"("mr_key":)", big, ","));
  ASSERT_EQ(totals.size(), 1u) << out;
  EXPECT_THAT(totals[0], HasSubstr(absl::StrCat(R"("mr_value":)", Twice(big), ",")));
  EXPECT_EQ(couch.DocsWith("totals", R"("mr_key":5,)").size(), 1u);

  // b changes, but not its number: its row is read back and compared, digit for digit equal,
  // so nothing is written (a row read back rounded, or compared as a double, would differ).
  const size_t bulks_before = couch.Bulks("tgt").size() + couch.Bulks("totals").size();
  couch.Write("src", absl::StrCat(R"({"_id":"b","n":)", big, R"(,"note":"edited"})"));
  auto again = ChildProcess::Start({testing::Runfile("client/cli/cnp"), "derive", "--once",
                                    "--target=" + (*service)->target(), http.url(), declaration},
                                   dir, "holding the lease", kWait);
  ASSERT_TRUE(again.ok()) << again.status();
  exit_code = (*again)->WaitForExitCode(kWait);
  ASSERT_TRUE(exit_code.has_value()) << (*again)->output();
  EXPECT_EQ(*exit_code, 0) << (*again)->output();
  EXPECT_THAT((*again)->output(), HasSubstr("src -> tgt: seq 5, 1 change(s)")) << (*again)->output();
  EXPECT_EQ(couch.Bulks("tgt").size() + couch.Bulks("totals").size(), bulks_before) << (*again)->output();
}

}  // namespace
}  // namespace cnp::derive
