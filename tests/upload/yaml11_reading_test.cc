// What cnp-upload's YAML 1.1 made of a plain scalar, as the warnings quote it.
#include "service/upload/yaml11_reading.h"

#include <optional>

#include "gtest/gtest.h"
#include "rapidjson/document.h"

namespace cnp::upload {
namespace {

std::optional<Yaml11Reading> ReadingOfText(const char* text) {
  rapidjson::Value as_string(rapidjson::StringRef(text));
  return Yaml11ReadingIfDifferent(text, as_string);
}

TEST(Yaml11ReadingTest, BooleansAndIntegersAreQuotedAsYaml11ReadThem) {
  EXPECT_EQ(ReadingOfText("on")->said, "true");
  EXPECT_EQ(ReadingOfText("No")->said, "false");
  EXPECT_EQ(ReadingOfText("010")->said, "8");
  EXPECT_EQ(ReadingOfText("0b101")->said, "5");
  EXPECT_EQ(ReadingOfText("1_000")->said, "1000");
  EXPECT_EQ(ReadingOfText("1:30")->said, "90");
  EXPECT_FALSE(ReadingOfText("text").has_value());
}

// A float was quoted to six digits ("1e+06" for 1_000_000.5), which is not what YAML 1.1 read:
// the warning must name the value a user would write to keep it.
TEST(Yaml11ReadingTest, FloatsAreQuotedInFull) {
  EXPECT_EQ(ReadingOfText("1_000_000.5")->said, "1000000.5");
  EXPECT_EQ(ReadingOfText("3.141_592_653_589_79")->said, "3.14159265358979");
  EXPECT_EQ(ReadingOfText("1_0.25")->said, "10.25");
  EXPECT_EQ(ReadingOfText("-0.000_001_5")->said, "-1.5e-06");
}

}  // namespace
}  // namespace cnp::upload
