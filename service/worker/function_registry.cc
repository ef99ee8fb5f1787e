#include "service/worker/function_registry.h"

#include "absl/strings/str_cat.h"
#include "service/worker/py_text.h"
#include "service/worker/user_exception.h"

namespace cnp::worker {
namespace {

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

std::string OwnModule(PyObject* function) {
  PyRef module = PyRef::Steal(PyObject_GetAttrString(function, "__module__"));
  PyErr_Clear();
  return Utf8Text(module.get());
}

// How many positional arguments a plain function or method accepts; -1 when unknown.
int MaxPositionalArgs(PyObject* function) {
  int bound = 0;
  PyRef code = PyRef::Steal(PyObject_GetAttrString(function, "__code__"));
  if (!code) {
    PyErr_Clear();
    PyRef underlying = PyRef::Steal(PyObject_GetAttrString(function, "__func__"));
    if (underlying) code = PyRef::Steal(PyObject_GetAttrString(underlying.get(), "__code__"));
    bound = 1;
  }
  if (!code || !PyCode_Check(code.get())) {
    PyErr_Clear();
    return -1;
  }
  auto* co = reinterpret_cast<PyCodeObject*>(code.get());
  if (co->co_flags & CO_VARARGS) return -1;
  return co->co_argcount - bound;
}

}  // namespace

absl::StatusOr<LoadedFunction> FunctionRegistry::ImportUncached(const FunctionName& name) {
  // Refuse the package before importing anything on its behalf.
  if (absl::Status s = policy_.CheckNotOurs(name.path, name.module); !s.ok()) return s;
  PyRef module = PyRef::Steal(PyImport_ImportModule(name.module.c_str()));
  if (!module) return absl::NotFoundError(TakeException().Summary());
  PyRef callable = PyRef::Steal(PyObject_GetAttrString(module.get(), name.attribute.c_str()));
  if (!callable) return absl::NotFoundError(TakeException().Summary());
  if (!PyCallable_Check(callable.get())) {
    return absl::NotFoundError(absl::StrCat("TypeError: ", name.path, " is a ",
                                            Py_TYPE(callable.get())->tp_name,
                                            ", not a function"));
  }
  LoadedFunction loaded;
  loaded.module = OwnModule(callable.get());
  if (loaded.module.empty()) loaded.module = name.module;
  if (absl::Status s = policy_.Check(name.path, name.module, loaded.module); !s.ok()) return s;
  loaded.version = DeclaredVersion(callable.get());
  loaded.max_positional_args = MaxPositionalArgs(callable.get());
  loaded.callable = std::move(callable);
  return loaded;
}

absl::StatusOr<const LoadedFunction*> FunctionRegistry::Import(const FunctionName& name) {
  if (auto it = by_path_.find(name.path); it != by_path_.end()) return &it->second;
  absl::StatusOr<LoadedFunction> loaded = ImportUncached(name);
  if (!loaded.ok()) return loaded.status();
  return &by_path_.emplace(name.path, *std::move(loaded)).first->second;
}

absl::StatusOr<const LoadedFunction*> FunctionRegistry::Load(absl::string_view text) {
  std::string key(text);
  if (auto it = by_name_.find(key); it != by_name_.end()) return it->second;
  absl::StatusOr<FunctionName> name = ParseFunctionName(text);
  if (!name.ok()) return name.status();
  absl::StatusOr<const LoadedFunction*> loaded = Import(*name);
  if (!loaded.ok()) return loaded;
  if ((*loaded)->version != name->version) {
    return absl::FailedPreconditionError(VersionMismatchMessage((*loaded)->version, name->version));
  }
  by_name_.emplace(std::move(key), *loaded);
  return loaded;
}

}  // namespace cnp::worker
