#include "common/yaml_strict_syntax.h"

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/printable_text.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/exceptions.h"
#include "yaml-cpp/parser.h"

namespace cnp {
namespace {

class StrictSyntax final : public YAML::EventHandler {
 public:
  explicit StrictSyntax(absl::string_view text)
      // yaml-cpp's marks do not count a byte-order mark.
      : text_(text), bom_(absl::StartsWith(text, "\xEF\xBB\xBF") ? 3 : 0) {}

  void OnDocumentStart(const YAML::Mark& mark) override { NotInsideLastQuoted(mark); }
  void OnDocumentEnd() override {}
  // (A null's mark may be its key's, before a quoted key's closing quote: not looked at.)
  void OnNull(const YAML::Mark&, YAML::anchor_t) override { Node(); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    NotInsideLastQuoted(mark);
    Node();
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t,
                const std::string& value) override {
    NotInsideLastQuoted(mark);
    const bool block_key = Node();
    if (tag != "?") QuoteClosed(mark, value);  // quoted, or a block scalar, or tagged
    if (block_key) ColonAfter(mark, value);      // a quoted one is not found as written
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    NotInsideLastQuoted(mark);
    Node();
    open_.push_back({.map = false, .block = false, .key_next = false});
  }
  void OnSequenceEnd() override { open_.pop_back(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value style) override {
    NotInsideLastQuoted(mark);
    Node();
    open_.push_back(
        {.map = true, .block = style != YAML::EmitterStyle::Flow, .key_next = true});
  }
  void OnMapEnd() override { open_.pop_back(); }

 private:
  struct Open {
    bool map;
    bool block;     // a flow mapping's key may go without its `:` ({a, b: 1})
    bool key_next;  // a mapping's nodes alternate, key then value
  };

  // A node starts: whether it is a key of a block mapping.
  bool Node() {
    if (open_.empty() || !open_.back().map) return false;
    Open& map = open_.back();
    const bool key = map.key_next;
    map.key_next = !key;
    return key && map.block;
  }

  // Where `mark` is in the text, or npos when it is past it.
  size_t At(const YAML::Mark& mark) const {
    if (mark.pos < 0) return absl::string_view::npos;
    const size_t at = static_cast<size_t>(mark.pos) + bom_;
    return at < text_.size() ? at : absl::string_view::npos;
  }

  // Where the content of the node at `mark` starts: a node's mark is its first property (a
  // tag, !!str or !t; an anchor, &x), which may be followed by spaces, comments and line
  // breaks before the content (a review: `note: !!str "abc` passed unseen). npos: past the
  // text.
  size_t ContentAt(const YAML::Mark& mark) const {
    size_t at = At(mark);
    while (at < text_.size() && (text_[at] == '!' || text_[at] == '&')) {
      while (at < text_.size() && !absl::ascii_isspace(static_cast<unsigned char>(text_[at]))) {
        ++at;
      }
      for (;;) {
        while (at < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[at]))) {
          ++at;
        }
        if (at >= text_.size() || text_[at] != '#') break;
        while (at < text_.size() && text_[at] != '\n') ++at;  // a comment, to its line's end
      }
    }
    return at < text_.size() ? at : absl::string_view::npos;
  }

  // A scalar whose content begins with a quote: its closing quote is in the text (by YAML's
  // escapes: \" in double quotes, '' in single ones). A node of properties alone (`a: !!str`,
  // an empty value) has no content: the quote after it is the next node's, checked with it.
  void QuoteClosed(const YAML::Mark& mark, const std::string& value) {
    const size_t open = ContentAt(mark);
    if (open == absl::string_view::npos || (value.empty() && open != At(mark))) return;
    const char quote = text_[open];
    if (quote != '"' && quote != '\'') return;
    for (size_t i = open + 1; i < text_.size(); ++i) {
      const char c = text_[i];
      if (quote == '"' && c == '\\') {
        ++i;  // the escaped character
      } else if (c == quote && quote == '\'' && i + 1 < text_.size() && text_[i + 1] == '\'') {
        ++i;  // '' is one quote
      } else if (c == quote) {
        last_quoted_ = {.mark = mark, .end = i + 1};
        return;
      }
    }
    throw YAML::ParserException(
        mark, absl::StrCat("this quoted string is never closed: no ", std::string(1, quote),
                           " ends it, so the rest of the file would be its text"));
  }

  // A node that starts before the closing quote of the quoted string before it: the string
  // ended elsewhere than at its quote (at a document's end, say), so that quote is not closed.
  void NotInsideLastQuoted(const YAML::Mark& mark) {
    const size_t at = At(mark);
    if (last_quoted_.end == 0 || at == absl::string_view::npos || at >= last_quoted_.end) return;
    throw YAML::ParserException(last_quoted_.mark,
                                "this quoted string is not closed where it ends");
  }

  // A plain key of a block mapping: its text is followed by `:` on its line (an explicit key,
  // `? key`, has its `:` on the next line, its `?` before the key's properties; a key that is
  // not found as written, a quoted one, is let be).
  void ColonAfter(const YAML::Mark& mark, const std::string& key) {
    const size_t start = ContentAt(mark);
    if (start == absl::string_view::npos || text_[start] == '"' || text_[start] == '\'' ||
        text_.substr(start, key.size()) != key) {
      return;
    }
    size_t before = At(mark);
    while (before > 0 && (text_[before - 1] == ' ' || text_[before - 1] == '\t')) --before;
    if (before > 0 && text_[before - 1] == '?') return;
    size_t after = start + key.size();
    while (after < text_.size() && (text_[after] == ' ' || text_[after] == '\t')) ++after;
    if (after < text_.size() && text_[after] == ':') return;
    throw YAML::ParserException(
        mark, absl::StrCat("could not find the ':' after \"", Printable(key),
                           "\": each line of a mapping is `key: value`"));
  }

  const absl::string_view text_;
  const size_t bom_;
  std::vector<Open> open_;
  struct Quoted {
    YAML::Mark mark;
    size_t end = 0;  // just past its closing quote; 0: none yet
  } last_quoted_;
};

}  // namespace

void CheckStrictYamlSyntax(const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  StrictSyntax check(text);
  while (parser.HandleNextDocument(check)) {
  }
}

}  // namespace cnp
