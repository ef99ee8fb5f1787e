// common/code_directories.h: the one list of directories Python code comes from, in sys.path's
// order, and the checks cnp-server, cnp-adapter and cnp-worker all make on it.
#include "common/code_directories.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/as_user.h"
#include "tests/support/files.h"

namespace cnp {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(CodeDirectoriesTest, FlagsThenTheVariableThenTheVirtualenv) {
  EXPECT_THAT(CodeDirectories({"/a", "/b"}, ":/c::/d:", "/venv"),
              ElementsAre(CodeDirectory{"/a", CodeSource::kPythonPathFlag},
                          CodeDirectory{"/b", CodeSource::kPythonPathFlag},
                          CodeDirectory{"/c", CodeSource::kPythonPathVariable},
                          CodeDirectory{"/d", CodeSource::kPythonPathVariable},
                          CodeDirectory{"/venv", CodeSource::kVirtualenv}));
  EXPECT_THAT(CodeDirectories({"/a"}, nullptr, ""),
              ElementsAre(CodeDirectory{"/a", CodeSource::kPythonPathFlag}));
  EXPECT_TRUE(CodeDirectories({}, "", "").empty());
}

TEST(CodeDirectoriesTest, EachNamesTheSettingItCameFrom) {
  std::vector<std::string> settings;
  for (const CodeDirectory& dir : CodeDirectories({"/a"}, "/b", "/c")) {
    settings.emplace_back(dir.Setting());
  }
  EXPECT_THAT(settings, ElementsAre("--python-path", "PYTHONPATH", "--virtualenv"));
}

TEST(CodeDirectoriesTest, PrivateDirectoriesPass) {
  const std::string dir = testing::MakeTempDir("code");
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  EXPECT_TRUE(CheckCodeDirectories(CodeDirectories({dir}, dir.c_str(), dir)).ok());
}

TEST(CodeDirectoriesTest, AMissingPythonPathIsRefusedAMissingVariableEntryIsNot) {
  const std::string missing = testing::MakeTempDir("code") + "/missing";
  absl::Status flag = CheckCodeDirectories(CodeDirectories({missing}, nullptr, ""));
  EXPECT_EQ(flag.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(flag.message(), "--python-path " + missing + " is not a directory");
  EXPECT_TRUE(CheckCodeDirectories(CodeDirectories({}, missing.c_str(), "")).ok());
}

// Found by a review: a --virtualenv that does not exist passed, and the server exited 1 once no
// worker could start (which systemd restarts every second), not 2 before anything started.
TEST(CodeDirectoriesTest, AMissingVirtualenvIsRefused) {
  const std::string missing = testing::MakeTempDir("code") + "/venv";
  absl::Status venv = CheckCodeDirectories(CodeDirectories({}, nullptr, missing));
  EXPECT_EQ(venv.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(venv.message(), "--virtualenv " + missing + " is not a directory");
}

TEST(CodeDirectoriesTest, OneOthersMayWriteToIsRefusedNamingItsSetting) {
  const std::string open = testing::MakeTempDir("open");
  ASSERT_EQ(::chmod(open.c_str(), 0775), 0);
  absl::Status variable = CheckCodeDirectories(CodeDirectories({}, open.c_str(), ""));
  EXPECT_EQ(variable.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(variable.message(), HasSubstr("PYTHONPATH " + open));
  EXPECT_THAT(variable.message(), HasSubstr("chmod go-w " + open));

  // The sticky bit keeps others from replacing files, not from adding modules.
  ASSERT_EQ(::chmod(open.c_str(), 01777), 0);
  absl::Status venv = CheckCodeDirectories(CodeDirectories({}, nullptr, open));
  EXPECT_EQ(venv.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(venv.message(), HasSubstr("--virtualenv " + open));
}

// A directory the server's user may not read or enter: Python skips such a path entry
// silently, and every call answered "No module named ..." (an operator probe: a root-only
// --python-path under a server running as cnp). Refused at start instead, as one it may not
// enter because of a directory above it.
TEST(CodeDirectoriesTest, OneThisUserCannotReadOrEnterIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to own the directories and drop to 65534";
  const std::string dir = testing::MakeReachableTempDir("code_directories_test");
  ASSERT_FALSE(dir.empty());
  const std::string open = dir + "/open", closed = dir + "/closed", below = closed + "/below";
  for (const std::string& d : {open, closed, below}) ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(closed.c_str(), 0700), 0);
  const int status = testing::ExitStatusAsUser(65534, 65534, [&] {
    if (!CheckCodeDirectories(CodeDirectories({open}, nullptr, "")).ok()) return 11;
    for (const std::string& refused : {closed, below}) {
      absl::Status s = CheckCodeDirectories(CodeDirectories({refused}, nullptr, ""));
      if (!absl::IsPermissionDenied(s)) return 12;
      const std::string message(s.message());
      if (message.find("--python-path " + refused + " cannot be read by uid 65534") ==
              std::string::npos ||
          message.find("chmod o+rx") == std::string::npos) {
        return 13;
      }
    }
    // A PYTHONPATH entry too, which may be missing but not unreadable.
    absl::Status variable = CheckCodeDirectories(CodeDirectories({}, below.c_str(), ""));
    return absl::IsPermissionDenied(variable) ? 0 : 14;
  });
  EXPECT_EQ(status, 0) << "125 could not become 65534, 11 a readable one was refused, 12 an "
                          "unreadable one passed, 13 the message lacked the fix, 14 the "
                          "variable's entry passed";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cnp
