// common/flag_help.h: every way of asking an absl program for help gets our listing (absl's own
// knows our flags by other names, or finds none of them: "No flags matched").
#include "common/flag_help.h"

#include <initializer_list>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace cnp {
namespace {

bool Asked(std::initializer_list<std::string> args) {
  std::vector<std::string> storage = {"cnp-adapter"};
  storage.insert(storage.end(), args);
  std::vector<char*> argv;
  for (std::string& arg : storage) argv.push_back(arg.data());
  return HelpAsked(static_cast<int>(argv.size()), argv.data());
}

TEST(HelpAskedTest, EveryHelpSpellingWithOneDashOrTwo) {
  for (const char* spelling :
       {"-h", "--help", "-help", "--helpfull", "-helpfull", "--helpshort", "-helpshort",
        "--helpon=main", "--helpmatch=target", "-helpmatch=tls", "--helppackage", "--help=x"}) {
    EXPECT_TRUE(Asked({"--target=unix:/tmp/x.sock", spelling})) << spelling;
  }
}

TEST(HelpAskedTest, OtherArgumentsAndAnythingAfterDoubleDashAreNotHelp) {
  EXPECT_FALSE(Asked({}));
  EXPECT_FALSE(Asked({"--target=help", "--session=stream", "help"}));
  EXPECT_FALSE(Asked({"--", "--help"}));
}

}  // namespace
}  // namespace cnp
