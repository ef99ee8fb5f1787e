#include "client/derive/preflight.h"

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace cnp::derive {

absl::Status CheckBeforeWriting(const Declaration& declaration, CouchDb& couch,
                                const client::Client& cnp, std::optional<absl::Duration> timeout) {
  // A reduce stage's source is a map stage's target, which the run creates.
  std::set<std::string> sources;
  for (const Stage& s : declaration.stages) {
    if (!s.reduce) sources.insert(s.source);
  }
  for (const std::string& source : sources) {
    absl::StatusOr<std::optional<rapidjson::Document>> info =
        couch.GetIfExists(DbPath(source), absl::StrCat("reading source database ", source));
    if (!info.ok()) return info.status();
    if (!info->has_value()) {
      return absl::NotFoundError(absl::StrCat("source database ", source, " does not exist at ",
                                              couch.base_url(),
                                              "; nothing was written (check DECLARATION.yml)"));
    }
  }

  std::vector<std::string> handlers;
  for (const Stage& s : declaration.stages) handlers.push_back(s.handler);
  absl::StatusOr<v1::ResolveResponse> resolved = cnp.Resolve(handlers, timeout);
  if (!resolved.ok()) return absl::OkStatus();  // the run waits for the service
  for (const v1::ResolvedFunction& f : resolved->functions()) {
    if (f.error().empty()) continue;
    for (const Stage& s : declaration.stages) {
      if (s.handler != f.function()) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          s.reduce ? "reduce" : "map", " handler ", s.handler, " (", s.source, " -> ", s.target,
          "): ", f.error(), "; nothing was written"));
    }
  }
  return absl::OkStatus();
}

}  // namespace cnp::derive
