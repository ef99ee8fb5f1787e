#include "service/upload/version_resolver.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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

// Why a function whose call gives back `body` before running a line cannot serve at `path`
// (where the design document puts it), or "" when it can. Each such call would be answered
// with the TypeError the worker raises (service/worker/unrun_body.h); said here, it is said
// once, at the line naming the function, before anything is stored.
std::string UnrunBodyProblem(const std::vector<std::string>& path,
                             v1::ResolvedFunction::Body body) {
  if (body == v1::ResolvedFunction::PLAIN || path.empty()) return "";
  const bool async = body != v1::ResolvedFunction::GENERATOR;
  const std::string& section = path.front();
  const char* what = nullptr;
  const char* outcome = nullptr;
  if (section == "views" && path.size() == 3 && path[2] == "map") {
    if (!async) return "";  // a map function may yield its rows
    what = "a map function";
    outcome = "emit nothing";
  } else if (section == "lists") {
    if (!async) return "";  // the generator form f(head, req, rows)
    what = "a list function";
    outcome = "list nothing";
  } else if (section == "views") {
    what = "a reduce function";
    outcome = "reduce nothing";
  } else if (section == "validate_doc_update") {
    what = "a validate_doc_update";
    outcome = "validate nothing (every write would fail)";
  } else if (section == "filters") {
    what = "a filter";
    outcome = "filter nothing";
  } else if (section == "shows") {
    what = "a show function";
    outcome = "render nothing";
  } else if (section == "updates") {
    what = "an update function";
    outcome = "update nothing";
  } else if (section == "rewrites") {
    what = "a rewrite function";
    outcome = "rewrite nothing";
  } else {
    return "";
  }
  const char* returns = body == v1::ResolvedFunction::GENERATOR   ? "a generator (it has a yield)"
                        : body == v1::ResolvedFunction::COROUTINE ? "a coroutine (it is async def)"
                                                                  : "an async generator";
  return absl::StrCat("returns ", returns, " without running its body, so as ", what,
                      " it would ", outcome, ": every call would fail with a TypeError (take "
                      "out its yield or async)");
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
      } else {
        const std::string& versioned =
            resolved->versioned_name().empty() ? ref.name : resolved->versioned_name();
        PointerTo(ref.path).Set(spec.body, versioned.c_str(), spec.body.GetAllocator());
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace cnp::upload
