#include "service/worker/json_to_python.h"

#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "rapidjson/error/en.h"
#include "rapidjson/reader.h"
#include "common/couchdb/large_numbers.h"
#include "service/worker/json_buffer.h"
#include "service/worker/user_exception.h"

namespace cnp::worker {
namespace {

// Object keys repeat from document to document ("_id", "_rev", "type", ...). Reusing one str
// object per short ASCII key saves decoding it, and its hash is computed once instead of on
// every dict insertion. The worker holds the GIL throughout, so a plain static table is safe.
class KeyCache {
 public:
  static constexpr size_t kMaxKeyLength = 32;

  // A new reference to the key's str, or nullptr when this key is not cacheable.
  static PyObject* Lookup(const char* text, size_t length) {
    if (length > kMaxKeyLength) return nullptr;
    size_t hash = length;
    for (size_t i = 0; i < length; ++i) {
      if (static_cast<unsigned char>(text[i]) >= 0x80) return nullptr;
      hash = hash * 31 + static_cast<unsigned char>(text[i]);
    }
    PyObject*& slot = slots_[hash % kSlots];
    if (slot != nullptr && static_cast<size_t>(PyUnicode_GET_LENGTH(slot)) == length &&
        std::memcmp(PyUnicode_1BYTE_DATA(slot), text, length) == 0) {
      return Py_NewRef(slot);
    }
    PyObject* key = PyUnicode_DecodeASCII(text, length, "strict");
    if (key == nullptr) return nullptr;
    Py_XSETREF(slot, Py_NewRef(key));
    return key;
  }

 private:
  static constexpr size_t kSlots = 512;
  static inline PyObject* slots_[kSlots] = {};
};

// Builds Python values bottom-up on one stack: containers are created when they close, at their
// final size, so no list is ever resized and no dict is ever looked up twice.
class PythonBuilder {
 public:
  // With `id`, the top-level "_id" is copied there as it is read (a document that fails further
  // on is then still named): a string as it is, a number, true, false or null as its JSON text,
  // which is what couchjs's "with doc._id " + doc._id prints for them (5, true, null) where an
  // empty id would print "undefined". An array or object _id stays unnamed.
  explicit PythonBuilder(std::string* id = nullptr) : id_(id) { stack_.reserve(64); }
  ~PythonBuilder() {
    for (PyObject* object : stack_) Py_XDECREF(object);
  }

  bool Null() {
    NoteScalarId("null");
    return Push(Py_NewRef(Py_None));
  }
  bool Bool(bool b) {
    NoteScalarId(b ? "true" : "false");
    return Push(Py_NewRef(b ? Py_True : Py_False));
  }
  // With kParseNumbersAsStringsFlag only RawNumber is called; these keep the interface whole.
  bool Int(int i) { return Push(PyLong_FromLong(i)); }
  bool Uint(unsigned u) { return Push(PyLong_FromUnsignedLong(u)); }
  bool Int64(int64_t i) { return Push(PyLong_FromLongLong(i)); }
  bool Uint64(uint64_t u) { return Push(PyLong_FromUnsignedLongLong(u)); }
  bool Double(double d) { return Push(PyFloat_FromDouble(d)); }

  bool RawNumber(const char* text, rapidjson::SizeType length, bool) {
    NoteScalarId(std::string_view(text, length));
    return PushNumber(text, length);
  }

  bool String(const char* text, rapidjson::SizeType length, bool) {
    if (id_ != nullptr && id_next_ && depth_ == 1) id_->assign(text, length);
    return Push(PyUnicode_DecodeUTF8(text, length, "strict"));
  }
  bool Key(const char* text, rapidjson::SizeType length, bool copy) {
    if (id_ != nullptr) id_next_ = depth_ == 1 && length == 3 && std::memcmp(text, "_id", 3) == 0;
    if (PyObject* cached = KeyCache::Lookup(text, length)) return Push(cached);
    if (PyErr_Occurred()) return false;
    return String(text, length, copy);
  }

  bool StartObject() { return Enter(); }
  bool EndObject(rapidjson::SizeType members) {
    --depth_;
    PyObject* dict = PyDict_New();
    if (dict == nullptr) return false;
    size_t first = stack_.size() - 2 * size_t{members};
    for (size_t i = first; i < stack_.size(); i += 2) {
      if (PyDict_SetItem(dict, stack_[i], stack_[i + 1]) != 0) {
        Py_DECREF(dict);
        return false;
      }
    }
    PopFrom(first);
    return Push(dict);
  }

  bool StartArray() { return Enter(); }
  bool EndArray(rapidjson::SizeType elements) {
    --depth_;
    PyObject* list = PyList_New(elements);
    if (list == nullptr) return false;
    size_t first = stack_.size() - elements;
    for (size_t i = 0; i < elements; ++i) {
      PyList_SET_ITEM(list, i, stack_[first + i]);  // steals: the stack no longer owns them
    }
    stack_.resize(first);
    return Push(list);
  }

  PyRef TakeRoot() {
    PyRef root = PyRef::Steal(stack_.back());
    stack_.pop_back();
    return root;
  }
  bool too_deep() const { return too_deep_; }
  // A number's digits were more than int() converts (sys.get_int_max_str_digits()).
  bool too_many_digits() const { return too_many_digits_; }
  // Where that number starts, when the reader's error offset is not it (a quoted number's
  // error is reported after its closing quote).
  std::optional<size_t> refused_number_at() const { return refused_number_at_; }

 protected:
  bool Push(PyObject* object) {
    if (object == nullptr) return false;
    stack_.push_back(object);
    return true;
  }
  bool PushNumber(const char* text, size_t length) {
    PyObject* number = NumberFromText(text, length);
    if (number == nullptr && PyErr_ExceptionMatches(PyExc_ValueError)) too_many_digits_ = true;
    return Push(number);
  }
  void NoteScalarId(std::string_view text) {
    if (id_ != nullptr && id_next_ && depth_ == 1) id_->assign(text);
  }
  bool Enter() {
    if (++depth_ > kMaxJsonDepth) {
      too_deep_ = true;
      return false;
    }
    return true;
  }
  void PopFrom(size_t first) {
    for (size_t i = first; i < stack_.size(); ++i) Py_DECREF(stack_[i]);
    stack_.resize(first);
  }

  // JSON numbers: integers stay exact at any size, the rest are parsed as float() would (a
  // positive exponent past a double's range is float('inf'), as json.loads reads it).
  static PyObject* NumberFromText(const char* text, size_t length) {
    bool is_integer = std::memchr(text, '.', length) == nullptr &&
                      std::memchr(text, 'e', length) == nullptr &&
                      std::memchr(text, 'E', length) == nullptr;
    if (is_integer && length <= 18) {  // fits in int64 whatever the digits
      bool negative = text[0] == '-';
      long long value = 0;
      for (size_t i = negative ? 1 : 0; i < length; ++i) value = value * 10 + (text[i] - '0');
      return PyLong_FromLongLong(negative ? -value : value);
    }
    // The text is not NUL-terminated when parsing in place.
    std::string terminated(text, length);
    if (is_integer) return PyLong_FromString(terminated.c_str(), nullptr, 10);
    double value = PyOS_string_to_double(terminated.c_str(), nullptr, nullptr);
    if (value == -1.0 && PyErr_Occurred()) return nullptr;
    return PyFloat_FromDouble(value);
  }

  std::optional<size_t> refused_number_at_;

 private:
  std::vector<PyObject*> stack_;
  int depth_ = 0;
  bool too_deep_ = false;
  bool too_many_digits_ = false;
  std::string* const id_;
  bool id_next_ = false;  // the last key read was the top-level "_id"
};

// The builder for a second reading, of a copy whose numbers rapidjson refused were quoted
// (large_numbers.h): a string at a quoted number's place is that number, read from the
// original text.
class QuotedNumbersBuilder : public PythonBuilder {
 public:
  QuotedNumbersBuilder(std::string* id, const char* buffer, std::string_view original,
                       const std::vector<couchdb::NumberSpan>& spans)
      : PythonBuilder(id), buffer_(buffer), original_(original), spans_(spans) {}

  bool String(const char* text, rapidjson::SizeType length, bool copy) {
    // Parsed in place, a string's text starts right after its opening quote. Strings come in
    // the order of the text, so only the next quoted number can be this one.
    const size_t at = static_cast<size_t>(text - buffer_) - 1;
    if (next_ < spans_.size() && spans_[next_].begin == at) {
      const couchdb::NumberSpan& span = spans_[next_++];
      if (PushNumber(original_.data() + span.begin, span.end - span.begin)) return true;
      refused_number_at_ = span.begin;
      return false;
    }
    return PythonBuilder::String(text, length, copy);
  }

 private:
  const char* const buffer_;
  const std::string_view original_;
  const std::vector<couchdb::NumberSpan>& spans_;
  size_t next_ = 0;
};

constexpr unsigned kParseFlags = rapidjson::kParseInsituFlag |
                                 rapidjson::kParseNumbersAsStringsFlag |
                                 rapidjson::kParseIterativeFlag;

// Reads `buffer` in place into `builder`; `end` is where the reader stopped, `code` its error.
template <unsigned extra_flags, typename Builder>
absl::StatusOr<PyRef> ReadInto(Builder& builder, std::string& buffer, size_t& end,
                               rapidjson::ParseErrorCode& code, DocumentSeen* seen) {
  // Its stack grows with rapidjson's default allocator, which does not check realloc: out of
  // memory, it would write through a null pointer. This one throws std::bad_alloc, which the
  // task's caller answers as memory_error.
  rapidjson::GenericReader<rapidjson::UTF8<>, rapidjson::UTF8<>, ThrowingAllocator> reader;
  rapidjson::InsituStringStream stream(buffer.data());
  rapidjson::ParseResult result = reader.Parse<kParseFlags | extra_flags>(stream, builder);
  end = stream.Tell();
  code = result.Code();
  if (!result) {
    std::string why;
    if (builder.too_deep()) {
      if (seen != nullptr) seen->too_deep = true;
      why = absl::StrCat("nested deeper than ", kMaxJsonDepth, " levels");
    } else if (PyErr_Occurred()) {
      // The text parsed but Python refused a value (bytes that are not UTF-8, an integer of
      // more digits than int() converts), or memory ran out (TakeException then marks the
      // worker for recycling).
      bool out_of_memory = PyErr_ExceptionMatches(PyExc_MemoryError);
      why = TakeException().Summary();
      if (out_of_memory) {
        return absl::ResourceExhaustedError(
            absl::StrCat("out of memory at byte ", result.Offset(), " building the value"));
      }
      if (builder.too_many_digits()) {
        if (seen != nullptr) seen->too_many_digits = true;
        // Python's own advice (sys.set_int_max_str_digits()) is the worker's to take, not the
        // caller's, and it is not taken on purpose.
        if (const size_t advice = why.find("; use sys.set_int_max_str_digits()");
            advice != std::string::npos) {
          why.erase(advice);
          why += " (int()'s limit, which keeps its quadratic conversion off the worker)";
        }
        return absl::InvalidArgumentError(
            absl::StrCat("number at byte ", builder.refused_number_at().value_or(result.Offset()),
                         " not converted: ", why));
      }
    } else {
      why = rapidjson::GetParseError_En(result.Code());
    }
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON at byte ", result.Offset(), ": ", why));
  }
  return builder.TakeRoot();
}

// `value` when the reader, which stops at a NUL byte as at the end of the text, read all of
// `text`: one value, then "\0" and anything at all, parsed as that value alone (a Map of
// `{"_id":"a"}\0garbage` answered for "a"; a security review). A value read on purpose from
// the start of a longer text (kParseStopWhenDoneFlag) leaves the rest to its caller.
template <unsigned extra_flags>
absl::StatusOr<PyRef> WholeText(absl::StatusOr<PyRef> value, std::string_view text, size_t end) {
  if constexpr ((extra_flags & rapidjson::kParseStopWhenDoneFlag) == 0) {
    if (value.ok() && end < text.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid JSON at byte ", end,
          ": a NUL byte, which JSON text never holds (a string writes it \\u0000)"));
    }
  }
  return value;
}

// Parses `json` in `buffer` with `kParseFlags | extra_flags`; `end` is where the reader stopped.
template <unsigned extra_flags>
absl::StatusOr<PyRef> Parse(std::string_view json, std::string& buffer, size_t& end,
                            DocumentSeen* seen = nullptr) {
  buffer.assign(json);
  std::string* id = seen != nullptr ? &seen->id : nullptr;
  rapidjson::ParseErrorCode code = rapidjson::kParseErrorNone;
  {
    PythonBuilder builder(id);
    absl::StatusOr<PyRef> value = ReadInto<extra_flags>(builder, buffer, end, code, seen);
    if (code != rapidjson::kParseErrorNumberTooBig) [[likely]] {
      return WholeText<extra_flags>(std::move(value), json, end);
    }
  }
  // A number past a double's range (large_numbers.h): read again, from a copy of `json` with
  // those numbers quoted (the first reading has overwritten strings in `buffer`).
  couchdb::QuotedNumbers quoted = couchdb::QuoteLargeNumbers(json);
  buffer = std::move(quoted.text);
  if (id != nullptr) id->clear();
  QuotedNumbersBuilder builder(id, buffer.data(), json, quoted.spans);
  absl::StatusOr<PyRef> value = ReadInto<extra_flags>(builder, buffer, end, code, seen);
  return WholeText<extra_flags>(std::move(value), buffer, end);
}

}  // namespace

absl::StatusOr<PyRef> ParseJson(std::string_view json, std::string& buffer) {
  size_t end = 0;
  return Parse<0>(json, buffer, end);
}

absl::StatusOr<PyRef> ParseDocument(std::string_view json, std::string& buffer,
                                    DocumentSeen& seen) {
  size_t end = 0;
  return Parse<0>(json, buffer, end, &seen);
}

PyObject* CopyParsed(PyObject* value) {
  if (PyDict_CheckExact(value)) {
    PyObject* copy = PyDict_Copy(value);
    if (copy == nullptr) return nullptr;
    Py_ssize_t at = 0;
    PyObject* key;
    PyObject* item;
    // Replacing a value keeps the keys, which is what PyDict_Next allows while it iterates.
    while (PyDict_Next(copy, &at, &key, &item)) {
      if (!PyDict_CheckExact(item) && !PyList_CheckExact(item)) continue;
      PyObject* inner = CopyParsed(item);
      if (inner == nullptr || PyDict_SetItem(copy, key, inner) != 0) {
        Py_XDECREF(inner);
        Py_DECREF(copy);
        return nullptr;
      }
      Py_DECREF(inner);
    }
    return copy;
  }
  if (PyList_CheckExact(value)) {
    const Py_ssize_t n = PyList_GET_SIZE(value);
    PyObject* copy = PyList_New(n);
    if (copy == nullptr) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(value, i);
      PyObject* inner = PyDict_CheckExact(item) || PyList_CheckExact(item) ? CopyParsed(item)
                                                                             : Py_NewRef(item);
      if (inner == nullptr) {
        Py_DECREF(copy);
        return nullptr;
      }
      PyList_SET_ITEM(copy, i, inner);
    }
    return copy;
  }
  return Py_NewRef(value);
}

absl::StatusOr<PyRef> ParseJsonValue(std::string_view json, std::string& buffer, size_t& end) {
  return Parse<rapidjson::kParseStopWhenDoneFlag>(json, buffer, end);
}

absl::StatusOr<PyRef> ParseJson(std::string_view json) {
  std::string buffer;
  return ParseJson(json, buffer);
}

}  // namespace cnp::worker
