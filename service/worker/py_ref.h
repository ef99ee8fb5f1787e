// An owning reference to a Python object: the one place reference counts are managed by RAII.
#pragma once

#include <Python.h>

#include <utility>

namespace cnp::worker {

class PyRef {
 public:
  PyRef() = default;
  // Takes over a new reference (what most C API calls return); nullptr is allowed.
  static PyRef Steal(PyObject* object) { return PyRef(object); }
  // Adds a reference to a borrowed object.
  static PyRef Borrow(PyObject* object) {
    Py_XINCREF(object);
    return PyRef(object);
  }

  PyRef(const PyRef& other) : object_(other.object_) { Py_XINCREF(object_); }
  PyRef(PyRef&& other) noexcept : object_(std::exchange(other.object_, nullptr)) {}
  PyRef& operator=(PyRef other) noexcept {
    std::swap(object_, other.object_);
    return *this;
  }
  ~PyRef() { Py_XDECREF(object_); }

  PyObject* get() const { return object_; }
  // Gives the reference away (to a C API call that steals it).
  PyObject* release() { return std::exchange(object_, nullptr); }
  explicit operator bool() const { return object_ != nullptr; }

 private:
  explicit PyRef(PyObject* object) : object_(object) {}
  PyObject* object_ = nullptr;
};

}  // namespace cnp::worker
