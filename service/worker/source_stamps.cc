#include "service/worker/source_stamps.h"

#include <Python.h>
#include <sys/stat.h>

#include <vector>

#include "service/worker/py_ref.h"
#include "service/worker/py_text.h"

namespace cnp::worker {
namespace {

// The module's __file__, read from its dict (no attribute hooks run); empty if it has none.
std::string ModuleFile(PyObject* module) {
  if (!PyModule_Check(module)) return "";
  PyObject* file = PyDict_GetItemString(PyModule_GetDict(module), "__file__");  // borrowed
  if (file == nullptr || !PyUnicode_Check(file)) return "";
  PyRef bytes = PyRef::Steal(PyUnicode_EncodeFSDefault(file));
  if (!bytes) {
    PyErr_Clear();
    return "";
  }
  return std::string(PyBytes_AS_STRING(bytes.get()), PyBytes_GET_SIZE(bytes.get()));
}

}  // namespace

std::string TopLevelPackage(const std::string& module) {
  return module.substr(0, module.find('.'));
}

SourceStamps::Stamp SourceStamps::StampOf(const std::string& file) {
  Stamp stamp;
  stamp.file = file;
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) return stamp;
  stamp.exists = true;
  stamp.device = st.st_dev;
  stamp.inode = st.st_ino;
  stamp.size = st.st_size;
  stamp.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  return stamp;
}

void SourceStamps::RecordNewModules() {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  Py_ssize_t position = 0;
  PyObject* key;
  PyObject* module;
  while (PyDict_Next(modules, &position, &key, &module)) {
    std::string name = Utf8Text(key);
    if (name.empty() || !seen_.insert(name).second) continue;
    std::string file = ModuleFile(module);
    if (file.empty() || !policy_.IsUnderCodeRoots(file)) continue;
    stamps_[name] = StampOf(file);
  }
}

bool SourceStamps::AnyChanged(const std::set<std::string>& tops) const {
  for (const auto& [name, stamp] : stamps_) {
    if (tops.count(TopLevelPackage(name)) == 0) continue;
    if (!(StampOf(stamp.file) == stamp)) return true;
  }
  return false;
}

std::vector<std::string> SourceStamps::FilesOf(const std::set<std::string>& tops) const {
  std::vector<std::string> files;
  for (const auto& [name, stamp] : stamps_) {
    if (tops.count(TopLevelPackage(name)) != 0) files.push_back(stamp.file);
  }
  return files;
}

namespace {

// The directory listings importlib caches may predate new files.
void InvalidateImportCaches() {
  PyRef importlib = PyRef::Steal(PyImport_ImportModule("importlib"));
  PyRef done = importlib ? PyRef::Steal(PyObject_CallMethod(importlib.get(), "invalidate_caches",
                                                            nullptr))
                         : PyRef();
  if (!done) PyErr_Clear();
}

}  // namespace

SourceStamps::Forgotten SourceStamps::Forget(const std::set<std::string>& tops) {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  Forgotten forgotten;
  forgotten.tops = tops;
  for (const auto& [name, stamp] : stamps_) {
    if (tops.count(TopLevelPackage(name)) != 0) forgotten.stamps.emplace(name, stamp);
  }
  for (const auto& [name, stamp] : forgotten.stamps) {
    if (PyObject* module = PyDict_GetItemString(modules, name.c_str()); module != nullptr) {
      forgotten.modules.emplace_back(name, PyRef::Borrow(module));
      if (PyDict_DelItemString(modules, name.c_str()) != 0) PyErr_Clear();
    }
    stamps_.erase(name);
    seen_.erase(name);
  }
  InvalidateImportCaches();
  return forgotten;
}

void SourceStamps::Restore(Forgotten forgotten) {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  std::vector<std::string> imported_since;
  for (const auto& [name, stamp] : stamps_) {
    if (forgotten.tops.count(TopLevelPackage(name)) != 0) imported_since.push_back(name);
  }
  for (const std::string& name : imported_since) {
    if (PyDict_GetItemString(modules, name.c_str()) != nullptr &&
        PyDict_DelItemString(modules, name.c_str()) != 0) {
      PyErr_Clear();
    }
    stamps_.erase(name);
    seen_.erase(name);
  }
  for (const auto& [name, module] : forgotten.modules) {
    if (PyDict_SetItemString(modules, name.c_str(), module.get()) != 0) PyErr_Clear();
  }
  for (auto& [name, stamp] : forgotten.stamps) {
    seen_.insert(name);
    stamps_.insert_or_assign(name, std::move(stamp));
  }
}

}  // namespace cnp::worker
