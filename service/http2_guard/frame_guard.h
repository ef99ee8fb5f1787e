// What a client's HTTP/2 may do before cnp-server's gRPC (Debian's 1.51) is asked to handle it.
// gRPC 1.51 has holes a client can open without ever making a call, so no token check or
// memory budget sees them (README "gRPC 1.51's known holes"):
// - it enforces MAX_CONCURRENT_STREAMS only once the client has acknowledged the server's
//   SETTINGS: a client that never does opened 20,000 streams on one connection (236 MB);
// - each PING costs it about 17 times its bytes until answered: 100 MB of PINGs took a server
//   to 1.7 GB;
// - HEADERS then RST_STREAM over and over ("rapid reset", CVE-2023-44487), and a header block
//   that never ends (CONTINUATION frames, CVE-2023-33953);
// - a call is handed to cnp (and so to the token check and the memory budget) only once its
//   request has come whole: calls opened and never sent their request cost gRPC 12-18 KB each,
//   100 a connection, held for as long as the client likes (2,048 connections: 2.5 GB). The
//   guard counts such calls, "awaiting" ones, and the server's guarded connections together
//   (guarded_connections.h) are held to a limit.
// The guard reads the frames' 9-byte headers as gRPC reads the bytes (guarded_connections.h), never
// their payloads, and says when a connection has passed a limit no gRPC client comes near, so
// that it is closed there.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace cnp::http2_guard {

struct FrameLimits {
  // Streams a client may open before it acknowledges the server's SETTINGS (after that, gRPC's
  // own MAX_CONCURRENT_STREAMS holds): the server's limit itself.
  int streams_before_settings_ack = 100;
  // Frames of each kind a client may send at once, and then per second: a token bucket each.
  // gRPC's clients send a PING per keepalive interval or bandwidth probe (one outstanding at
  // a time), a SETTINGS frame at the start, and a RST_STREAM per call cancelled or past its
  // deadline (100 calls of 20 ms deadlines: 5,000 a second). The floods they stop send
  // hundreds of thousands. PINGs are held tighter: gRPC 1.51 takes 2 to 4 KB for each until
  // it has answered it (20 connections of 10,000 PINGs: 738 MB).
  int ping_burst = 1000, pings_per_second = 1000;
  int settings_burst = 100, settings_per_second = 10;
  int reset_burst = 10'000, resets_per_second = 10'000;
  // The bytes of one header block (HEADERS and its CONTINUATION frames): gRPC's own metadata
  // limit is 8 KiB by default, a request's headers are a few hundred bytes.
  int64_t max_header_block_bytes = 1 << 20;
};

class FrameGuard {
 public:
  explicit FrameGuard(FrameLimits limits = {}) : limits_(limits) {}

  // Reads the next `bytes` the client sent, at `now`. Empty while the client keeps to the
  // limits; once it has not, why (and every later call says it again).
  std::string Read(absl::string_view bytes, absl::Time now);

  // The server has written to the connection: its SETTINGS come first, so an acknowledgement
  // read from now on is of them. One read before is not: gRPC 1.51 takes an acknowledgement
  // that comes before it sent its SETTINGS for one of the defaults, unlimited streams
  // included, and never enforces its own limit on that connection.
  void ServerSpoke() { server_spoke_ = true; }

  // Reads the next `bytes` the server wrote: a call it answers (headers or a reset) no longer
  // awaits its request.
  void Wrote(absl::string_view bytes);

  // Calls the client opened whose request has not come whole (the client has not ended its
  // side) and that the server has neither answered nor reset, nor the client reset.
  int awaiting() const { return static_cast<int>(awaiting_.size()); }

  // PING and SETTINGS frames the client sent that the server has not acknowledged yet: gRPC
  // holds 2 to 4 KB for each PING until it has (and queues each acknowledgement as it does a
  // PING's). A gRPC client waits for a PING's answer before it sends the next, and sends one
  // SETTINGS frame at the start.
  int unacknowledged() const { return unacknowledged_; }

  // From now on every Read says `why`: the connection is closed for the server's sake.
  void Close(std::string why) {
    if (broken_.empty()) broken_ = std::move(why);
  }

 private:
  class Bucket {
   public:
    Bucket(int burst, int per_second) : burst_(burst), per_second_(per_second), tokens_(burst) {}
    // Takes a token; false when none is left.
    bool Take(absl::Time now);

   private:
    int burst_, per_second_;
    double tokens_;
    absl::Time refilled_ = absl::InfinitePast();
  };

  // Frame headers are read 9 bytes at a time, across reads and writes as they split them;
  // `payload_left` skips what follows each.
  struct FrameReader {
    // Calls `frame` for each whole frame header in `bytes`.
    template <typename OnFrame>
    void Read(absl::string_view bytes, OnFrame frame);

    unsigned char header[9] = {};
    size_t header_read = 0;
    uint64_t payload_left = 0;
  };

  void ClientFrame(const unsigned char* header, absl::Time now);
  void ServerFrame(const unsigned char* header);

  FrameLimits limits_;
  std::string broken_;            // why the connection passed a limit, once it has
  size_t preface_left_ = 24;      // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", not a frame
  bool not_http2_ = false;        // the preface was wrong: gRPC closes the connection
  FrameReader client_, server_;
  bool server_spoke_ = false;
  bool settings_acked_ = false;
  int streams_before_ack_ = 0;
  uint32_t last_stream_ = 0;      // the highest stream a HEADERS frame opened
  bool in_header_block_ = false;  // a HEADERS frame without END_HEADERS was read
  int64_t header_block_bytes_ = 0;
  absl::flat_hash_set<uint32_t> awaiting_;
  int unacknowledged_ = 0;
  Bucket pings_{limits_.ping_burst, limits_.pings_per_second};
  Bucket settings_{limits_.settings_burst, limits_.settings_per_second};
  Bucket resets_{limits_.reset_burst, limits_.resets_per_second};
};

}  // namespace cnp::http2_guard
