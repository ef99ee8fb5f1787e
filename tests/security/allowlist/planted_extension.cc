// An extension module an attacker would plant, built for bare_bytecode_extension_worker_test:
// the test copies it into a directory on the worker's path as `planted.so` or
// `planted.cpython-311-x86_64-linux-gnu.so`. Its init function is code run the moment the
// worker loads it: it leaves `marker` in the directory the library was loaded from, and the
// module it makes says where it came from (WHO).
#include <Python.h>
#include <dlfcn.h>

#include <cstdio>
#include <string>

namespace {

PyModuleDef planted_module = {
    PyModuleDef_HEAD_INIT, "planted", "Code another user planted.", -1, nullptr,
};

void LeaveMarker() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&LeaveMarker), &info) == 0 || info.dli_fname == nullptr) {
    return;
  }
  std::string library = info.dli_fname;
  std::string marker = library.substr(0, library.rfind('/') + 1) + "marker";
  if (std::FILE* file = std::fopen(marker.c_str(), "w"); file != nullptr) std::fclose(file);
}

}  // namespace

PyMODINIT_FUNC PyInit_planted() {
  LeaveMarker();
  PyObject* module = PyModule_Create(&planted_module);
  if (module != nullptr && PyModule_AddStringConstant(module, "WHO", "planted extension") != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
