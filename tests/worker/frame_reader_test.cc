// FrameReader: frames however the bytes arrive (together, split, big), and a clean EOF.
#include "service/worker/frame_reader.h"

#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

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

}  // namespace
}  // namespace cnp::worker
