#include "service/worker/function_registry.h"

#include <algorithm>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/call_limit.h"
#include "service/worker/accepted_arguments.h"
#include "service/worker/forked_child.h"
#include "service/worker/py_text.h"

namespace cnp::worker {
namespace {

// As many names as one call or CouchDB session may name: more would make every map_doc load
// them all again.
constexpr size_t kMaxCachedNames = kMaxFunctionsPerCall;
constexpr absl::Duration kChangeCheckInterval = absl::Seconds(1);

std::optional<int64_t> DeclaredVersion(PyObject* function) {
  PyRef version = PyRef::Steal(PyObject_GetAttrString(function, "_cnp_version"));
  if (!version || !PyLong_Check(version.get())) {
    PyErr_Clear();
    return std::nullopt;
  }
  long long value = PyLong_AsLongLong(version.get());
  if (value == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return std::nullopt;
  }
  return value;
}

// The module's attribute, read from its dict: neither a module-level __getattr__ nor a
// ModuleType subclass's __getattribute__ gets a say in what a request reaches.
absl::StatusOr<PyRef> ModuleAttribute(PyObject* module, const FunctionName& name) {
  if (!PyModule_Check(module)) {
    return absl::NotFoundError(absl::StrCat("TypeError: '", name.module, "' is a ",
                                            Py_TYPE(module)->tp_name, ", not a module"));
  }
  PyObject* found = PyDict_GetItemString(PyModule_GetDict(module), name.attribute.c_str());
  if (found == nullptr) {
    PyErr_Clear();
    return absl::NotFoundError(absl::StrCat("AttributeError: module '", name.module,
                                            "' has no attribute '", name.attribute, "'"));
  }
  return PyRef::Borrow(found);
}

// Whether `module` is in sys.modules: after a failed import, whether its own code ran through.
bool ModuleIsImported(const std::string& module) {
  return PyDict_GetItemString(PyImport_GetModuleDict(), module.c_str()) != nullptr;
}

// What the once-a-second looks and the remembered failures are kept by: the function and the
// version asked for, so that a new version (the operator just bumped it) is looked for at once.
std::string ChangeKey(const FunctionName& name) {
  return absl::StrCat(name.path, "|", name.version ? absl::StrCat(*name.version) : "");
}

}  // namespace

FunctionRegistry::FunctionRegistry(ModulePolicy policy, std::function<absl::Time()> clock)
    : policy_(std::move(policy)), clock_(std::move(clock)), stamps_(policy_) {}

absl::StatusOr<LoadedFunction> FunctionRegistry::ImportUncached(const FunctionName& name) {
  // Nothing is imported on behalf of a name the policy refuses.
  if (absl::Status s = policy_.CheckBeforeImport(name); !s.ok()) {
    stamps_.RecordNewModules();  // packages above the module may have been imported
    return s;
  }
  PyRef module = PyRef::Steal(PyImport_ImportModule(name.module.c_str()));
  LeaveIfForkedChild();  // a module's top-level code may fork too
  stamps_.RecordNewModules();
  if (!module) return ImportFailed(name);
  absl::StatusOr<PyRef> callable = ModuleAttribute(module.get(), name);
  if (!callable.ok()) return callable.status();
  if (absl::Status s = policy_.CheckFunction(name, callable->get()); !s.ok()) return s;
  LoadedFunction loaded;
  loaded.module = Utf8Text(PyFunction_GetModule(callable->get()));
  loaded.version = DeclaredVersion(callable->get());
  loaded.max_positional_args = PositionalParameters(callable->get());
  loaded.callable = *std::move(callable);
  return loaded;
}

absl::Status FunctionRegistry::Preload(absl::string_view module) {
  absl::StatusOr<FunctionName> name = ParseModuleName(module);
  if (!name.ok()) return name.status();
  absl::Status checked = policy_.CheckBeforeImport(*name);
  if (checked.ok()) {
    PyRef imported = PyRef::Steal(PyImport_ImportModule(name->module.c_str()));
    LeaveIfForkedChild();
    if (!imported) checked = WithoutFilesRead(ImportFailed(*name));
  }
  stamps_.RecordNewModules();  // what imported, so that a later change of its files is seen
  return checked;
}

const LoadedFunction* FunctionRegistry::Store(const FunctionName& name, LoadedFunction loaded) {
  auto stored = std::make_unique<LoadedFunction>(std::move(loaded));
  return by_path_.insert_or_assign(name.path, std::move(stored)).first->second.get();
}

absl::Status FunctionRegistry::RememberIfCodeRaised(const std::string& key, absl::Status failed,
                                                   std::vector<std::string> files) {
  std::optional<std::vector<std::string>> read = FilesRead(failed);
  if (!read) return failed;  // refused, or not found: no code ran, nothing costly to repeat
  failed = WithoutFilesRead(std::move(failed));
  files.insert(files.end(), read->begin(), read->end());
  failed_imports_.Remember(key, failed, files, clock_());
  return failed;
}

absl::StatusOr<const LoadedFunction*> FunctionRegistry::Import(const FunctionName& name,
                                                               bool rate_limited) {
  if (auto it = by_path_.find(name.path); it != by_path_.end()) return it->second.get();
  // A module whose code raised is not imported again until its files change: a view build
  // names it in every call.
  std::string key = ChangeKey(name);
  bool files_changed = false;
  if (std::optional<absl::Status> failed =
          failed_imports_.Recall(key, rate_limited, clock_(), &files_changed)) {
    return *failed;
  }
  absl::StatusOr<LoadedFunction> loaded = ImportUncached(name);
  // A function added to a module this worker imported before is not in that import: Python
  // keeps the module as it was. If the package's files changed since, import it anew and look
  // once more (a name still missing costs one stat() per module file, at most once a second
  // when rate limited).
  if (absl::IsNotFound(loaded.status())) {
    if (auto fresh = ImportIfChanged(name, name.module, rate_limited && !files_changed)) {
      return *fresh;
    }
  }
  if (!loaded.ok()) {
    return RememberIfCodeRaised(key, loaded.status(),
                                stamps_.FilesOf({TopLevelPackage(name.module)}));
  }
  return Store(name, *std::move(loaded));
}

std::optional<absl::StatusOr<const LoadedFunction*>> FunctionRegistry::ImportIfChanged(
    const FunctionName& name, std::string own_module, bool rate_limited) {
  // Per function and requested version: a stale name sent again and again is looked at once a
  // second, while a new version (the operator just bumped it) is looked at at once.
  std::string key = ChangeKey(name);
  absl::Time now = clock_();
  // The code on disk did not import when last tried: while its files are as they were, that
  // is the answer (not the version mismatch, not another import).
  bool files_changed = false;
  if (std::optional<absl::Status> failed =
          failed_imports_.Recall(key, rate_limited, now, &files_changed)) {
    return *failed;
  }
  if (rate_limited && !files_changed) {
    if (last_change_check_.size() >= kMaxCachedNames) last_change_check_.clear();
    auto [it, first] = last_change_check_.try_emplace(key, now);
    if (!first) {
      if (now - it->second < kChangeCheckInterval) return std::nullopt;
      it->second = now;
    }
  }
  std::set<std::string> tops{TopLevelPackage(name.module), TopLevelPackage(own_module)};
  if (in_task_ && std::includes(unchanged_in_task_.begin(), unchanged_in_task_.end(),
                                tops.begin(), tops.end())) {
    return std::nullopt;
  }
  if (!stamps_.AnyChanged(tops)) {
    if (in_task_) unchanged_in_task_.insert(tops.begin(), tops.end());
    return std::nullopt;
  }

  SourceStamps::Forgotten forgotten = stamps_.Forget(tops);
  std::vector<std::pair<std::string, std::unique_ptr<LoadedFunction>>> dropped;
  for (auto it = by_path_.begin(); it != by_path_.end();) {
    if (tops.count(TopLevelPackage(it->first)) != 0 ||
        tops.count(TopLevelPackage(it->second->module)) != 0) {
      dropped.emplace_back(it->first, std::move(it->second));
      it = by_path_.erase(it);
    } else {
      ++it;
    }
  }
  by_name_.clear();
  ++generation_;

  absl::StatusOr<LoadedFunction> fresh = ImportUncached(name);
  if (fresh.ok()) {
    failed_imports_.Clear();  // what failed before may have lacked this code
    return Store(name, *std::move(fresh));
  }
  // The code imports; the name is wrong.
  if (ModuleIsImported(name.module)) return WithoutFilesRead(fresh.status());
  // The new code does not import (a syntax error, an exception at its top level): keep the
  // package as it was, so that the functions whose version still matches go on running rather
  // than all failing with this error. The change is still seen (the stamps put back differ
  // from the disk), but the failure is remembered with the files as they are now: this name is
  // answered with it, without another import, until they change again (the fix is saved).
  std::vector<std::string> files = stamps_.FilesOf(tops);  // what imported before the failure
  stamps_.Restore(std::move(forgotten));
  for (auto& [path, function] : dropped) by_path_.insert_or_assign(path, std::move(function));
  std::vector<std::string> before = stamps_.FilesOf(tops);
  files.insert(files.end(), before.begin(), before.end());
  return RememberIfCodeRaised(key, fresh.status(), std::move(files));
}

absl::StatusOr<const LoadedFunction*> FunctionRegistry::CheckVersion(
    const FunctionName& name, const LoadedFunction* loaded, bool rate_limited) {
  if (loaded->version == name.version) return loaded;
  if (auto fresh = ImportIfChanged(name, loaded->module, rate_limited)) {
    if (!fresh->ok()) return fresh->status();
    loaded = **fresh;
    if (loaded->version == name.version) return loaded;
  }
  // A name without its |version for a function that has one: say which name to use.
  if (!name.version.has_value() && loaded->version.has_value()) {
    return absl::FailedPreconditionError(UnversionedNameMessage(name.path, *loaded->version));
  }
  return absl::FailedPreconditionError(VersionMismatchMessage(loaded->version, name.version));
}

absl::StatusOr<const LoadedFunction*> FunctionRegistry::Load(absl::string_view text) {
  if (text.size() <= kMaxFunctionNameBytes) {
    if (auto it = by_name_.find(std::string(text)); it != by_name_.end()) return it->second;
  }
  absl::StatusOr<FunctionName> name = ParseFunctionName(text);
  if (!name.ok()) return name.status();
  absl::StatusOr<const LoadedFunction*> loaded = Import(*name, /*rate_limited=*/true);
  if (!loaded.ok()) return loaded;
  loaded = CheckVersion(*name, *loaded, /*rate_limited=*/true);
  if (!loaded.ok()) return loaded;
  if (by_name_.size() >= kMaxCachedNames) by_name_.clear();
  by_name_.emplace(std::string(text), *loaded);
  return loaded;
}

absl::StatusOr<const LoadedFunction*> FunctionRegistry::Resolve(const FunctionName& name) {
  if (!name.version.has_value()) {
    // No version to compare: ask the disk directly, so upload appends the version of the
    // code as it is now. Resolve is rare (uploads, add_fun), never on the hot path.
    if (auto it = by_path_.find(name.path); it != by_path_.end()) {
      if (auto fresh = ImportIfChanged(name, it->second->module, /*rate_limited=*/false)) {
        return *fresh;
      }
    }
    return Import(name, /*rate_limited=*/false);
  }
  absl::StatusOr<const LoadedFunction*> loaded = Import(name, /*rate_limited=*/false);
  if (!loaded.ok()) return loaded;
  return CheckVersion(name, *loaded, /*rate_limited=*/false);
}

}  // namespace cnp::worker
