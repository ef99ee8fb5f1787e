// A stand-in for the pool's blocking interface (pool::TaskRunner, what the uploader calls from
// its own thread): it answers resolve tasks at once, from a table, the way a worker would after
// importing the functions: decorated ones get "|version", undecorated ones none, unknown ones
// NOT_FOUND and those of refused modules PERMISSION_DENIED. (The awaitable interface's fake is
// FakeTaskRunner, fake_task_runner.h.)
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/pool/task_runner.h"

namespace cnp::testing {

class FakeBlockingTaskRunner final : public pool::TaskRunner {
 public:
  // A function that imports; `version` is its @version, or none when undecorated.
  void Define(const std::string& name, std::optional<int64_t> version) {
    functions_[name] = version;
  }
  // Functions of modules starting with `prefix` are refused by the operator's allow-list.
  void Refuse(const std::string& prefix) { refused_.insert(prefix); }
  // Makes every task fail as if the workers could not be reached.
  void BreakWith(absl::Status status) { broken_ = std::move(status); }

  int resolve_tasks() const { return resolve_tasks_; }

  absl::StatusOr<pool::Reply> Run(const pool::Task& task, absl::Time) override {
    if (!broken_.ok()) return broken_;
    pool::Reply reply;
    if (!task.has_resolve()) {
      reply.mutable_failure()->set_code(worker::v1::Failure::INTERNAL);
      reply.mutable_failure()->set_message("the fake runner only resolves");
      return reply;
    }
    ++resolve_tasks_;
    for (const std::string& name : task.resolve().functions()) {
      v1::ResolvedFunction& out = *reply.mutable_resolve()->add_functions();
      out.set_function(name);
      out.set_module(name.substr(0, name.rfind('.')));
      if (IsRefused(name)) {
        out.set_error(absl::StrCat("module ", out.module(), " is not in the allowed modules"));
        out.set_error_code(7);  // PERMISSION_DENIED
        continue;
      }
      auto it = functions_.find(name);
      if (it == functions_.end()) {
        out.set_error(absl::StrCat("ModuleNotFoundError: No module named '", out.module(), "'"));
        out.set_error_code(5);  // NOT_FOUND
        continue;
      }
      out.set_has_version(it->second.has_value());
      out.set_version(it->second.value_or(0));
      out.set_versioned_name(it->second ? absl::StrCat(name, "|", *it->second) : name);
    }
    return reply;
  }

  absl::StatusOr<std::unique_ptr<pool::WorkerLease>> Lease(absl::Time) override {
    return absl::UnimplementedError("the fake runner holds no workers");
  }

 private:
  bool IsRefused(const std::string& name) const {
    for (const std::string& prefix : refused_) {
      if (absl::StartsWith(name, prefix)) return true;
    }
    return false;
  }

  std::map<std::string, std::optional<int64_t>> functions_;
  std::set<std::string> refused_;
  absl::Status broken_;
  int resolve_tasks_ = 0;
};

}  // namespace cnp::testing
