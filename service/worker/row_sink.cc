#include "service/worker/row_sink.h"

namespace cnp::worker {

RowSink::RowSink(rapidjson::StringBuffer& out) : out_(out), writer_(out) { out_.Put('['); }

bool RowSink::Add(PyObject* key, PyObject* value) {
  if (rows_ > 0) out_.Put(',');
  if (!writer_.WritePair(key, value)) {
    if (rows_ > 0) out_.Pop(1);
    return false;
  }
  ++rows_;
  return true;
}

bool RowSink::AddItem(PyObject* item) {
  if ((PyTuple_Check(item) || PyList_Check(item)) && PySequence_Fast_GET_SIZE(item) == 2) {
    return Add(PySequence_Fast_GET_ITEM(item, 0), PySequence_Fast_GET_ITEM(item, 1));
  }
  return Add(item, Py_None);
}

void RowSink::Finish() { out_.Put(']'); }

}  // namespace cnp::worker
