#include "service/upload/version_resolver.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/call_limit.h"
#include "common/function_parameters.h"
#include "common/utf8_text.h"
#include "rapidjson/pointer.h"

namespace cnp::upload {
namespace {

// google.rpc.Code values the worker reports in ResolvedFunction.error_code.
constexpr int kPermissionDenied = 7;

std::string Explain(const v1::ResolvedFunction& resolved) {
  if (resolved.error_code() == kPermissionDenied) {
    return absl::StrCat("\"", resolved.function(), "\" is refused: ", resolved.error());
  }
  return absl::StrCat("\"", resolved.function(), "\" cannot be used: ", resolved.error());
}

// Where a design document puts a function, what runs it, and whether a generator may serve
// there (a map function yields its rows; a list f(head, req, rows) yields its chunks).
struct FunctionPlace {
  const char* section;  // path[0]; "views" with path[2] "map" or "reduce"
  const char* view_part;
  const char* what;
  const char* outcome;
  bool generator_serves;
};
constexpr FunctionPlace kFunctionPlaces[] = {
    {"views", "map", "a map function", "emit nothing", true},
    {"views", "reduce", "a reduce function", "reduce nothing", false},
    {"lists", nullptr, "a list function", "list nothing", true},
    {"validate_doc_update", nullptr, "a validate_doc_update",
     "validate nothing (every write would fail)", false},
    {"filters", nullptr, "a filter", "filter nothing", false},
    {"shows", nullptr, "a show function", "render nothing", false},
    {"updates", nullptr, "an update function", "update nothing", false},
    {"rewrites", nullptr, "a rewrite function", "rewrite nothing", false},
};

// Why a function whose call gives back `body` before running a line cannot serve at `path`
// (where the design document puts it), or "" when it can. Each such call would be answered
// with the TypeError the worker raises (service/worker/unrun_body.h); said here, it is said
// once, at the line naming the function, before anything is stored.
std::string UnrunBodyProblem(const std::vector<std::string>& path,
                             v1::ResolvedFunction::Body body) {
  if (body == v1::ResolvedFunction::PLAIN || path.empty()) return "";
  for (const FunctionPlace& place : kFunctionPlaces) {
    if (path.front() != place.section) continue;
    if (place.view_part != nullptr && (path.size() != 3 || path[2] != place.view_part)) continue;
    if (body == v1::ResolvedFunction::GENERATOR && place.generator_serves) return "";
    const char* returns = body == v1::ResolvedFunction::GENERATOR   ? "a generator (it has a yield)"
                          : body == v1::ResolvedFunction::COROUTINE ? "a coroutine (it is async def)"
                                                                    : "an async generator";
    return absl::StrCat("returns ", returns, " without running its body, so as ", place.what,
                        " it would ", place.outcome, ": every call would fail with a TypeError "
                        "(take out its yield or async)");
  }
  return "";
}

// The kind of function a design document's `path` holds (a list is given (head, req) or, as a
// generator, its rows too).
std::optional<FunctionRole> RoleAt(const std::vector<std::string>& path,
                                   const v1::ResolvedFunction& resolved) {
  if (path.empty()) return std::nullopt;
  const std::string& section = path.front();
  if (section == "views" && path.size() == 3) {
    if (path[2] == "map") return FunctionRole::kMap;
    if (path[2] == "reduce") return FunctionRole::kReduce;
  }
  if (section == "validate_doc_update") return FunctionRole::kValidate;
  if (section == "filters") return FunctionRole::kFilter;
  if (section == "shows") return FunctionRole::kShow;
  if (section == "updates") return FunctionRole::kUpdate;
  if (section == "lists") {
    return resolved.body() == v1::ResolvedFunction::GENERATOR ? FunctionRole::kGeneratorList
                                                              : FunctionRole::kList;
  }
  if (section == "rewrites") return FunctionRole::kRewrite;
  return std::nullopt;
}

// Why the function `resolved` describes cannot take the arguments passed at `path`, or "".
std::string ParametersProblem(const std::vector<std::string>& path,
                              const v1::ResolvedFunction& resolved) {
  const std::optional<FunctionRole> role = RoleAt(path, resolved);
  if (!role || !resolved.has_parameters()) return "";
  return ParameterProblem(*role, resolved.parameters());
}

rapidjson::Pointer PointerTo(const std::vector<std::string>& path) {
  rapidjson::Pointer pointer;
  for (const std::string& token : path) {
    pointer = pointer.Append(token.data(), static_cast<rapidjson::SizeType>(token.size()));
  }
  return pointer;
}

}  // namespace

absl::Status ResolveVersions(pool::TaskRunner& runner, absl::Time deadline,
                             std::vector<DesignDocSpec>& specs, ProblemList& problems,
                             std::stop_token stop) {
  // Each distinct name is imported once, however many documents use it.
  std::map<std::string, const v1::ResolvedFunction*> by_name;
  pool::Task task;
  v1::ResolveRequest& request = *task.mutable_resolve();
  for (const DesignDocSpec& spec : specs) {
    for (const FunctionRef& ref : spec.functions) {
      if (by_name.emplace(ref.name, nullptr).second) request.add_functions(ref.name);
    }
  }
  if (request.functions_size() == 0) return absl::OkStatus();

  absl::StatusOr<pool::Reply> reply = runner.RunUnlessStopped(task, deadline, std::move(stop));
  if (!reply.ok()) {
    return absl::Status(reply.status().code(),
                        absl::StrCat("could not resolve the functions' versions in a worker: ",
                                     reply.status().message()));
  }
  if (reply->has_failure()) {
    // The whole task failed: every function shares the reason.
    for (const DesignDocSpec& spec : specs) {
      for (const FunctionRef& ref : spec.functions) {
        problems.Error(ref.location, absl::StrCat("\"", ref.name, "\" cannot be resolved: ",
                                                  reply->failure().message()));
      }
    }
    return absl::OkStatus();
  }
  if (!reply->has_resolve()) {
    return absl::InternalError("the worker answered a resolve task with something else");
  }
  for (const v1::ResolvedFunction& resolved : reply->resolve().functions()) {
    auto it = by_name.find(resolved.function());
    if (it != by_name.end()) it->second = &resolved;
  }

  for (DesignDocSpec& spec : specs) {
    for (const FunctionRef& ref : spec.functions) {
      const v1::ResolvedFunction* resolved = by_name[ref.name];
      if (resolved == nullptr) {
        problems.Error(ref.location,
                       absl::StrCat("\"", ref.name, "\" was not resolved by the worker"));
      } else if (!resolved->error().empty()) {
        problems.Error(ref.location, Explain(*resolved));
      } else if (std::string unrun = UnrunBodyProblem(ref.path, resolved->body());
                 !unrun.empty()) {
        problems.Error(ref.location, absl::StrCat("\"", ref.name, "\" ", unrun));
      } else if (std::string unfit = ParametersProblem(ref.path, *resolved); !unfit.empty()) {
        problems.Error(ref.location, absl::StrCat("\"", ref.name, "\": ", unfit));
      } else {
        const std::string& versioned =
            resolved->versioned_name().empty() ? ref.name : resolved->versioned_name();
        if (versioned.size() > kMaxFunctionNameBytes) {
          // Every call naming it would be refused (common/call_limit.h).
          const size_t bar = std::min(versioned.rfind('|'), versioned.size());
          problems.Error(ref.location,
                         absl::StrCat("the function name \"", Utf8Prefix(versioned, 60), "...",
                                      versioned.substr(bar), "\" is ", versioned.size(),
                                      " bytes long with its version; at most ",
                                      kMaxFunctionNameBytes, " are taken"));
          continue;
        }
        PointerTo(ref.path).Set(spec.body, versioned.c_str(), spec.body.GetAllocator());
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace cnp::upload
