// cli::LineStream hands its descriptor whole lines, each in one write. A SOCK_SEQPACKET pair
// keeps the boundary of every write, so each recv() below is exactly one write(2).
#include "client/cli/line_stream.h"

#include <sys/socket.h>
#include <unistd.h>

#include <iomanip>
#include <string>

#include "gtest/gtest.h"

namespace cnp::cli {
namespace {

class LineStreamTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds_), 0); }
  void TearDown() override {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  // The next write's bytes, or "(none)" when nothing was written.
  std::string NextWrite() {
    char buffer[4096];
    const ssize_t n = ::recv(fds_[1], buffer, sizeof buffer, MSG_DONTWAIT);
    return n < 0 ? "(none)" : std::string(buffer, static_cast<size_t>(n));
  }
  int fds_[2];
};

TEST_F(LineStreamTest, EachLineIsOneWriteHoweverManyPiecesMadeIt) {
  LineStream err(fds_[0]);
  err << "cnp derive: " << "towns" << ": " << 3 << " documents\n" << "next: ";
  EXPECT_EQ(NextWrite(), "cnp derive: towns: 3 documents\n");
  EXPECT_EQ(NextWrite(), "(none)");  // the unfinished line waits for its newline
  err << "caught up\n";
  EXPECT_EQ(NextWrite(), "next: caught up\n");
  EXPECT_EQ(NextWrite(), "(none)");
}

TEST_F(LineStreamTest, LinesWrittenTogetherGoOutTogetherAndFlushSendsTheRest) {
  LineStream err(fds_[0]);
  err << "one\ntwo\nthr";
  EXPECT_EQ(NextWrite(), "one\ntwo\n");
  err << 'e';
  err.put('e');  // one character at a time: the buffer's overflow()
  EXPECT_EQ(NextWrite(), "(none)");
  err.flush();
  EXPECT_EQ(NextWrite(), "three");
}

TEST_F(LineStreamTest, ANewlinePutAloneEndsTheLine) {
  LineStream err(fds_[0]);
  err << std::setw(6) << 42 << ':';
  err.put('\n');
  EXPECT_EQ(NextWrite(), "    42:\n");
}

TEST_F(LineStreamTest, TheRestGoesOutWhenTheStreamEnds) {
  {
    LineStream err(fds_[0]);
    err << "no newline";
  }
  EXPECT_EQ(NextWrite(), "no newline");
}

}  // namespace
}  // namespace cnp::cli
