// common/list_flags.h: the list flags of cnp-server and cnp-adapter add up however they are
// written, and one given no value is refused rather than meaning the default.
#include "common/list_flags.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

const std::vector<ListFlag> kFlags = {
    {.name = "python_path"},
    {.name = "allow_module", .without_it = "without it every module on the Python path may run"},
    {.name = "config", .comma_separated = false, .example = "/etc/cnp/cnp-server.yaml"},
};

absl::StatusOr<SplitCommandLine> Take(const std::vector<const char*>& args) {
  std::vector<const char*> argv = {"cnp-server"};
  argv.insert(argv.end(), args.begin(), args.end());
  return TakeListFlags(static_cast<int>(argv.size()), argv.data(), kFlags);
}

TEST(ListFlagsTest, RepeatedAndCommaJoinedValuesAddUpInOrder) {
  absl::StatusOr<SplitCommandLine> split =
      Take({"--python-path=/a", "--allow-module=x,y", "--python-path", "/b,/c", "--python_path=/d"});
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_THAT(split->lists["python_path"], ElementsAre("/a", "/b", "/c", "/d"));
  EXPECT_THAT(split->lists["allow_module"], ElementsAre("x", "y"));
  EXPECT_THAT(split->others, ElementsAre("cnp-server"));
}

TEST(ListFlagsTest, OneDashOrTwoAndEqualsOrNextArgumentAreAlike) {
  const std::vector<std::vector<const char*>> spellings = {
      {"-allow-module=m"}, {"-allow-module", "m"}, {"--allow-module", "m"},
      {"--allow_module=m"}, {"-allow_module", "m"}};
  for (const std::vector<const char*>& args : spellings) {
    absl::StatusOr<SplitCommandLine> split = Take(args);
    ASSERT_TRUE(split.ok()) << args[0] << ": " << split.status();
    EXPECT_THAT(split->lists["allow_module"], ElementsAre("m")) << args[0];
    EXPECT_THAT(split->named, ElementsAre("allow_module"));
  }
}

// Found by a probe: "--allow-module=a,,b" and "a," ran as a and b, a list that may have lost a
// value to an unset variable ("--allow-module=$A,$B") without a word.
TEST(ListFlagsTest, AnEmptyCommaElementIsRefusedNamingTheFlagAndValue) {
  for (const char* arg : {"--allow-module=,a,,b,", "--allow-module=a,,b", "--allow-module=a,",
                          "--allow-module=,a"}) {
    absl::StatusOr<SplitCommandLine> split = Take({arg});
    ASSERT_FALSE(split.ok()) << arg;
    EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(split.status().message(),
              absl::StrCat(arg, " has an empty element (two commas together, or one at an "
                                "end); write the values separated by single commas"));
  }
  absl::StatusOr<SplitCommandLine> split = Take({"--allow-module=a,b"});
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_THAT(split->lists["allow_module"], ElementsAre("a", "b"));
}

TEST(ListFlagsTest, AFlagGivenNoValueIsRefusedNamingIt) {
  const std::vector<std::vector<const char*>> empty = {
      {"--allow-module="},     {"--allow-module=,"},
      {"--allow-module", ""},  {"--allow-module"},
      {"--allow-module", "--workers=2"}, {"--allow-module", "-"},
      {"--allow-module=a", "--allow-module="}};
  for (const std::vector<const char*>& args : empty) {
    absl::StatusOr<SplitCommandLine> split = Take(args);
    ASSERT_FALSE(split.ok()) << args[0];
    EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(split.status().message(),
              "--allow-module was given no value; write --allow-module=VALUE, or leave the flag "
              "out (without it every module on the Python path may run)")
        << args[0];
  }
  absl::StatusOr<SplitCommandLine> path = Take({"--python_path"});
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().message(),
            "--python-path was given no value; write --python-path=VALUE, or leave the flag out");
}

TEST(ListFlagsTest, AWholeValueKeepsItsCommas) {
  absl::StatusOr<SplitCommandLine> split = Take({"--config", "/etc/a,b.yaml", "--config=c"});
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_THAT(split->lists["config"], ElementsAre("/etc/a,b.yaml", "c"));
  absl::StatusOr<SplitCommandLine> empty = Take({"--config="});
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(),
              HasSubstr("--config was given no value; write --config=/etc/cnp/cnp-server.yaml"));
}

TEST(ListFlagsTest, OtherFlagsGetAbslNamesWithTheirValuesAsWritten) {
  absl::StatusOr<SplitCommandLine> split =
      Take({"--max-queue=3", "-drain-delay", "-500ms", "--log_level", "debug", "--insecure",
            "positional", "-"});
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_THAT(split->others, ElementsAre("cnp-server", "--max_queue=3", "-drain_delay", "-500ms",
                                         "--log_level", "debug", "--insecure", "positional", "-"));
  EXPECT_THAT(split->lists, IsEmpty());
  EXPECT_THAT(split->named, testing::IsSupersetOf({"max_queue", "drain_delay", "log_level",
                                                   "insecure"}));
}

TEST(ListFlagsTest, NothingAfterDoubleDashIsAFlag) {
  absl::StatusOr<SplitCommandLine> split =
      Take({"--allow-module=a", "--", "--allow-module=b", "--max-queue=3"});
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_THAT(split->lists["allow_module"], ElementsAre("a"));
  EXPECT_THAT(split->others, ElementsAre("cnp-server", "--", "--allow-module=b", "--max-queue=3"));
  EXPECT_THAT(split->named, UnorderedElementsAre("allow_module"));
}

TEST(ListFlagsTest, ArgvForAbslPointsAtTheOtherArguments) {
  absl::StatusOr<SplitCommandLine> split = Take({"--allow-module=a", "--workers=2"});
  ASSERT_TRUE(split.ok()) << split.status();
  std::vector<char*> argv = split->ArgvForAbsl();
  ASSERT_EQ(argv.size(), 2u);
  EXPECT_STREQ(argv[0], "cnp-server");
  EXPECT_STREQ(argv[1], "--workers=2");
}

}  // namespace
}  // namespace cnp
