#include "client/derive/preflight.h"

#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/function_parameters.h"

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
  if (!resolved.ok()) {
    // A refusal that every call would meet the same way (a token missing or wrong, a target
    // that is no cnp-server) ends the run now: a --once run with no change to map reported
    // "caught up" and exit 0 at every run. Anything that may pass (a service not up yet,
    // overloaded, slow, a proxy's 502) is left to the run, as before.
    const absl::StatusCode code = resolved.status().code();
    if (code != absl::StatusCode::kUnauthenticated && code != absl::StatusCode::kPermissionDenied &&
        code != absl::StatusCode::kUnimplemented && code != absl::StatusCode::kInvalidArgument &&
        code != absl::StatusCode::kFailedPrecondition) {
      return absl::OkStatus();
    }
    return absl::Status(resolved.status().code(),
                        absl::StrCat("checking the handlers with cnp-server: ",
                                     resolved.status().message(), "; nothing was written"));
  }
  for (const v1::ResolvedFunction& f : resolved->functions()) {
    for (const Stage& s : declaration.stages) {
      if (s.handler != f.function()) continue;
      std::string problem = f.error();
      // A handler whose call gives back a coroutine (or, for a reduce, any generator) runs
      // none of its body: every document would fail with the worker's TypeError.
      const bool unrun = f.body() == v1::ResolvedFunction::COROUTINE ||
                         f.body() == v1::ResolvedFunction::ASYNC_GENERATOR ||
                         (s.reduce && f.body() == v1::ResolvedFunction::GENERATOR);
      // A call naming a versioned function without its version fails with a version mismatch
      // (as couch_named_python's did) on every document: Resolve answers it, to say the name.
      if (problem.empty() && f.has_version() && !absl::StrContains(s.handler, '|')) {
        problem = absl::StrCat("it has @version(", f.version(), "), so every call would fail with a version "
                               "mismatch: name it ", f.versioned_name());
      }
      if (problem.empty() && unrun) {
        const char* returns = f.body() == v1::ResolvedFunction::GENERATOR   ? "a generator"
                              : f.body() == v1::ResolvedFunction::COROUTINE ? "a coroutine"
                                                                            : "an async generator";
        problem = absl::StrCat("it returns ", returns,
                               " without running its body, so every document would fail with "
                               "a TypeError (take out its yield or async)");
      }
      if (problem.empty() && f.has_parameters()) {
        problem = ParameterProblem(s.reduce ? FunctionRole::kReduce : FunctionRole::kMap, f.parameters());
      }
      if (problem.empty()) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          s.reduce ? "reduce" : "map", " handler ", s.handler, " (", s.source, " -> ", s.target,
          "): ", problem, "; nothing was written"));
    }
  }
  return CheckHandlerVersionsOnDisk(declaration, cnp, timeout);
}

absl::Status CheckHandlerVersionsOnDisk(const Declaration& declaration, const client::Client& cnp,
                                        std::optional<absl::Duration> timeout) {
  std::vector<std::string> unversioned;
  for (const Stage& s : declaration.stages) {
    if (const size_t bar = s.handler.find('|'); bar != std::string::npos) {
      unversioned.push_back(s.handler.substr(0, bar));
    }
  }
  if (unversioned.empty()) return absl::OkStatus();
  absl::StatusOr<v1::ResolveResponse> resolved = cnp.Resolve(unversioned, timeout);
  if (!resolved.ok()) return absl::OkStatus();
  for (const v1::ResolvedFunction& f : resolved->functions()) {
    if (!f.error().empty()) continue;
    for (const Stage& s : declaration.stages) {
      const size_t bar = s.handler.find('|');
      int64_t named = 0;
      if (bar == std::string::npos || s.handler.compare(0, bar, f.function()) != 0 ||
          !absl::SimpleAtoi(absl::string_view(s.handler).substr(bar + 1), &named)) {
        continue;
      }
      if (f.has_version() && f.version() == named) continue;
      return absl::FailedPreconditionError(absl::StrCat(
          s.reduce ? "reduce" : "map", " handler ", s.handler, " (", s.source, " -> ", s.target,
          "): the code on disk is now ",
          f.has_version() ? absl::StrCat("@version(", f.version(), ")") : "without @version",
          "; to derive with it, name the handler ", f.versioned_name(),
          " and raise the stage's version (its targets are then derived again); or put the "
          "code of version ", named, " back"));
    }
  }
  return absl::OkStatus();
}

}  // namespace cnp::derive
