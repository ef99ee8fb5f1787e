// The limits a FrameGuard holds a client's HTTP/2 to, read as gRPC reads the bytes: in pieces
// that cut frames anywhere.
#include "service/http2_guard/frame_guard.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::http2_guard {
namespace {

using ::testing::HasSubstr;

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr unsigned char kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4,
                        kPing = 0x6, kContinuation = 0x9;

std::string Frame(unsigned char type, unsigned char flags, uint32_t stream,
                  const std::string& payload = "") {
  const size_t n = payload.size();
  std::string frame = {static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                       static_cast<char>(n), static_cast<char>(type), static_cast<char>(flags),
                       static_cast<char>(stream >> 24), static_cast<char>(stream >> 16),
                       static_cast<char>(stream >> 8), static_cast<char>(stream)};
  return frame + payload;
}

const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

// Smaller buckets than the server's, so that the tests count to them quickly.
FrameLimits TestLimits() {
  FrameLimits limits;
  limits.ping_burst = limits.pings_per_second = 1000;
  limits.reset_burst = limits.resets_per_second = 1000;
  return limits;
}

// A guard on a connection whose server has sent its SETTINGS.
FrameGuard Spoken() {
  FrameGuard guard(TestLimits());
  guard.ServerSpoke();
  return guard;
}

// `bytes` read `piece` bytes at a time, at `now`: what the guard last said.
std::string ReadInPieces(FrameGuard& guard, const std::string& bytes, size_t piece,
                         absl::Time now = kStart) {
  std::string said;
  for (size_t at = 0; at < bytes.size(); at += piece) {
    said = guard.Read(absl::string_view(bytes).substr(at, piece), now);
  }
  return said;
}

std::string Streams(uint32_t first, int count) {
  std::string frames;
  for (int i = 0; i < count; ++i) frames += Frame(kHeaders, 0x4, first + 2 * i, "hdrs");
  return frames;
}

TEST(FrameGuardTest, StreamsBeforeTheSettingsAckAreHeldToTheServersLimit) {
  for (size_t piece : {1, 7, 4096}) {
    SCOPED_TRACE(piece);
    FrameGuard guard = Spoken();
    const std::string start = std::string(kPreface) + Frame(kSettings, 0, 0);
    EXPECT_EQ(ReadInPieces(guard, start + Streams(1, 100), piece), "");
    EXPECT_THAT(ReadInPieces(guard, Streams(201, 1), piece),
                HasSubstr("opened more than 100 streams without acknowledging the server's "
                          "SETTINGS"));
    // Said again to every later read.
    EXPECT_NE(guard.Read(Frame(kSettings, 0x1, 0), kStart), "");
  }
  // Once acknowledged, gRPC's own MAX_CONCURRENT_STREAMS holds: the guard counts no more.
  FrameGuard acked = Spoken();
  EXPECT_EQ(ReadInPieces(acked, std::string(kPreface) + Frame(kSettings, 0x1, 0) +
                                    Streams(1, 5000), 13),
            "");
}

// An acknowledgement read before the server wrote its SETTINGS is of nothing: gRPC 1.51 takes
// it for one of the defaults (unlimited streams) and never enforces its limit, so the guard
// goes on counting (a review held 1.47 GB that way).
TEST(FrameGuardTest, AnAckBeforeTheServerSpokeIsNoAck) {
  FrameGuard guard(TestLimits());
  EXPECT_EQ(guard.Read(std::string(kPreface) + Frame(kSettings, 0, 0) + Frame(kSettings, 0x1, 0),
                       kStart),
            "");
  guard.ServerSpoke();
  EXPECT_THAT(guard.Read(Streams(1, 101), kStart),
              HasSubstr("opened more than 100 streams without acknowledging"));
}

TEST(FrameGuardTest, PingsPastTheBurstAndRateCloseTheConnection) {
  FrameGuard guard(TestLimits());
  std::string pings = kPreface;
  for (int i = 0; i < 1000; ++i) pings += Frame(kPing, 0, 0, std::string(8, 'p'));
  EXPECT_EQ(ReadInPieces(guard, pings, 100), "");
  // Acknowledgements of the server's own pings are not counted.
  EXPECT_EQ(guard.Read(Frame(kPing, 0x1, 0, std::string(8, 'a')), kStart), "");
  // A second later, a second's worth more are allowed; not one past it.
  std::string more;
  for (int i = 0; i < 1000; ++i) more += Frame(kPing, 0, 0, std::string(8, 'p'));
  EXPECT_EQ(guard.Read(more, kStart + absl::Seconds(1)), "");
  EXPECT_THAT(guard.Read(Frame(kPing, 0, 0, std::string(8, 'p')), kStart + absl::Seconds(1)),
              HasSubstr("sent PING frames faster than any client needs"));
}

TEST(FrameGuardTest, CountsThePingsAndSettingsTheServerHasNotAcknowledged) {
  FrameGuard guard = Spoken();
  std::string pings = kPreface;
  for (int i = 0; i < 5; ++i) pings += Frame(kPing, 0, 0, std::string(8, 'p'));
  // The client's acknowledgement of a server PING answers none of its own.
  pings += Frame(kPing, 0x1, 0, std::string(8, 'a'));
  EXPECT_EQ(ReadInPieces(guard, pings, 7), "");
  EXPECT_EQ(guard.unacknowledged(), 5);
  // The server's acknowledgements, written in pieces; its own PING is no answer.
  std::string answers = Frame(kPing, 0x1, 0, std::string(8, 'p')) +
                        Frame(kPing, 0x1, 0, std::string(8, 'p')) +
                        Frame(kPing, 0, 0, std::string(8, 's'));
  for (size_t at = 0; at < answers.size(); at += 5) {
    guard.Wrote(absl::string_view(answers).substr(at, 5));
  }
  EXPECT_EQ(guard.unacknowledged(), 3);
  // More acknowledgements than PINGs (the count began mid-connection) leave none, not fewer.
  for (int i = 0; i < 5; ++i) guard.Wrote(Frame(kPing, 0x1, 0, std::string(8, 'p')));
  EXPECT_EQ(guard.unacknowledged(), 0);
  // SETTINGS frames are acknowledged the same way; the client's acknowledgement of the
  // server's SETTINGS, and the server's own SETTINGS, are not counted.
  EXPECT_EQ(guard.Read(Frame(kSettings, 0, 0, "") + Frame(kSettings, 0, 0, "") +
                           Frame(kSettings, 0x1, 0, ""),
                       kStart),
            "");
  EXPECT_EQ(guard.unacknowledged(), 2);
  guard.Wrote(Frame(kSettings, 0, 0, "") + Frame(kSettings, 0x1, 0, ""));
  EXPECT_EQ(guard.unacknowledged(), 1);
}

// The server's own buckets are larger: a deadline storm (100 calls of 20 ms deadlines: 5,000
// resets a second) is no flood.
TEST(FrameGuardTest, TheServersLimitsLeaveRoomForDeadlineStorms) {
  FrameGuard guard;
  guard.ServerSpoke();
  std::string start = std::string(kPreface) + Frame(kSettings, 0x1, 0);
  EXPECT_EQ(guard.Read(start, kStart), "");
  for (int second = 0; second < 5; ++second) {
    std::string storm;
    for (int i = 0; i < 5000; ++i) {
      const uint32_t stream = 1 + 2 * (second * 5000 + i);
      storm += Frame(kHeaders, 0x4, stream, "h") + Frame(kRstStream, 0, stream, "rst!");
    }
    EXPECT_EQ(guard.Read(storm, kStart + absl::Seconds(second)), "") << second;
  }
}

TEST(FrameGuardTest, SettingsAndResetFloodsCloseTheConnection) {
  FrameGuard settings(TestLimits());
  std::string frames = kPreface;
  for (int i = 0; i < 101; ++i) frames += Frame(kSettings, 0, 0);
  EXPECT_THAT(ReadInPieces(settings, frames, 64), HasSubstr("SETTINGS frames faster"));

  FrameGuard resets = Spoken();
  std::string rapid = std::string(kPreface) + Frame(kSettings, 0x1, 0);
  for (int i = 0; i < 1001; ++i) {
    rapid += Frame(kHeaders, 0x4, 1 + 2 * i, "h") + Frame(kRstStream, 0, 1 + 2 * i, "\0\0\0\x8");
  }
  EXPECT_THAT(ReadInPieces(resets, rapid, 512), HasSubstr("rapid reset"));
}

TEST(FrameGuardTest, AHeaderBlockThatNeverEndsIsCutAtItsLimit) {
  FrameGuard guard = Spoken();
  std::string block = std::string(kPreface) + Frame(kSettings, 0x1, 0) +
                      Frame(kHeaders, 0, 1, std::string(16000, 'h'));
  EXPECT_EQ(ReadInPieces(guard, block, 1000), "");
  std::string said;
  for (int i = 0; i < 70 && said.empty(); ++i) {
    said = guard.Read(Frame(kContinuation, 0, 1, std::string(16000, 'c')), kStart);
  }
  EXPECT_THAT(said, HasSubstr("a header block of more than 1048576 bytes"));
  // One that ends in time is no block at all for the next.
  FrameGuard ended = Spoken();
  std::string fine = std::string(kPreface) + Frame(kSettings, 0x1, 0);
  for (int i = 0; i < 200; ++i) {
    fine += Frame(kHeaders, 0, 1 + 2 * i, std::string(16000, 'h')) +
            Frame(kContinuation, 0x4, 1 + 2 * i, "end");
  }
  EXPECT_EQ(ReadInPieces(ended, fine, 4096), "");
}

// A DATA frame's payload is skipped, not read as frames: a message full of what look like PING
// headers is a message.
TEST(FrameGuardTest, PayloadsAreSkippedNotReadAsFrames) {
  std::string lookalikes;
  for (int i = 0; i < 5000; ++i) lookalikes += Frame(kPing, 0, 0, std::string(8, 'p'));
  FrameGuard guard = Spoken();
  EXPECT_EQ(ReadInPieces(guard, std::string(kPreface) + Frame(kSettings, 0x1, 0) +
                                    Frame(kHeaders, 0x4, 1, "h") +
                                    Frame(kData, 0, 1, lookalikes.substr(0, 16384)) +
                                    Frame(kData, 0x1, 1, lookalikes.substr(16384, 16384)),
                         333),
            "");
}

// Calls opened and never sent their requests cost gRPC 12-18 KB each and are never handed to
// cnp (a probe held 2.5 GB with 204,800 of them): the guard counts those awaiting, read from
// both sides of the connection, for guarded_connections.h to hold to a limit.
TEST(FrameGuardTest, CountsTheCallsAwaitingTheirRequests) {
  for (size_t piece : {1, 5, 4096}) {
    SCOPED_TRACE(piece);
    FrameGuard guard = Spoken();
    std::string client = std::string(kPreface) + Frame(kSettings, 0x1, 0) +
                         Frame(kHeaders, 0x4, 1, "h") + Frame(kHeaders, 0x4, 3, "h") +
                         Frame(kHeaders, 0x4, 5, "h") + Frame(kHeaders, 0x4, 7, "h") +
                         // A request without a message is whole with its headers.
                         Frame(kHeaders, 0x4 | 0x1, 9, "h") +
                         // Part of a message: still awaiting the rest.
                         Frame(kData, 0, 1, std::string(5, '\0'));
    EXPECT_EQ(ReadInPieces(guard, client, piece), "");
    EXPECT_EQ(guard.awaiting(), 4);
    // The rest of 1's request, and 3 reset by the client.
    EXPECT_EQ(ReadInPieces(guard, Frame(kData, 0x1, 1, "rest") + Frame(kRstStream, 0, 3, "rst!"),
                           piece),
              "");
    EXPECT_EQ(guard.awaiting(), 2);
    // The server answers 5 (its headers, a frame whose payload looks like frames between) and
    // resets 7; what it writes to 1 and 9, done already, changes nothing.
    const std::string lookalike =
        Frame(kSettings, 0, 0) + Frame(kData, 0, 1, Frame(kHeaders, 0x4, 7));
    for (size_t at = 0; at < lookalike.size(); at += piece) {
      guard.Wrote(absl::string_view(lookalike).substr(at, piece));
    }
    EXPECT_EQ(guard.awaiting(), 2);
    const std::string server = Frame(kHeaders, 0x4, 5, "h") +
                               Frame(kData, 0, 5, std::string(40, 'd')) +
                               Frame(kRstStream, 0, 7, "rst!") + Frame(kHeaders, 0x5, 9, "t");
    for (size_t at = 0; at < server.size(); at += piece) {
      guard.Wrote(absl::string_view(server).substr(at, piece));
    }
    EXPECT_EQ(guard.awaiting(), 0);
  }
}

TEST(FrameGuardTest, AClosedGuardSaysWhyToEveryRead) {
  FrameGuard guard = Spoken();
  EXPECT_EQ(guard.Read(std::string(kPreface) + Frame(kSettings, 0x1, 0), kStart), "");
  guard.Close("held too many calls");
  EXPECT_EQ(guard.Read(Frame(kPing, 0, 0, std::string(8, 'p')), kStart), "held too many calls");
  guard.Close("another reason");  // the first one stands
  EXPECT_EQ(guard.Read("", kStart), "held too many calls");
}

// Bytes that are not HTTP/2 (a TLS hello sent to a plaintext port, a stray HTTP/1 request) are
// gRPC's to refuse: the guard says nothing of them.
TEST(FrameGuardTest, BytesThatAreNotHttp2AreLeftToGrpc) {
  std::string http1 = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int i = 0; i < 2000; ++i) http1 += Frame(kPing, 0, 0, std::string(8, 'p'));
  FrameGuard guard(TestLimits());
  EXPECT_EQ(ReadInPieces(guard, http1, 50), "");
}

}  // namespace
}  // namespace cnp::http2_guard
