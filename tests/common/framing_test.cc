// Frames on a socketpair: whole frames however they are written, a peer that goes away, a
// deadline, a length no peer may send, and descriptors that arrive with the frame they rode on.
#include "service/common/framing.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "service/common/fd_passing.h"
#include "tests/common/frame_with_descriptors.h"

namespace cnp {
namespace {

using ::cnp::testing::ReadFrameWithDescriptors;

class FramingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_), 0);
  }
  void TearDown() override {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  void CloseWriter() {
    ::close(fds_[0]);
    fds_[0] = -1;
  }
  void WriteRaw(const std::string& bytes) {
    ASSERT_EQ(::write(fds_[0], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  // Sends `bytes` with `descriptors` attached in one sendmsg(), whatever their number.
  void SendRawWithDescriptors(const std::string& bytes, const std::vector<int>& descriptors) {
    iovec part{const_cast<char*>(bytes.data()), bytes.size()};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * descriptors.size()));
    msghdr message{};
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    message.msg_control = control.data();
    message.msg_controllen = control.size();
    cmsghdr* rights = CMSG_FIRSTHDR(&message);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(sizeof(int) * descriptors.size());
    std::memcpy(CMSG_DATA(rights), descriptors.data(), sizeof(int) * descriptors.size());
    ASSERT_EQ(::sendmsg(writer(), &message, 0), static_cast<ssize_t>(bytes.size()));
  }
  static std::string Header(uint32_t n) {
    return {static_cast<char>(n), static_cast<char>(n >> 8), static_cast<char>(n >> 16),
            static_cast<char>(n >> 24)};
  }

  int writer() const { return fds_[0]; }
  int reader() const { return fds_[1]; }

 private:
  int fds_[2] = {-1, -1};
};

// The header helpers, which callers doing their own I/O use, write and read the same header as
// WriteFrame and ReadFrame: little-endian, and bytes above 0x7f are not sign-extended.
TEST_F(FramingTest, TheHeaderHelpersSpeakTheFramesFormat) {
  const uint32_t length = 0x8081f0ffu;
  char header[kFrameHeaderBytes];
  EncodeFrameLength(length, header);
  EXPECT_EQ(std::string(header, sizeof header), Header(length));
  EXPECT_EQ(DecodeFrameLength(Header(length).data()), length);
  EXPECT_EQ(DecodeFrameLength(Header(7).data()), 7u);

  ASSERT_TRUE(WriteFrame(writer(), "four").ok());
  char written[kFrameHeaderBytes];
  ASSERT_EQ(::read(reader(), written, sizeof written), static_cast<ssize_t>(sizeof written));
  EXPECT_EQ(DecodeFrameLength(written), 4u);
}

TEST_F(FramingTest, FramesArriveWholeAndInOrder) {
  ASSERT_TRUE(WriteFrame(writer(), "first").ok());
  ASSERT_TRUE(WriteFrame(writer(), "").ok());
  ASSERT_TRUE(WriteFrame(writer(), std::string("with\0nul", 8)).ok());
  std::string payload;
  ASSERT_TRUE(ReadFrame(reader(), payload).ok());
  EXPECT_EQ(payload, "first");
  ASSERT_TRUE(ReadFrame(reader(), payload).ok());
  EXPECT_EQ(payload, "");
  ASSERT_TRUE(ReadFrame(reader(), payload).ok());
  EXPECT_EQ(payload, std::string("with\0nul", 8));
}

TEST_F(FramingTest, AFrameBiggerThanTheSocketBufferIsWrittenWhileItIsRead) {
  const std::string big(8 << 20, 'x');
  std::thread write([&] { EXPECT_TRUE(WriteFrame(writer(), big).ok()); });
  std::string payload;
  absl::Status read = ReadFrame(reader(), payload, absl::Now() + absl::Seconds(60));
  write.join();
  ASSERT_TRUE(read.ok()) << read;
  EXPECT_EQ(payload, big);
}

TEST_F(FramingTest, AFrameSplitAcrossWritesIsReadWhole) {
  std::thread write([&] {
    WriteRaw(Header(6).substr(0, 3));
    WriteRaw(Header(6).substr(3) + "sp");
    WriteRaw("lit!");
  });
  std::string payload;
  absl::Status read = ReadFrame(reader(), payload, absl::Now() + absl::Seconds(60));
  write.join();
  ASSERT_TRUE(read.ok()) << read;
  EXPECT_EQ(payload, "split!");
}

TEST_F(FramingTest, APeerThatClosesIsUnavailableBetweenFramesAndWithinOne) {
  WriteRaw(Header(10) + "short");
  CloseWriter();
  std::string payload;
  EXPECT_EQ(ReadFrame(reader(), payload).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReadFrame(reader(), payload).code(), absl::StatusCode::kUnavailable);
}

TEST_F(FramingTest, NothingToReadByTheDeadlineIsDeadlineExceeded) {
  // Deadlines apply to a non-blocking socket (on a blocking one the read itself blocks), which
  // is how the server holds its end.
  ::fcntl(reader(), F_SETFL, ::fcntl(reader(), F_GETFL) | O_NONBLOCK);
  std::string payload;
  EXPECT_EQ(ReadFrame(reader(), payload, absl::Now() + absl::Milliseconds(50)).code(),
            absl::StatusCode::kDeadlineExceeded);
  // And a frame that starts but does not finish in time.
  WriteRaw(Header(10) + "part");
  EXPECT_EQ(ReadFrame(reader(), payload, absl::Now() + absl::Milliseconds(50)).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(FramingTest, ALengthOverTheLimitIsDataLoss) {
  WriteRaw(Header(kMaxFrameBytes + 1));
  std::string payload;
  EXPECT_EQ(ReadFrame(reader(), payload).code(), absl::StatusCode::kDataLoss);
}

TEST_F(FramingTest, DescriptorsArriveWithTheirFrameAndAreTheSameFiles) {
  int pipe[2];
  ASSERT_EQ(::pipe2(pipe, O_CLOEXEC), 0);
  ASSERT_TRUE(WriteFrame(writer(), "before").ok());
  ASSERT_TRUE(WriteFrameWithDescriptors(writer(), "with a pipe", {pipe[1]}).ok());
  ::close(pipe[1]);  // the receiver's copy is now the only write end

  std::string payload;
  std::vector<int> received;
  ASSERT_TRUE(ReadFrameWithDescriptors(reader(), payload, received).ok());
  EXPECT_EQ(payload, "before");
  EXPECT_TRUE(received.empty());
  ASSERT_TRUE(ReadFrameWithDescriptors(reader(), payload, received).ok());
  EXPECT_EQ(payload, "with a pipe");
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(::fcntl(received[0], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  ASSERT_EQ(::write(received[0], "hi", 2), 2);
  ::close(received[0]);
  char text[4] = {};
  EXPECT_EQ(::read(pipe[0], text, sizeof text), 2);  // then end of file: no copy left open
  EXPECT_STREQ(text, "hi");
  EXPECT_EQ(::read(pipe[0], text, sizeof text), 0);
  ::close(pipe[0]);
}

TEST_F(FramingTest, TheMostDescriptorsAFrameMayCarryArriveWhole) {
  std::vector<int> most(kMaxFrameDescriptors, STDERR_FILENO);
  ASSERT_TRUE(WriteFrameWithDescriptors(writer(), "x", most).ok());
  std::string payload;
  std::vector<int> received;
  ASSERT_TRUE(ReadFrameWithDescriptors(reader(), payload, received).ok());
  EXPECT_EQ(received.size(), kMaxFrameDescriptors);
  for (int fd : received) ::close(fd);
}

TEST_F(FramingTest, TooManyDescriptorsAreRefusedOnBothSides) {
  std::vector<int> many(kMaxFrameDescriptors + 1, STDERR_FILENO);
  EXPECT_EQ(WriteFrameWithDescriptors(writer(), "x", many).code(),
            absl::StatusCode::kInvalidArgument);

  // A peer that does not keep to the limit: the reader refuses its frame.
  SendRawWithDescriptors(Header(1) + "x", many);
  std::string payload;
  std::vector<int> received;
  EXPECT_EQ(ReadFrameWithDescriptors(reader(), payload, received).code(),
            absl::StatusCode::kDataLoss);
  for (int fd : received) ::close(fd);
}

}  // namespace
}  // namespace cnp
