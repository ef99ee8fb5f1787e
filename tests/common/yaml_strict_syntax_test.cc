// YAML that yaml-cpp reads without a word and YAML 1.2 refuses: refused at its place, while
// everything YAML allows there still reads.
#include "common/yaml_strict_syntax.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "yaml-cpp/exceptions.h"
#include "yaml-cpp/yaml.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// The refusal's message and its 1-based line:column, or "" when the text passes.
std::string Refusal(const std::string& text) {
  try {
    CheckStrictYamlSyntax(text);
  } catch (const YAML::Exception& e) {
    return e.msg + " at " + std::to_string(e.mark.line + 1) + ":" +
           std::to_string(e.mark.column + 1);
  }
  return "";
}

TEST(YamlStrictSyntaxTest, AQuoteNeverClosedIsRefusedAtItsOpening) {
  // yaml-cpp itself reads the rest of the file into the string: the second design document
  // is gone, and the first has a language of four lines.
  const std::string text =
      "first:\n  language: \"python\n  views: {v: m.f}\nsecond:\n  views: {w: m.f}\n";
  const YAML::Node lenient = YAML::Load(text);
  ASSERT_EQ(lenient.size(), 1u);
  ASSERT_THAT(lenient["first"]["language"].Scalar(), HasSubstr("second"));

  EXPECT_THAT(Refusal(text), HasSubstr("never closed: no \" ends it"));
  EXPECT_THAT(Refusal(text), HasSubstr("at 2:13"));
  EXPECT_THAT(Refusal("a: 'it''s\nb: c\n"), HasSubstr("no ' ends it"));
  EXPECT_THAT(Refusal("a: \"ends with an escaped quote\\\"\n"), HasSubstr("never closed"));
  EXPECT_THAT(Refusal("\"key never closed: 1\n"), HasSubstr("at 1:1"));
  // After a node's properties, a tag or an anchor, on its line or the one before (a review).
  EXPECT_THAT(Refusal("a: 1\nb: &x \"python\nc: 2\n"), HasSubstr("never closed"));
  EXPECT_THAT(Refusal("note: !!str \"abc\nsecond: 1\n"), HasSubstr("never closed"));
  EXPECT_THAT(Refusal("b: !t 'python\n"), HasSubstr("no ' ends it"));
  EXPECT_THAT(Refusal("b: !!str  # a comment\n  \"x\nc: 1\n"), HasSubstr("never closed"));
}

TEST(YamlStrictSyntaxTest, AMappingsLastLineWithoutItsColonIsRefused) {
  // (yaml-cpp refuses such a line itself anywhere but at the end of the file.)
  const std::string text = "d:\n  views:\n    v: m.f\n  stray line\n";
  const YAML::Node lenient = YAML::Load(text);
  ASSERT_TRUE(lenient["d"]["stray line"].IsNull());  // what yaml-cpp makes of it

  EXPECT_THAT(Refusal(text), HasSubstr("could not find the ':' after \"stray line\""));
  EXPECT_THAT(Refusal(text), HasSubstr("at 4:3"));
  EXPECT_THAT(Refusal("d:\n  a: 1\n  b\n"), HasSubstr("after \"b\": each line"));
  EXPECT_THAT(Refusal("a: 1\n&x stray\n"), HasSubstr("after \"stray\""));
  EXPECT_THAT(Refusal("a: 1\n!t stray\n"), HasSubstr("after \"stray\""));
}

TEST(YamlStrictSyntaxTest, WhatYamlAllowsStillReads) {
  for (const char* text : {
           "a: \"closed\"\nb: 'it''s'\nc: \"escaped \\\" quote\"\n",
           "\"quoted key\": 1\n'single': 2\n",
           "a: \"spans\n  two lines\"\n",
           "key   : spaced before its colon\n",
           "empty:\nnext: 1\n",
           "last:\n",
           "flow: {a, b: c, \"d\"}\n",
           "? explicit key\n: its value\n",
           "list:\n  - a: 1\n    b: 2\n  - \"x\"\n",
           "block: |\n  \"not a quote\n  stray\nafter: 1\n",
           "folded: >\n  it's \"odd\n",
           "plain: it's fine\nurl: http://example.com/a\n",
           "# a comment \"with a quote\nkey: value # and 'another\n",
           "\xEF\xBB\xBF" "bom: \"ok\"\r\nnext: 'x'\r\n",
           "",
           "a: &x \"anchored\"\nb: *x\nc: !!str 'tagged'\nd: !!str\n  \"on the next line\"\n",
           "&k key: 1\n!!str tagged key: 2\n",
           // A value of properties alone, then a quoted node (a review of the check).
           "a: !!str\n\"b\": 1\n",
           "views:\n  v:\n    map: m.f\n    reduce: !!null\n\"other\": 1\n",
           "a: !!str # note\n'b': 1\n",
           "{a: !!str, \"b\": \"x\"}\n",
           "? &a key\n: v\n",
           "? &a\n  key\n: v\n",
           "d:\n  \"\": empty quoted key\n  '': another\n",
       }) {
    EXPECT_EQ(Refusal(text), "") << text;
  }
}

TEST(YamlStrictSyntaxTest, WhatYamlCppRefusesIsRefusedAsItSaysIt) {
  EXPECT_THAT(Refusal("a: [1, 2\n"), Not(IsEmpty()));
  EXPECT_THAT(Refusal("a:\n  b: 1\n  stray\n  c: 2\n"), HasSubstr("illegal map value"));
}

}  // namespace
}  // namespace cnp
