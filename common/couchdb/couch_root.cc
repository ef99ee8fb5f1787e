#include "common/couchdb/couch_root.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/couchdb/json.h"

namespace cnp::couchdb {

absl::Status CheckCouchRoot(CouchClient& couch, absl::string_view names_databases) {
  const std::string& url = couch.base_url();
  absl::StatusOr<HttpResponse> response = couch.Get("/");
  if (!response.ok()) return response.status();
  auto pass_root = [names_databases](absl::string_view probably) {
    return absl::StrCat("; pass CouchDB's root URL",
                        probably.empty() ? "" : absl::StrCat(" (here probably ", probably, ")"),
                        ", the one that answers {\"couchdb\":\"Welcome\",...} (behind a proxy, "
                        "with the proxy's path prefix): ",
                        names_databases);
  };
  if (response->status == 401 || response->status == 403 || response->status >= 500) {
    return HttpError(*response, "asking CouchDB's root", url);
  }
  absl::StatusOr<rapidjson::Document> answer = ParseJson(response->body);
  if (response->status < 200 || response->status > 299 || !answer.ok() || !answer->IsObject()) {
    return absl::InvalidArgumentError(absl::StrCat(
        url, " is not CouchDB's root: GET ", url, "/ answered HTTP ", response->status, " ",
        response->body.substr(0, 200), pass_root("")));
  }
  // CouchDB answers {"couchdb":"Welcome","version":...}; pouchdb-server, which stands in for
  // it in tests, {"express-pouchdb":"Welcome!",...}.
  if (answer->HasMember("couchdb") || answer->HasMember("express-pouchdb")) {
    return absl::OkStatus();
  }
  if (auto it = answer->FindMember("db_name"); it != answer->MemberEnd() && it->value.IsString()) {
    // The database's parent is most likely the root.
    const size_t scheme_end = url.find("://");
    const size_t path = url.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3);
    const std::string probably = path == std::string::npos ? "" : url.substr(0, url.rfind('/'));
    return absl::InvalidArgumentError(absl::StrCat(url, " is the URL of the database ",
                                                   it->value.GetString(), ", not CouchDB's root",
                                                   pass_root(probably)));
  }
  return absl::InvalidArgumentError(absl::StrCat(url, " is not CouchDB's root: GET ", url,
                                                 "/ answered ", ToJson(*answer).substr(0, 200),
                                                 pass_root("")));
}

}  // namespace cnp::couchdb
