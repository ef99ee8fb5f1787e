#include "service/worker/python_runtime.h"

namespace cnp::worker {

PyObject* RuntimeModule() {
  static PyObject* module = nullptr;  // kept for the life of the process
  if (module == nullptr) module = PyImport_ImportModule("couch_named_python._runtime");
  return module;
}

}  // namespace cnp::worker
