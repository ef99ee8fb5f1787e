// Unit tests of the JSON <-> Python conversions the worker is built on.
#include <Python.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/worker/interpreter.h"
#include "service/worker/json_to_python.h"
#include "service/worker/python_to_json.h"
#include "service/worker/user_exception.h"

namespace cnp::worker {
namespace {

using ::testing::HasSubstr;

class PythonEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    absl::StatusOr<std::string> package = FindPackageDir();
    ASSERT_TRUE(package.ok()) << package.status();
    absl::StatusOr<CodeRoots> started = StartInterpreter({.package_dir = *package});
    ASSERT_TRUE(started.ok()) << started.status();
  }
};

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new PythonEnvironment);

PyRef Eval(const char* expression) {
  PyObject* globals = PyModule_GetDict(PyImport_AddModule("__main__"));
  PyRef value = PyRef::Steal(PyRun_String(expression, Py_eval_input, globals, globals));
  if (!value) PyErr_Print();
  return value;
}

std::string Repr(PyObject* value) {
  PyRef text = PyRef::Steal(PyObject_Repr(value));
  return PyUnicode_AsUTF8(text.get());
}

// Parses `json` and returns repr() of the result.
std::string ParsedRepr(const std::string& json) {
  absl::StatusOr<PyRef> parsed = ParseJson(json);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? Repr(parsed->get()) : "";
}

// Writes the value of a Python expression; "<Type: message>" when that raises.
std::string Written(const char* expression) {
  PyRef value = Eval(expression);
  JsonBuffer buffer;
  buffer.Put('>');  // what was there before must survive a failed write
  PythonJsonWriter writer(buffer);
  if (!writer.Write(value.get())) {
    UserException e = TakeException();
    EXPECT_EQ(std::string(buffer.GetString(), buffer.GetSize()), ">");
    return "<" + e.Summary() + ">";
  }
  return std::string(buffer.GetString() + 1, buffer.GetSize() - 1);
}

TEST(JsonToPythonTest, NumbersBecomeExactIntsAndFloats) {
  EXPECT_EQ(ParsedRepr("[0,-0,17,-9223372036854775808,123456789012345678901234567890]"),
            "[0, 0, 17, -9223372036854775808, 123456789012345678901234567890]");
  EXPECT_EQ(ParsedRepr("[0.1,-0.0,1e300,2.5E-3]"), "[0.1, -0.0, 1e+300, 0.0025]");
}

// repr() of json.loads(json): Python's own reading, which ours must match.
std::string JsonLoadsRepr(const std::string& json) {
  PyObject* globals = PyModule_GetDict(PyImport_AddModule("__main__"));
  PyRef text = PyRef::Steal(PyUnicode_FromStringAndSize(json.data(), json.size()));
  PyDict_SetItemString(globals, "_json_text", text.get());
  PyRef value = Eval("__import__('json').loads(_json_text)");
  return value ? Repr(value.get()) : "<json.loads failed>";
}

// Security review: rapidjson refuses a number past a double's range even when it hands numbers
// over as text, so a document with a 401-digit integer (CouchDB stores them) was not JSON to us.
// Such numbers are read as json.loads reads them, wherever they stand, with strings before them
// that the first, in-place reading has overwritten (escapes) and numbers it could read.
TEST(JsonToPythonTest, NumbersPastADoubleAreReadAsJsonLoadsReadsThem) {
  const std::string huge = "1" + std::string(400, '0');
  for (const std::string& json : {
           huge,
           "-" + huge,
           "[" + huge + "," + huge + "1]",
           R"({"_id":"a\"b\u00e9","s":"x\ny","v":)" + huge + R"(,"w":[1,")" + huge +
               R"(",{"k":-)" + huge + R"(}],"z":"tail"})",
           "[1e400,-1E+400,0e999,1e-999," + huge + ".5," + huge + "e-400,12.5e300]",
       }) {
    EXPECT_EQ(ParsedRepr(json), JsonLoadsRepr(json)) << json;
  }
  DocumentSeen seen;
  std::string buffer;
  absl::StatusOr<PyRef> doc =
      ParseDocument(R"({"_id":"big\t","v":)" + huge + "}", buffer, seen);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(seen.id, "big\t");
  EXPECT_FALSE(seen.refused_alone());
}

TEST(JsonToPythonTest, WhatIsNotJsonAroundLargeNumbersIsStillRefusedWhereItIs) {
  const std::string huge = "1" + std::string(400, '0');
  // A number where an object's key must be stays an error, at that key's byte.
  absl::StatusOr<PyRef> key = ParseJson(R"({"v":)" + huge + "," + huge + ":1}");
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().message(),
            "invalid JSON at byte " + std::to_string(6 + huge.size()) +
                ": Missing a name for object member.");
  absl::StatusOr<PyRef> cut = ParseJson("[" + huge + ",1.]");
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(std::string(cut.status().message()), "invalid JSON at byte " + std::to_string(4 + huge.size()) +
                                        ": Miss fraction part in number.");
  // More digits than int() converts: refused by Python, the document alone (DocumentSeen).
  DocumentSeen seen;
  std::string buffer;
  absl::StatusOr<PyRef> long_digits =
      ParseDocument(R"({"_id":"x","v":)" + std::string(5000, '7') + "}", buffer, seen);
  ASSERT_FALSE(long_digits.ok());
  EXPECT_THAT(long_digits.status().message(), HasSubstr("number at byte 15 not converted"));
  EXPECT_THAT(long_digits.status().message(), HasSubstr("4300"));
  EXPECT_TRUE(seen.too_many_digits);
  EXPECT_EQ(seen.id, "x");
  EXPECT_FALSE(PyErr_Occurred());
}

TEST(JsonToPythonTest, StringsAndContainers) {
  EXPECT_EQ(ParsedRepr(R"({"a":[true,false,null],"\u00e9":"\ud83d\ude00","a":{}})"),
            "{'a': {}, '\xc3\xa9': '\xf0\x9f\x98\x80'}");
}

TEST(JsonToPythonTest, ErrorsNameTheOffsetAndTheReason) {
  absl::StatusOr<PyRef> bad = ParseJson("[1, 2");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "invalid JSON at byte 5: Missing a comma or ']' after an array element.");
  std::string deep = std::string(5000, '[') + std::string(5000, ']');
  absl::StatusOr<PyRef> too_deep = ParseJson(deep);
  ASSERT_FALSE(too_deep.ok());
  EXPECT_THAT(too_deep.status().message(), HasSubstr("nested deeper than 4096 levels"));
  EXPECT_FALSE(PyErr_Occurred());
}

// rapidjson stops at a NUL byte as at the end of its text: `{"_id":"a"}\0...` was the document
// "a", the rest unread, for a Map, a Validate, a Reduce's rows and a design call's arguments
// alike (a security review). Also with a number past a double, read again from quoted text.
TEST(JsonToPythonTest, ANulByteIsNotTheEndOfTheText) {
  using std::string_literals::operator""s;
  absl::StatusOr<PyRef> doc = ParseJson("{\"_id\":\"a\"}\0{\"_id\":\"b\"} not json"s);
  ASSERT_FALSE(doc.ok());
  EXPECT_EQ(doc.status().message(),
            "invalid JSON at byte 11: a NUL byte, which JSON text never holds (a string writes "
            "it \\u0000)");
  const std::string huge = "1" + std::string(400, '0');
  DocumentSeen seen;
  std::string buffer;
  absl::StatusOr<PyRef> quoted =
      ParseDocument("{\"_id\":\"a\",\"v\":"s + huge + "}\0,3]"s, buffer, seen);
  ASSERT_FALSE(quoted.ok());
  EXPECT_THAT(quoted.status().message(), HasSubstr("a NUL byte"));
  // Inside a string, as ever: refused by the reader itself.
  EXPECT_FALSE(ParseJson("[\"a\0b\"]"s).ok());
  EXPECT_TRUE(ParseJson("[\"a\\u0000b\"] \n"s).ok());
  EXPECT_FALSE(PyErr_Occurred());
}

TEST(PythonToJsonTest, ScalarsAsJsonDumpsAndJavaScriptWouldWriteThem) {
  EXPECT_EQ(Written("[None, True, False, 0, -5, 2**64, -2**100]"),
            "[null,true,false,0,-5,18446744073709551616,-1267650600228229401496703205376]");
  EXPECT_EQ(Written("[0.1, 1e300, -0.0, 1.0, 1e-7, float('nan'), float('-inf')]"),
            "[0.1,1e+300,-0.0,1.0,1e-07,null,null]");
  EXPECT_EQ(Written("('tuple', ['nested', ()])"), R"(["tuple",["nested",[]]])");
  EXPECT_EQ(Written("'\\u00e9\\U0001f600\"\\n\\x00'"),
            "\"\xc3\xa9\xf0\x9f\x98\x80\\\"\\n\\u0000\"");
}

TEST(PythonToJsonTest, DictKeys) {
  EXPECT_EQ(Written("{'s': 1, 2: 2, 0.5: 3, False: 4, None: 5, float('inf'): 6}"),
            R"({"s":1,"2":2,"0.5":3,"false":4,"null":5,"Infinity":6})");
  EXPECT_EQ(Written("{(1,): 1}"), "<TypeError: keys must be str, int, float, bool or None, not tuple>");
}

// A lone surrogate has no UTF-8 form: it is written as the escape couchjs writes (CouchDB reads
// it as U+FFFD), in values and in keys; the rest of such a string is written exactly as the
// fast path writes it.
TEST(PythonToJsonTest, LoneSurrogatesAreWrittenAsEscapes) {
  EXPECT_EQ(Written(R"('\ud800')"), R"("\ud800")");
  EXPECT_EQ(Written(R"({'k\udfff': ['\udc80x', '\ud83d\ude00']})"),
            R"({"k\udfff":["\udc80x","\ud83d\ude00"]})");
  const std::string text = R"(\x00\x01\x08\t\n\x0b\x0c\r\x1f "\\/\x7f\u00e9\u20ac\U0001f600)";
  const std::string fast = Written(("'" + text + "'").c_str());
  ASSERT_EQ(fast.back(), '"') << fast;
  EXPECT_EQ(Written(("'" + text + R"(\udbff')").c_str()), fast.substr(0, fast.size() - 1) + R"(\udbff")");
}

TEST(PythonToJsonTest, UnserialisableValuesFailWithoutLeavingAnything) {
  EXPECT_EQ(Written("[1, {2, 3}]"), "<TypeError: Object of type set is not JSON serializable>");
  EXPECT_EQ(Written("[1, object()]"), "<TypeError: Object of type object is not JSON serializable>");
  EXPECT_THAT(Written("(lambda l: (l.append(l), l)[1])([])"),
              HasSubstr("ValueError: value nested deeper than 4096 levels"));
}

}  // namespace
}  // namespace cnp::worker
