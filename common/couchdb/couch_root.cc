#include "common/couchdb/couch_root.h"

#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/couchdb/json.h"

namespace cnp::couchdb {

namespace {

// "; pass CouchDB's root URL (here probably ...), ...: <names_databases>".
std::string PassRoot(absl::string_view probably, absl::string_view names_databases) {
  return absl::StrCat("; pass CouchDB's root URL",
                      probably.empty() ? "" : absl::StrCat(" (here probably ", probably, ")"),
                      ", the one that answers {\"couchdb\":\"Welcome\",...} (behind a proxy, "
                      "with the proxy's path prefix): ",
                      names_databases);
}

// What GET / of the base URL says it is.
struct RootAnswer {
  absl::Status failed;       // the request failed, or 401, 403, 5xx
  HttpResponse response;
  std::optional<rapidjson::Document> json;  // when it is a JSON object
  bool couchdb = false;      // CouchDB's welcome, or pouchdb-server's
  std::string database;      // its db_name, when it answers as a database does
};

RootAnswer AskRoot(CouchClient& couch) {
  RootAnswer out;
  absl::StatusOr<HttpResponse> response = couch.Get("/");
  if (!response.ok()) {
    out.failed = response.status();
    return out;
  }
  out.response = *std::move(response);
  if (out.response.status == 401 || out.response.status == 403 || out.response.status >= 500) {
    out.failed = HttpError(out.response, "asking CouchDB's root", couch.base_url());
    return out;
  }
  absl::StatusOr<rapidjson::Document> answer = ParseJson(out.response.body);
  if (out.response.status < 200 || out.response.status > 299 || !answer.ok() ||
      !answer->IsObject()) {
    return out;
  }
  // CouchDB answers {"couchdb":"Welcome","version":...}; pouchdb-server, which stands in for
  // it in tests, {"express-pouchdb":"Welcome!",...}.
  out.couchdb = answer->HasMember("couchdb") || answer->HasMember("express-pouchdb");
  if (auto it = answer->FindMember("db_name"); it != answer->MemberEnd() && it->value.IsString()) {
    out.database.assign(it->value.GetString(), it->value.GetStringLength());
  }
  out.json = *std::move(answer);
  return out;
}

absl::Status DatabaseUrlError(const std::string& url, const std::string& database,
                              absl::string_view names_databases) {
  // The database's parent is most likely the root.
  const size_t scheme_end = url.find("://");
  const size_t path = url.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3);
  const std::string probably = path == std::string::npos ? "" : url.substr(0, url.rfind('/'));
  return absl::InvalidArgumentError(absl::StrCat(url, " is the URL of the database ", database,
                                                 ", not CouchDB's root",
                                                 PassRoot(probably, names_databases)));
}

}  // namespace

absl::Status CheckCouchRoot(CouchClient& couch, absl::string_view names_databases,
                            AnswerQuoting quoting) {
  const std::string& url = couch.base_url();
  const RootAnswer root = AskRoot(couch);
  if (!root.failed.ok()) return root.failed;
  if (root.couchdb) return absl::OkStatus();
  // The database's name only when it is the URL's own last part: the caller sent it.
  if (!root.database.empty() &&
      (quoting == AnswerQuoting::kQuoted || absl::EndsWith(url, absl::StrCat("/", root.database)))) {
    return DatabaseUrlError(url, root.database, names_databases);
  }
  if (quoting == AnswerQuoting::kWithheld) {
    return absl::InvalidArgumentError(absl::StrCat(
        url, " is not CouchDB's root: GET ", url, "/ answered HTTP ", root.response.status,
        " without CouchDB's welcome ({\"couchdb\":\"Welcome\",...}), so nothing else was sent "
        "there; pass CouchDB's root URL (behind a proxy, with the proxy's path prefix)"));
  }
  if (!root.json.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        url, " is not CouchDB's root: GET ", url, "/ answered HTTP ", root.response.status, " ",
        root.response.body.substr(0, 200), PassRoot("", names_databases)));
  }
  return absl::InvalidArgumentError(absl::StrCat(url, " is not CouchDB's root: GET ", url,
                                                 "/ answered ", ToJson(*root.json).substr(0, 200),
                                                 PassRoot("", names_databases)));
}

absl::Status CheckNotADatabaseUrl(CouchClient& couch, absl::string_view names_databases) {
  const RootAnswer root = AskRoot(couch);
  if (!root.failed.ok() || root.couchdb || root.database.empty()) return absl::OkStatus();
  return DatabaseUrlError(couch.base_url(), root.database, names_databases);
}

}  // namespace cnp::couchdb
