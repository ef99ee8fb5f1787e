// The server's log file kept to --log-max-bytes: copied to PATH.1 and emptied once over, a
// failed rotation tried again (not given up on), and the PATH.1 before it kept until a new
// copy is whole.
#include "service/common/log_file_cap.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/stderr_lines.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class LogFileCapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = std::string(tmp != nullptr ? tmp : "/tmp") + "/log_file_cap_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = dir_ + "/server.log";
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
    std::filesystem::remove_all(dir_);
  }
  void Append(const std::string& text) {
    ASSERT_EQ(::write(fd_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  // What `cap.Check(at)` logged.
  static std::vector<std::string> CheckAt(LogFileCap& cap, absl::Time at) {
    return ::cnp::testing::StderrLinesOf([&cap, at] { cap.Check(at); });
  }

  std::string dir_;
  std::string path_;
  int fd_ = -1;
};

TEST_F(LogFileCapTest, AFileOverTheCapIsCopiedAndEmptied) {
  Append(std::string(200, 'a') + "\n");
  LogFileCap cap(fd_, 100);
  const std::vector<std::string> lines = CheckAt(cap, absl::UnixEpoch());
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], HasSubstr("its lines so far are in " + path_ + ".1"));
  EXPECT_EQ(Read(path_ + ".1"), std::string(200, 'a') + "\n");
  EXPECT_EQ(Read(path_), "");
  EXPECT_FALSE(std::filesystem::exists(path_ + ".1.tmp"));
  Append("after\n");
  EXPECT_EQ(Read(path_), "after\n");  // at the new start: no hole
}

// Found by a probe: a log file deleted under the server (rm) grew on past the cap, holding disk
// no one could see. It is emptied, and the line says so.
TEST_F(LogFileCapTest, ADeletedFileOverTheCapIsEmptied) {
  Append(std::string(200, 'a') + "\n");
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  LogFileCap cap(fd_, 100);
  const std::vector<std::string> lines = CheckAt(cap, absl::UnixEpoch());
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], HasSubstr("the log file was deleted while the server wrote to it"));
  struct stat after {};
  ASSERT_EQ(::fstat(fd_, &after), 0);
  EXPECT_EQ(after.st_size, 0);
  EXPECT_FALSE(std::filesystem::exists(path_ + ".1"));
}

TEST_F(LogFileCapTest, AFileUnderTheCapIsLeftAlone) {
  Append("short\n");
  LogFileCap cap(fd_, 100);
  EXPECT_THAT(CheckAt(cap, absl::UnixEpoch()), IsEmpty());
  EXPECT_EQ(Read(path_), "short\n");
  EXPECT_FALSE(std::filesystem::exists(path_ + ".1"));
}

// Before: one failure (a full disk, a directory the server could not write) and the log was
// never capped again while the server ran; and the copy was written straight over PATH.1,
// which a copy failing half-way left cut short.
TEST_F(LogFileCapTest, AFailedRotationKeepsTheOldCopyAndIsTriedAgainLater) {
  {
    std::ofstream(path_ + ".1") << "the lines before\n";
  }
  // The copy cannot be made: its place is taken by a directory.
  std::filesystem::create_directory(path_ + ".1.tmp");
  Append(std::string(200, 'b') + "\n");
  LogFileCap cap(fd_, 100);
  const absl::Time start = absl::UnixEpoch();

  std::vector<std::string> lines = CheckAt(cap, start);
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], HasSubstr("the log is past --log-max-bytes (100) but cannot write"));
  EXPECT_THAT(lines[0], HasSubstr("trying again in 1m"));
  EXPECT_EQ(Read(path_ + ".1"), "the lines before\n");
  EXPECT_EQ(Read(path_).size(), 201u);

  // Within the wait: not tried, not logged again.
  EXPECT_THAT(CheckAt(cap, start + absl::Seconds(30)), IsEmpty());
  // Still failing: the wait doubles.
  lines = CheckAt(cap, start + absl::Minutes(1));
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], HasSubstr("trying again in 2m"));

  // The cause goes away: the next try after the wait rotates.
  std::filesystem::remove(path_ + ".1.tmp");
  EXPECT_THAT(CheckAt(cap, start + absl::Minutes(2)), IsEmpty());
  lines = CheckAt(cap, start + absl::Minutes(3));
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], HasSubstr("its lines so far are in"));
  EXPECT_EQ(Read(path_ + ".1"), std::string(200, 'b') + "\n");
  EXPECT_EQ(Read(path_), "");
}

TEST_F(LogFileCapTest, TheWaitBetweenTriesStopsGrowingAtAnHour) {
  std::filesystem::create_directory(path_ + ".1.tmp");
  Append(std::string(200, 'c') + "\n");
  LogFileCap cap(fd_, 100);
  absl::Time at = absl::UnixEpoch();
  std::string last;
  for (int i = 0; i < 9; ++i) {
    const std::vector<std::string> lines = CheckAt(cap, at);
    ASSERT_THAT(lines, SizeIs(1)) << "try " << i;
    last = lines[0];
    at += LogFileCap::kLongestRetry;
  }
  EXPECT_THAT(last, HasSubstr("trying again in 1h"));
}

}  // namespace
}  // namespace cnp
