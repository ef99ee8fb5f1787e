#include "service/worker/function_name.h"

#include <Python.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {
namespace {

// How much of a name that is too long its error message shows.
constexpr size_t kTooLongShownBytes = 64;

std::string Repr(std::optional<int64_t> version) {
  return version ? absl::StrCat(*version) : "None";
}

bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

bool IsAsciiIdentifier(absl::string_view part) {
  if (part.empty() || absl::ascii_isdigit(part[0])) return false;
  for (char c : part) {
    if (!absl::ascii_isalnum(c) && c != '_') return false;
  }
  return true;
}

// Python's own rule (str.isidentifier), for names with letters outside ASCII.
bool IsIdentifier(absl::string_view part) {
  bool ascii = true;
  for (char c : part) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return IsAsciiIdentifier(part);
  if (!Py_IsInitialized()) return false;
  PyRef text = PyRef::Steal(PyUnicode_DecodeUTF8(part.data(), part.size(), "strict"));
  if (!text) {
    PyErr_Clear();
    return false;
  }
  return PyUnicode_IsIdentifier(text.get()) == 1;
}

}  // namespace

bool IsDunder(absl::string_view part) {
  return part.size() > 4 && absl::StartsWith(part, "__") && absl::EndsWith(part, "__");
}

std::string NameForMessage(absl::string_view name, size_t max_bytes) {
  std::string shown;
  for (size_t i = 0; i < name.size() && i < max_bytes; ++i) {
    unsigned char c = name[i];
    if (IsControl(c)) {
      absl::StrAppendFormat(&shown, "\\x%02x", c);
    } else {
      shown.push_back(static_cast<char>(c));
    }
  }
  if (name.size() > max_bytes) {
    // Never end on half a UTF-8 character: protobuf strings must stay valid UTF-8.
    while (!shown.empty() && (static_cast<unsigned char>(shown.back()) & 0xC0) == 0x80) {
      shown.pop_back();
    }
    if (!shown.empty() && static_cast<unsigned char>(shown.back()) >= 0xC0) shown.pop_back();
    absl::StrAppend(&shown, "... (", name.size(), " bytes)");
  }
  return shown;
}

std::vector<std::string> DunderParts(absl::string_view path) {
  std::vector<std::string> dunders;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (IsDunder(part)) dunders.emplace_back(part);
  }
  return dunders;
}

absl::StatusOr<FunctionName> ParseFunctionName(absl::string_view name) {
  if (name.size() > kMaxFunctionNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ValueError: function name too long: ", name.size(), " bytes, at most ",
        kMaxFunctionNameBytes, " allowed (", NameForMessage(name, kTooLongShownBytes), ")"));
  }
  for (unsigned char c : name) {
    if (IsControl(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ValueError: function name contains a control character: '", NameForMessage(name),
          "'"));
    }
  }
  FunctionName result;
  absl::string_view path = name;
  if (size_t bar = name.find('|'); bar != absl::string_view::npos) {
    path = name.substr(0, bar);
    absl::string_view version = name.substr(bar + 1);
    if (!version.empty()) {
      // int() accepts surrounding whitespace, so the old server did too.
      int64_t number;
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(version), &number)) {
        // The old server's words first (logs and tools may look for them), then what they mean.
        return absl::InvalidArgumentError(absl::StrCat(
            "ValueError: invalid literal for int() with base 10: '", NameForMessage(version),
            "' (after '|' comes the function's @version number: module.function|N)"));
      }
      result.version = number;
    }
  }
  std::vector<absl::string_view> parts = absl::StrSplit(path, '.');
  bool valid = parts.size() >= 2;
  for (absl::string_view part : parts) valid = valid && !part.empty();
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ValueError: Invalid function path: '", NameForMessage(path),
        "' is not module.function or module.function|version"));
  }
  for (absl::string_view part : parts) {
    if (!IsIdentifier(part)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ValueError: Invalid function path: '", part, "' in '", path,
          "' is not a Python identifier"));
    }
  }
  result.path = std::string(path);
  result.attribute = std::string(parts.back());
  parts.pop_back();
  result.module = absl::StrJoin(parts, ".");
  return result;
}

absl::StatusOr<FunctionName> ParseModuleName(absl::string_view module) {
  if (module.size() > kMaxFunctionNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("module name too long: ", module.size(),
                                                   " bytes, at most ", kMaxFunctionNameBytes));
  }
  for (absl::string_view part : absl::StrSplit(module, '.')) {
    if (!IsIdentifier(part)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", NameForMessage(module), "' is not a module name: ",
          part.empty() ? "a dotted part is empty"
                       : absl::StrCat("'", NameForMessage(part), "' is not a Python identifier")));
    }
  }
  FunctionName result;
  result.path = std::string(module);
  result.module = std::string(module);
  return result;
}

std::string VersionMismatchMessage(std::optional<int64_t> loaded, std::optional<int64_t> expected) {
  return absl::StrCat("ValueError: Loaded version ", Repr(loaded),
                      " did not match expected version ", Repr(expected));
}

std::string UnversionedNameMessage(absl::string_view path, int64_t loaded) {
  return absl::StrCat(VersionMismatchMessage(loaded, std::nullopt), ": ", path,
                      " has @version(", loaded, "), so design documents and calls must name it ", path,
                      "|", loaded, " (`cnp resolve ", path, "` prints the name to use)");
}

}  // namespace cnp::worker
