// Issue 7, item 3: the LineReader of CouchDB's lines (common/couchdb/line_io.h: cnp-adapter's
// stream sessions and a worker's direct sessions) holds at most about one line of the limit,
// however long the input's lines are, and says which lines it dropped.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/couchdb/line_io.h"
#include "gtest/gtest.h"

namespace cnp::couchdb {
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

bool Dropped(const absl::StatusOr<std::optional<std::string_view>>& next) {
  return absl::IsResourceExhausted(next.status());
}

TEST(LineReaderLimitsTest, ALineOverTheLimitIsSkippedAndFlagged) {
  const std::string long_line = "[\"map_doc\",\"" + std::string(1 << 20, 'x') + "\"]";
  const int fd = FileWith("[\"reset\"]\n" + long_line + "\n[\"map_doc\",{}]\n" + long_line);
  LineReader reader(fd, 1000);
  EXPECT_EQ(*reader.Next(), "[\"reset\"]");

  EXPECT_TRUE(Dropped(reader.Next()));
  const std::string_view start = reader.dropped_start();
  EXPECT_FALSE(start.empty());
  EXPECT_EQ(start, long_line.substr(0, start.size()));  // its start, to tell the command
  EXPECT_LE(start.size(), 1000u);

  EXPECT_EQ(*reader.Next(), "[\"map_doc\",{}]");
  // The same at end of input without a newline.
  EXPECT_TRUE(Dropped(reader.Next()));
  EXPECT_EQ(*reader.Next(), std::nullopt);
  ::close(fd);
}

TEST(LineReaderLimitsTest, ALineOfExactlyTheLimitIsKept) {
  const std::string line(1000, 'a');
  const int fd = FileWith(line + "\n" + line + "b\n");
  LineReader reader(fd, 1000);
  EXPECT_EQ(*reader.Next(), line);
  EXPECT_TRUE(Dropped(reader.Next()));
  EXPECT_EQ(*reader.Next(), std::nullopt);
  ::close(fd);
}

}  // namespace
}  // namespace cnp::couchdb
