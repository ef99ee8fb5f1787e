// Where text stops being UTF-8, as protobuf judges it: the clients report a YAML file's bad
// byte at its line and column, and a function name's escaped, before protobuf refuses the
// request with a log line of its own.
#include "common/utf8_text.h"

#include <string>

#include "gtest/gtest.h"

namespace cnp {
namespace {

TEST(Utf8TextTest, ValidTextHasNoError) {
  for (const char* text : {"", "myviews.townmap|123", "caf\xc3\xa9\n\xe2\x82\xac\n\xf0\x9f\x98\x80",
                           "\xed\x9f\xbf", "\xf4\x8f\xbf\xbf"}) {
    EXPECT_FALSE(FindInvalidUtf8(text).has_value()) << text;
  }
}

TEST(Utf8TextTest, TheFirstBadByteIsFoundAtItsLineAndColumnInCharacters) {
  const std::string text = "location:\n  views:\n    towns: caf\xc3\xa9.\xff\n";
  std::optional<Utf8Error> bad = FindInvalidUtf8(text);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->offset, text.find('\xff'));
  EXPECT_EQ(bad->line, 3);
  EXPECT_EQ(bad->column, 17);  // "    towns: café." is 16 characters (17 bytes)
}

TEST(Utf8TextTest, WhatProtobufRefusesIsRefused) {
  for (const char* text : {
           "\x80",              // a continuation byte alone
           "\xc0\xaf",          // overlong '/'
           "\xe0\x80\xaf",      // overlong, three bytes
           "\xed\xa0\x80",      // a surrogate (U+D800)
           "\xf4\x90\x80\x80",  // past U+10FFFF
           "\xf5\x80\x80\x80",  // no such lead byte
           "\xe2\x82",          // cut short
       }) {
    std::optional<Utf8Error> bad = FindInvalidUtf8(text);
    ASSERT_TRUE(bad.has_value()) << EscapeInvalidUtf8(text);
    EXPECT_EQ(bad->offset, 0u);
    EXPECT_EQ(bad->column, 1);
  }
}

TEST(Utf8TextTest, EscapingKeepsCharactersAndWritesBadBytesAsHex) {
  EXPECT_EQ(EscapeInvalidUtf8("myviews.\xff"), "myviews.\\xff");
  EXPECT_EQ(EscapeInvalidUtf8("caf\xc3\xa9\xe2\x82"), "caf\xc3\xa9\\xe2\\x82");
}

TEST(Utf8TextTest, APrefixNeverEndsInsideACharacter) {
  const std::string text = "ab\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";  // a b é € 😀
  EXPECT_EQ(Utf8Prefix(text, 100), text);
  EXPECT_EQ(Utf8Prefix(text, text.size()), text);
  EXPECT_EQ(Utf8Prefix(text, 2), "ab");
  EXPECT_EQ(Utf8Prefix(text, 3), "ab");  // not half of the é
  EXPECT_EQ(Utf8Prefix(text, 4), "ab\xc3\xa9");
  EXPECT_EQ(Utf8Prefix(text, 6), "ab\xc3\xa9");
  EXPECT_EQ(Utf8Prefix(text, 7), "ab\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(Utf8Prefix(text, 10), "ab\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(Utf8Prefix(text, 0), "");
  for (size_t n = 0; n <= text.size(); ++n) {
    EXPECT_FALSE(FindInvalidUtf8(Utf8Prefix(text, n)).has_value()) << n;
  }
}

}  // namespace
}  // namespace cnp
