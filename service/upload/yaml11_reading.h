// What YAML 1.1, which cnp-upload's PyYAML read, made of a plain scalar that cnp, reading YAML
// 1.2's core schema, reads otherwise: `yes`/`no`/`on`/`off` were booleans, `010` octal 8,
// `0b101` and `1_000` and `1:30` (base 60) integers, `.inf` a float, while `1e3` (no dot, no
// exponent sign) was a string. A file moved over from cnp-upload is warned at each such value
// (design_yaml.cc), since it would now upload another value without a word.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "rapidjson/document.h"

namespace cnp::upload {

// How YAML 1.1 read a scalar: `said` as a message says it ("true", "8", "the string
// \"1e3\"", "infinity (a float JSON cannot hold)"), and what kind of value that is.
struct Yaml11Reading {
  enum class Kind {
    kJson,     // a value JSON holds: true, false, a number
    kString,   // a string, where cnp reads another value
    kNotJson,  // a float JSON cannot hold (infinity, not-a-number)
  };
  Kind kind;
  std::string said;
};

// When YAML 1.1 reads the plain scalar `text` as other than `as_read` (cnp's JSON value for
// it), how it read it; nothing when both read it alike. Timestamps (2024-01-31), which PyYAML
// made dates JSON could not hold, are not told apart.
std::optional<Yaml11Reading> Yaml11ReadingIfDifferent(absl::string_view text,
                                                      const rapidjson::Value& as_read);

}  // namespace cnp::upload
