// The Python side of one map_doc, measured in one process with the worker's own code:
//   C++ core   rapidjson parse -> dict built in C++ -> f(doc) -> rows written by C++
//   baseline   json.loads -> f(doc) -> json.dumps, in the same embedded interpreter
// With --functions=N each document goes to N map functions, as CouchDB sends a design
// document's views together: the C++ core parses the document again for each function after
// the first (each gets the document as sent), the baseline shares one dict among them (the
// old Python servers' way).
// Reports µs per document for both, their ratio, and the C++ core against the 1.35 µs floor
// of performance.md. Not a test: run with
//   bazel run -c opt //tests/bench:worker_python_side_bench [-- --docs=N --rounds=R --functions=N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "service/worker/document_mapper.h"
#include "service/worker/interpreter.h"
#include "service/worker/py_ref.h"

namespace {

using cnp::worker::PyRef;
using Clock = std::chrono::steady_clock;

constexpr double kFloorMicros = 1.35;  // performance.md: C++ parse -> dict -> f -> C++ writer
constexpr char kFunctions[] = R"(
import json

def town(doc):
    yield doc["town"], 1

def baseline(texts, functions, loads=json.loads, dumps=json.dumps):
    fs = [town] * functions
    for text in texts:
        doc = loads(text)
        dumps([[list(pair) for pair in f(doc)] for f in fs])
)";

const char* const kTowns[] = {"Oslo", "Lima", "Kyoto", "Paris", "Nairobi", "Quito"};

std::vector<std::string> MakeDocs(int n) {
  std::vector<std::string> docs;
  docs.reserve(n);
  for (int i = 1; i <= n; ++i) {
    docs.push_back(absl::StrFormat(R"({"_id":"doc-%06d","_rev":"1-abc","town":"%s","n":%d})", i,
                                   kTowns[i % 6], i));
  }
  return docs;
}

double MicrosPerDoc(Clock::duration elapsed, size_t docs) {
  return std::chrono::duration<double, std::micro>(elapsed).count() / docs;
}

int IntFlag(int argc, char** argv, const char* name, int fallback) {
  size_t n = std::strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return std::atoi(argv[i] + n + 1);
  }
  return fallback;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int docs_count = std::clamp(IntFlag(argc, argv, "--docs", 200000), 1, 5000000);
  const int rounds = std::clamp(IntFlag(argc, argv, "--rounds", 5), 1, 50);
  const int functions = std::clamp(IntFlag(argc, argv, "--functions", 1), 1, 20);

  absl::StatusOr<std::string> package_dir = cnp::worker::FindPackageDir();
  if (!package_dir.ok()) {
    std::fprintf(stderr, "%s\n", std::string(package_dir.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<cnp::worker::CodeRoots> started =
      cnp::worker::StartInterpreter({.package_dir = *package_dir});
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", std::string(started.status().message()).c_str());
    return 1;
  }
  PyRef globals = PyRef::Steal(PyDict_New());
  PyDict_SetItemString(globals.get(), "__builtins__", PyEval_GetBuiltins());
  PyRef defined = PyRef::Steal(PyRun_String(kFunctions, Py_file_input, globals.get(), globals.get()));
  if (!defined) {
    PyErr_Print();
    return 1;
  }
  PyObject* town = PyDict_GetItemString(globals.get(), "town");
  PyObject* baseline = PyDict_GetItemString(globals.get(), "baseline");

  std::vector<std::string> docs = MakeDocs(docs_count);
  PyRef texts = PyRef::Steal(PyList_New(docs_count));
  for (int i = 0; i < docs_count; ++i) {
    PyList_SET_ITEM(texts.get(), i, PyUnicode_FromStringAndSize(docs[i].data(), docs[i].size()));
  }

  cnp::worker::DocumentMapper mapper(std::vector<PyObject*>(functions, town));
  PyRef function_count = PyRef::Steal(PyLong_FromLong(functions));
  std::string buffer;
  size_t output_bytes = 0;
  std::vector<double> core_micros, baseline_micros;
  for (int round = 0; round < rounds; ++round) {  // interleaved, so both see the same machine
    Clock::time_point start = Clock::now();
    for (const std::string& doc : docs) {
      if (!mapper.Map(doc, buffer).ok()) return 1;
      output_bytes += mapper.rows().size();
    }
    core_micros.push_back(MicrosPerDoc(Clock::now() - start, docs.size()));

    start = Clock::now();
    PyRef done = PyRef::Steal(
        PyObject_CallFunctionObjArgs(baseline, texts.get(), function_count.get(), nullptr));
    if (!done) {
      PyErr_Print();
      return 1;
    }
    baseline_micros.push_back(MicrosPerDoc(Clock::now() - start, docs.size()));
  }

  double core = Median(core_micros), python = Median(baseline_micros);
  std::printf("documents: %d x %d rounds (medians), %d function(s) each, sample rows: %.*s\n",
              docs_count, rounds, functions,
              static_cast<int>(mapper.rows().size()), mapper.rows().data());
  std::printf("C++ core  (parse -> dict -> f -> writer): %.3f us/doc\n", core);
  std::printf("baseline  (json.loads -> f -> json.dumps): %.3f us/doc\n", python);
  std::printf("C++ core is %.2fx faster than the baseline\n", python / core);
  std::printf("C++ core vs the %.2f us floor: %.2fx (target: within 2x)\n", kFloorMicros,
              core / kFloorMicros);
  return output_bytes > 0 ? 0 : 1;
}
