// FrameReader: frames however the bytes arrive (together, split, big), and a clean EOF.
#include "service/worker/frame_reader.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "service/common/framing.h"

namespace cnp::worker {
namespace {

class FrameReaderTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds_), 0); }
  void TearDown() override {
    ::close(fds_[0]);
    if (fds_[1] >= 0) ::close(fds_[1]);
  }

  static std::string Frame(const std::string& payload) {
    uint32_t n = payload.size();
    std::string header = {static_cast<char>(n), static_cast<char>(n >> 8),
                          static_cast<char>(n >> 16), static_cast<char>(n >> 24)};
    return header + payload;
  }
  void WriteRaw(const std::string& bytes) {
    ASSERT_EQ(::write(fds_[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }

  int fds_[2];
};

TEST_F(FrameReaderTest, SeveralFramesInOneWriteComeOutOneByOne) {
  WriteRaw(Frame("first") + Frame("") + Frame("third"));
  FrameReader reader(fds_[0]);
  std::string payload;
  ASSERT_TRUE(reader.Read(payload).ok());
  EXPECT_EQ(payload, "first");
  ASSERT_TRUE(reader.Read(payload).ok());
  EXPECT_EQ(payload, "");
  ASSERT_TRUE(reader.Read(payload).ok());
  EXPECT_EQ(payload, "third");
}

TEST_F(FrameReaderTest, FrameSplitInsideItsHeaderAndPayload) {
  std::string frame = Frame("split payload");
  FrameReader reader(fds_[0]);
  std::string payload;
  // The reader blocks until the rest arrives; the writer sends it in three pieces.
  std::thread writer([&] {
    WriteRaw(frame.substr(0, 2));
    WriteRaw(frame.substr(2, 5));
    WriteRaw(frame.substr(7));
  });
  ASSERT_TRUE(reader.Read(payload).ok());
  writer.join();
  EXPECT_EQ(payload, "split payload");
}

TEST_F(FrameReaderTest, FrameLargerThanTheBufferAndWrittenByWriteFrame) {
  std::string big(3 << 20, 'b');
  big[12345] = 'x';
  std::thread writer([&] {
    ASSERT_TRUE(WriteFrame(fds_[1], big).ok());
    ASSERT_TRUE(WriteFrame(fds_[1], "after").ok());
  });
  FrameReader reader(fds_[0]);
  std::string payload;
  ASSERT_TRUE(reader.Read(payload).ok());
  EXPECT_TRUE(payload == big);
  ASSERT_TRUE(reader.Read(payload).ok());
  EXPECT_EQ(payload, "after");
  writer.join();
}

TEST_F(FrameReaderTest, ClosedPeerIsUnavailable) {
  WriteRaw(Frame("last"));
  ::close(fds_[1]);
  fds_[1] = -1;
  FrameReader reader(fds_[0]);
  std::string payload;
  ASSERT_TRUE(reader.Read(payload).ok());
  absl::Status end = reader.Read(payload);
  EXPECT_TRUE(absl::IsUnavailable(end)) << end;
}

TEST_F(FrameReaderTest, OversizedLengthIsDataLoss) {
  WriteRaw(std::string("\xff\xff\xff\xff", 4));
  FrameReader reader(fds_[0]);
  std::string payload;
  EXPECT_TRUE(absl::IsDataLoss(reader.Read(payload)));
}

// A pipe whose write end `sent` stands for: what is written to it comes out of `read_end`.
void ExpectSamePipe(int sent_write_end, int read_end) {
  ASSERT_EQ(::write(sent_write_end, "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(read_end, &c, 1), 1);
  EXPECT_EQ(c, 'x');
}

struct Pipe {
  Pipe() { EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0); }
  ~Pipe() {
    for (int fd : fds) if (fd >= 0) ::close(fd);
  }
  int fds[2] = {-1, -1};
};

TEST_F(FrameReaderTest, DescriptorsComeWithTheirFrame) {
  Pipe a, b;
  ASSERT_TRUE(WriteFrameWithDescriptors(fds_[1], "with two", {a.fds[1], b.fds[1]}).ok());
  FrameReader reader(fds_[0]);
  std::string payload;
  std::vector<int> received;
  ASSERT_TRUE(reader.Read(payload, &received).ok());
  EXPECT_EQ(payload, "with two");
  ASSERT_EQ(received.size(), 2u);
  ExpectSamePipe(received[0], a.fds[0]);
  ExpectSamePipe(received[1], b.fds[0]);
  for (int fd : received) ::close(fd);
}

TEST_F(FrameReaderTest, TheMostDescriptorsAFrameMayCarryArrive) {
  std::vector<int> most(kMaxFrameDescriptors, STDERR_FILENO);
  ASSERT_TRUE(WriteFrameWithDescriptors(fds_[1], "full", most).ok());
  FrameReader reader(fds_[0]);
  std::string payload;
  std::vector<int> received;
  ASSERT_TRUE(reader.Read(payload, &received).ok());
  EXPECT_EQ(payload, "full");
  EXPECT_EQ(received.size(), kMaxFrameDescriptors);
  for (int fd : received) ::close(fd);
}

TEST_F(FrameReaderTest, DescriptorsOfALaterFrameReadInTheSameCallWaitForIt) {
  Pipe pipe;
  // Both frames are queued before the first read, so one receive call takes them both.
  WriteRaw(Frame("plain"));
  ASSERT_TRUE(WriteFrameWithDescriptors(fds_[1], "carrier", {pipe.fds[1]}).ok());
  WriteRaw(Frame("plain again"));
  FrameReader reader(fds_[0]);
  std::string payload;
  std::vector<int> received;
  ASSERT_TRUE(reader.Read(payload, &received).ok());
  EXPECT_EQ(payload, "plain");
  EXPECT_TRUE(received.empty());
  ASSERT_TRUE(reader.Read(payload, &received).ok());
  EXPECT_EQ(payload, "carrier");
  ASSERT_EQ(received.size(), 1u);
  ExpectSamePipe(received[0], pipe.fds[0]);
  ::close(received[0]);
  received.clear();
  ASSERT_TRUE(reader.Read(payload, &received).ok());
  EXPECT_EQ(payload, "plain again");
  EXPECT_TRUE(received.empty());
}

TEST_F(FrameReaderTest, DescriptorsOnAFrameLargerThanTheBuffer) {
  Pipe pipe;
  std::string big(1 << 20, 'q');
  std::thread writer([&] {
    ASSERT_TRUE(WriteFrame(fds_[1], "small first").ok());
    ASSERT_TRUE(WriteFrameWithDescriptors(fds_[1], big, {pipe.fds[1]}).ok());
  });
  FrameReader reader(fds_[0]);
  std::string payload;
  std::vector<int> received;
  ASSERT_TRUE(reader.Read(payload, &received).ok());
  EXPECT_EQ(payload, "small first");
  EXPECT_TRUE(received.empty());
  ASSERT_TRUE(reader.Read(payload, &received).ok());
  writer.join();
  EXPECT_TRUE(payload == big);
  ASSERT_EQ(received.size(), 1u);
  ExpectSamePipe(received[0], pipe.fds[0]);
  ::close(received[0]);
}

TEST_F(FrameReaderTest, DescriptorsNobodyAskedForAreClosed) {
  ::signal(SIGPIPE, SIG_IGN);
  Pipe pipe;
  ASSERT_TRUE(WriteFrameWithDescriptors(fds_[1], "stray", {pipe.fds[0]}).ok());
  ::close(pipe.fds[0]);
  pipe.fds[0] = -1;
  FrameReader reader(fds_[0]);
  std::string payload;
  ASSERT_TRUE(reader.Read(payload).ok());
  EXPECT_EQ(payload, "stray");
  // The only read end left was the one the frame carried: once closed, writing fails.
  EXPECT_EQ(::write(pipe.fds[1], "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
}

}  // namespace
}  // namespace cnp::worker
