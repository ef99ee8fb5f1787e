// The walk cnp-server and cnp-adapter do over their command lines before absl parses them: which
// flags it finds, with what value, as absl will read them.
#include "common/command_line_flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, test_workers, 2, "a setting that takes a value");
ABSL_FLAG(bool, test_insecure, false, "a boolean setting");

namespace cnp {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The flags this test defines; absl's own (flagfile, undefok...) are not among them.
bool Ours(const absl::CommandLineFlag& flag) { return absl::StartsWith(flag.Name(), "test_"); }

// What the walk saw: "name=value", "name" without a value, "?name" for an unknown flag, and
// "+" after a value that was the next argument.
std::vector<std::string> Walk(const std::vector<std::string>& argv) {
  std::vector<std::string> seen;
  JudgeCommandLineFlags(argv, Ours, [&](const WrittenFlag& written) {
    std::string what = written.flag == nullptr ? "?" + written.name : written.name;
    if (written.value.has_value()) what += "=" + *written.value;
    if (written.value_is_next_argument) what += "+";
    seen.push_back(what);
    return absl::OkStatus();
  }).IgnoreError();  // the judge finds nothing wrong
  return seen;
}

TEST(CommandLineFlagsTest, FindsEachFlagWithItsValueAsAbslReadsIt) {
  EXPECT_THAT(Walk({"prog", "--test_workers=3", "-test_workers", "4", "--test_insecure",
                    "stray", "--test_insecure=false"}),
              ElementsAre("test_workers=3", "test_workers=4+", "test_insecure",
                          "test_insecure=false"));
  // A flag that is not boolean takes the next argument even when it looks like a flag, as
  // absl does; a boolean never does.
  EXPECT_THAT(Walk({"prog", "--test_workers", "--test_insecure", "--test_insecure", "5"}),
              ElementsAre("test_workers=--test_insecure+", "test_insecure"));
  EXPECT_THAT(Walk({"prog", "--test_workers"}), ElementsAre("test_workers"));
}

TEST(CommandLineFlagsTest, UnknownFlagsUnlessNegatedBooleans) {
  EXPECT_THAT(Walk({"prog", "--test_wrkers=3", "--notest_insecure", "--notest_workers"}),
              ElementsAre("?test_wrkers", "?notest_workers"));
}

// absl's own flags are defined in every program, but not by it: --undefok hid a misspelt flag,
// and --flagfile/--fromenv set flags with absl's messages and exit 1 (found by a review).
TEST(CommandLineFlagsTest, AbslsOwnFlagsAreUnknownAndHideNothing) {
  EXPECT_THAT(Walk({"prog", "--test_wrkers=3", "--undefok=test_wrkers"}),
              ElementsAre("?test_wrkers", "?undefok"));
  EXPECT_THAT(Walk({"prog", "--flagfile=/etc/passwd", "-fromenv", "test_workers",
                    "--tryfromenv=test_workers", "--noonly_check_args"}),
              ElementsAre("?flagfile", "?fromenv", "?tryfromenv", "?noonly_check_args"));
}

// absl refuses --noinsecure=true itself, with its exit 1 where a mistake in a flag is exit 2
// (config review finding): the walk refuses it first, saying what to write.
TEST(CommandLineFlagsTest, ANegatedBooleanWithAValueIsRefused) {
  const absl::Status status = JudgeCommandLineFlags(
      {"prog", "--notest_insecure=true"}, Ours, [](const WrittenFlag&) { return absl::OkStatus(); });
  EXPECT_TRUE(absl::IsInvalidArgument(status));
  EXPECT_EQ(status.message(),
            "--notest-insecure takes no value; write --test-insecure=false or --notest-insecure");
}

// --version=1 was "unknown flag --version" (flags probe): it is known, and takes no value.
TEST(CommandLineFlagsTest, VersionWithAValueIsRefusedAsSuch) {
  for (const char* written : {"--version=1", "-version=", "--version=true"}) {
    const absl::Status status = JudgeCommandLineFlags(
        {"prog", written}, Ours, [](const WrittenFlag&) { return absl::OkStatus(); });
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << written;
    EXPECT_EQ(status.message(), "--version takes no value; write --version") << written;
  }
}

TEST(CommandLineFlagsTest, StopsAtTheEndOfFlagsAndAtTheFirstError) {
  EXPECT_THAT(Walk({"prog", "--test_insecure", "--", "--test_workers=3"}),
              ElementsAre("test_insecure"));
  int judged = 0;
  const absl::Status status =
      JudgeCommandLineFlags({"prog", "--a_flag_nobody_defines", "--test_insecure"}, Ours,
                            [&](const WrittenFlag& written) {
                              ++judged;
                              return written.flag == nullptr
                                         ? UnknownFlagError(written.name, {"test_workers"}, "prog")
                                         : absl::OkStatus();
                            });
  EXPECT_EQ(judged, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(status));
  EXPECT_THAT(status.message(), HasSubstr("unknown flag --a-flag-nobody-defines"));
}

TEST(CommandLineFlagsTest, AnUnknownFlagIsOfferedTheClosestKnownOne) {
  const absl::Status status =
      UnknownFlagError("test_wrkers", {"test_workers", "test_insecure"}, "cnp-server");
  EXPECT_EQ(status.message(),
            "unknown flag --test-wrkers; did you mean --test-workers? (cnp-server --help lists "
            "every flag)");
  EXPECT_EQ(UnknownFlagError("zzz", {"test_workers"}, "cnp-adapter").message(),
            "unknown flag --zzz (cnp-adapter --help lists every flag)");
}

}  // namespace
}  // namespace cnp
