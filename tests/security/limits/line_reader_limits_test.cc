// Issue 7, item 3: cnp-adapter's LineReader holds at most about one line of the limit, however
// long the input's lines are, and says which lines it cut.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "adapter/line_io.h"
#include "gtest/gtest.h"

namespace cnp::adapter {
namespace {

int FileWith(const std::string& contents) {
  std::FILE* file = std::tmpfile();
  EXPECT_NE(file, nullptr);
  EXPECT_EQ(std::fwrite(contents.data(), 1, contents.size(), file), contents.size());
  std::fflush(file);
  const int fd = ::dup(::fileno(file));
  std::fclose(file);
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

TEST(LineReaderLimitsTest, ALineOverTheLimitIsSkippedAndFlagged) {
  const std::string long_line = "[\"map_doc\",\"" + std::string(1 << 20, 'x') + "\"]";
  const int fd = FileWith("[\"reset\"]\n" + long_line + "\n[\"map_doc\",{}]\n" + long_line);
  LineReader reader(fd, 1000);
  EXPECT_EQ(reader.Next(), "[\"reset\"]");
  EXPECT_FALSE(reader.too_long());

  std::optional<std::string_view> cut = reader.Next();
  ASSERT_TRUE(cut.has_value());
  EXPECT_TRUE(reader.too_long());
  EXPECT_EQ(*cut, long_line.substr(0, cut->size()));  // its start, to tell the command
  EXPECT_LE(cut->size(), 1000u);

  EXPECT_EQ(reader.Next(), "[\"map_doc\",{}]");
  EXPECT_FALSE(reader.too_long());
  // The same at end of input without a newline.
  cut = reader.Next();
  ASSERT_TRUE(cut.has_value());
  EXPECT_TRUE(reader.too_long());
  EXPECT_EQ(reader.Next(), std::nullopt);
  ::close(fd);
}

TEST(LineReaderLimitsTest, ALineOfExactlyTheLimitIsKept) {
  const std::string line(1000, 'a');
  const int fd = FileWith(line + "\n" + line + "b\n");
  LineReader reader(fd, 1000);
  EXPECT_EQ(reader.Next(), line);
  EXPECT_FALSE(reader.too_long());
  reader.Next();
  EXPECT_TRUE(reader.too_long());
  EXPECT_EQ(reader.Next(), std::nullopt);
  ::close(fd);
}

}  // namespace
}  // namespace cnp::adapter
