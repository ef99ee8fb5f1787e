#include "service/upload/yaml11_reading.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/couchdb/json.h"

namespace cnp::upload {
namespace {

// PyYAML's implicit resolvers (resolver.py), the types JSON can hold.
const std::regex& Yaml11Bool() {
  static const std::regex re("yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|"
                             "off|Off|OFF");
  return re;
}
const std::regex& Yaml11Int() {
  static const std::regex re(
      "[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|"
      "[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+");
  return re;
}
const std::regex& Yaml11Float() {
  static const std::regex re(
      "[-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+][0-9]+)?|\\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|"
      "[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN)");
  return re;
}

// A sexagesimal number's value: "1:30" is 90.
double Base60(absl::string_view digits) {
  double value = 0;
  for (absl::string_view part : absl::StrSplit(digits, ':')) {
    double d = 0;
    (void)absl::SimpleAtod(part, &d);
    value = value * 60 + d;
  }
  return value;
}

// YAML 1.1's number for an int or float scalar (underscores dropped), as a double: exact for
// the integers a design document's options hold.
double Yaml11Number(const std::string& text, bool is_int) {
  std::string s = absl::StrReplaceAll(text, {{"_", ""}});
  double sign = 1;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    if (s[0] == '-') sign = -1;
    s.erase(0, 1);
  }
  if (s.find(':') != std::string::npos) return sign * Base60(s);
  if (!is_int) return sign * std::strtod(s.c_str(), nullptr);
  int base = 10;
  if (s.rfind("0b", 0) == 0) {
    base = 2;
    s.erase(0, 2);
  } else if (s.rfind("0x", 0) == 0) {
    base = 16;
    s.erase(0, 2);
  } else if (s.size() > 1 && s[0] == '0') {
    base = 8;
  }
  return sign * static_cast<double>(std::strtoull(s.c_str(), nullptr, base));
}

std::string Number(double value) {
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  // The shortest text that reads back as `value` (as Python's repr, which cnp-upload wrote
  // it with): StrCat's six digits quoted 1_000_000.5 as 1e+06.
  char text[32];
  const std::to_chars_result end = std::to_chars(text, text + sizeof(text), value);
  return std::string(text, end.ptr);
}

}  // namespace

std::optional<Yaml11Reading> Yaml11ReadingIfDifferent(absl::string_view text,
                                                      const rapidjson::Value& as_read) {
  // Every scalar YAML 1.1 reads as other than a string is short and starts so; the test also
  // keeps long text (a 3 MB string) away from std::regex, which recurses per character.
  constexpr size_t kLongestNonString = 64;
  if (text.empty() || text.size() > kLongestNonString ||
      absl::string_view("0123456789+-.yYnNtTfFoO").find(text[0]) == absl::string_view::npos) {
    return std::nullopt;
  }
  // A number past 64 bits, kept digit for digit: a number in both.
  if (couchdb::IsKeptNumber(as_read)) return std::nullopt;
  const std::string s(text);
  if (std::regex_match(s, Yaml11Bool())) {
    const bool value = s[0] == 'y' || s[0] == 'Y' || s[0] == 't' || s[0] == 'T' ||
                       s == "on" || s == "On" || s == "ON";
    if (as_read.IsBool() && as_read.GetBool() == value) return std::nullopt;
    return Yaml11Reading{Yaml11Reading::Kind::kJson, value ? "true" : "false"};
  }
  const bool is_int = std::regex_match(s, Yaml11Int());
  if (is_int || std::regex_match(s, Yaml11Float())) {
    if (absl::StrContains(s, "inf") || absl::StrContains(s, "Inf") || absl::StrContains(s, "INF")) {
      return Yaml11Reading{
          Yaml11Reading::Kind::kNotJson,
          absl::StrCat(s[0] == '-' ? "minus " : "", "infinity (a float JSON cannot hold)")};
    }
    if (absl::StrContains(s, "nan") || absl::StrContains(s, "NaN") || absl::StrContains(s, "NAN")) {
      return Yaml11Reading{Yaml11Reading::Kind::kNotJson,
                           "not-a-number (a float JSON cannot hold)"};
    }
    const double value = Yaml11Number(s, is_int);
    if (as_read.IsNumber() && as_read.GetDouble() == value) return std::nullopt;
    return Yaml11Reading{Yaml11Reading::Kind::kJson, Number(value)};
  }
  // null is read alike; anything else was a string, as cnp reads most of them.
  if (as_read.IsString() || as_read.IsNull()) return std::nullopt;
  return Yaml11Reading{Yaml11Reading::Kind::kString, absl::StrCat("the string \"", s, "\"")};
}

}  // namespace cnp::upload
