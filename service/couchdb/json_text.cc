#include "service/couchdb/json_text.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/utf8_text.h"

namespace cnp::couchdb {
namespace {

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

absl::Status CutShort(size_t at) {
  return absl::InvalidArgumentError(absl::StrCat("JSON text ends early at byte ", at));
}

// Moves `i` past the string starting at text[i] == '"'.
absl::Status SkipString(std::string_view text, size_t& i) {
  for (++i; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;
    } else if (text[i] == '"') {
      ++i;
      return absl::OkStatus();
    }
  }
  return CutShort(text.size());
}

// Moves `i` past the object or array starting at text[i].
absl::Status SkipContainer(std::string_view text, size_t& i) {
  int depth = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '"') {
      if (absl::Status s = SkipString(text, i); !s.ok()) return s;
      continue;
    }
    ++i;
    if (c == '[' || c == '{') {
      ++depth;
    } else if (c == ']' || c == '}') {
      if (--depth == 0) return absl::OkStatus();
    }
  }
  return CutShort(text.size());
}

absl::Status SkipValue(std::string_view text, size_t& i) {
  if (i >= text.size()) return CutShort(i);
  const char c = text[i];
  if (c == '"') return SkipString(text, i);
  if (c == '[' || c == '{') return SkipContainer(text, i);
  const size_t start = i;
  while (i < text.size() && text[i] != ',' && text[i] != ']' && text[i] != '}' &&
         !IsJsonSpace(text[i])) {
    ++i;
  }
  if (i == start) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON value at byte ", start));
  }
  return absl::OkStatus();
}

void AppendControlLine(std::string& out, std::string_view kind, std::string_view id,
                       std::string_view reason) {
  out += '[';
  AppendJsonString(out, kind);
  out += ',';
  AppendJsonString(out, id);
  out += ',';
  AppendJsonString(out, reason);
  out += ']';
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + text.size() + 2);
  out += '"';
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (byte < 0x20 || byte == 0x7f) {
          out += "\\u00";
          out += kHex[byte >> 4];
          out += kHex[byte & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

std::string LogLine(std::string_view message) {
  std::string out = "[\"log\",";
  AppendJsonString(out, message);
  out += ']';
  return out;
}

std::string ErrorLine(std::string_view id, std::string_view reason) {
  std::string out;
  AppendControlLine(out, "error", id, reason);
  return out;
}

std::string ProtocolEndedReason(std::string_view last_line) {
  return absl::StrCat("the protocol ended the session with ", Excerpt(last_line, 1024));
}

std::string Excerpt(std::string_view text, size_t limit) {
  const absl::string_view whole(text.data(), text.size());
  // Bytes that are not UTF-8 (from a line that was not) are named, not sent: jiffy would refuse
  // the whole line.
  std::string excerpt = EscapeInvalidUtf8(Utf8Prefix(whole, limit));
  if (text.size() > limit) absl::StrAppend(&excerpt, "... (", text.size(), " bytes)");
  return excerpt;
}

std::string FatalLine(std::string_view id, std::string_view reason) {
  std::string out;
  AppendControlLine(out, "fatal", id, reason);
  return out;
}

std::string_view TrimJsonText(std::string_view text) {
  while (!text.empty() && IsJsonSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsJsonSpace(text.back())) text.remove_suffix(1);
  return text;
}

absl::StatusOr<std::vector<std::string_view>> SplitJsonArray(std::string_view text,
                                                             size_t max_kept) {
  text = TrimJsonText(text);
  if (text.empty() || text.front() != '[') {
    return absl::InvalidArgumentError("expected a JSON array");
  }
  std::vector<std::string_view> elements;
  size_t i = 1;
  auto skip_space = [&] {
    while (i < text.size() && IsJsonSpace(text[i])) ++i;
  };
  skip_space();
  if (i < text.size() && text[i] == ']') {
    ++i;
  } else {
    while (true) {
      skip_space();
      const size_t start = i;
      if (absl::Status s = SkipValue(text, i); !s.ok()) return s;
      if (elements.size() < max_kept) elements.push_back(text.substr(start, i - start));
      skip_space();
      if (i >= text.size()) return CutShort(i);
      if (text[i] == ']') {
        ++i;
        break;
      }
      if (text[i] != ',') {
        return absl::InvalidArgumentError(
            absl::StrCat("expected ',' or ']' at byte ", i, " of the JSON array"));
      }
      ++i;
    }
  }
  if (i != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected text after the JSON array at byte ", i));
  }
  return elements;
}

}  // namespace cnp::couchdb
