// The line reader and writer of CouchDB's query-server pipes (common/couchdb/line_io.h), as
// cnp-adapter and a worker's direct session use them. CouchDB's side is a pipe fed from the
// reader's own before_waiting hook: one piece each time the reader is about to read, so which
// bytes each read() sees is fixed, with no thread and no sleep.
#include "common/couchdb/line_io.h"

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

// The most bytes allocated at once (malloc_usable_size) while `counting` is set, over what was
// allocated when it was set: what the reader's buffers take together.
namespace {
std::atomic<bool> counting{false};
std::atomic<int64_t> live_bytes{0};
std::atomic<int64_t> peak_live_bytes{0};
void Allocated(void* p) {
  if (p == nullptr || !counting.load(std::memory_order_relaxed)) return;
  const int64_t live = live_bytes.fetch_add(static_cast<int64_t>(malloc_usable_size(p))) +
                       static_cast<int64_t>(malloc_usable_size(p));
  int64_t peak = peak_live_bytes.load();
  while (live > peak && !peak_live_bytes.compare_exchange_weak(peak, live)) {
  }
}
void Freed(void* p) {
  if (p == nullptr || !counting.load(std::memory_order_relaxed)) return;
  live_bytes.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)));
}
}  // namespace

extern "C" {
void* __libc_malloc(size_t size);
void* __libc_realloc(void* p, size_t size);
void __libc_free(void* p);
void* malloc(size_t size) {
  void* p = __libc_malloc(size);
  Allocated(p);
  return p;
}
void* realloc(void* p, size_t size) {
  Freed(p);
  void* q = __libc_realloc(p, size);
  Allocated(q);
  return q;
}
void free(void* p) {
  Freed(p);
  __libc_free(p);
}
}  // extern "C"

namespace cnp::couchdb {
namespace {

using ::testing::HasSubstr;

// A pipe whose write end gets the next of `pieces` each time the reader is about to read (and is
// closed when they are all written), so that each read() sees one piece: the reader always asks
// for at least 32 KiB, so a piece of at most that is read whole and the pipe never fills.
class FedPipe {
 public:
  explicit FedPipe(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    read_end_ = fds[0];
    write_end_ = fds[1];
  }
  ~FedPipe() {
    ::close(read_end_);
    if (write_end_ >= 0) ::close(write_end_);
  }

  int read_end() const { return read_end_; }
  // How many times the reader was about to read.
  int waits() const { return waits_; }

  LineReader::BeforeWaiting Hook() {
    return [this](int fd) {
      EXPECT_EQ(fd, read_end_);
      ++waits_;
      if (next_ < pieces_.size()) {
        const std::string& piece = pieces_[next_++];
        ASSERT_LE(piece.size(), 32768u);
        EXPECT_EQ(::write(write_end_, piece.data(), piece.size()),
                  static_cast<ssize_t>(piece.size()));
      } else if (write_end_ >= 0) {
        ::close(write_end_);
        write_end_ = -1;
      }
    };
  }

 private:
  std::vector<std::string> pieces_;
  size_t next_ = 0;
  int read_end_ = -1;
  int write_end_ = -1;
  int waits_ = 0;
};

// `data` cut into pieces of `size` bytes.
std::vector<std::string> Pieces(const std::string& data, size_t size) {
  std::vector<std::string> pieces;
  for (size_t at = 0; at < data.size(); at += size) pieces.push_back(data.substr(at, size));
  return pieces;
}

// What Next() returned, as a line or as a Status, for EXPECT_EQ.
std::string Got(const absl::StatusOr<std::optional<std::string_view>>& next) {
  if (!next.ok()) return "status: " + next.status().ToString();
  if (!next->has_value()) return "end";
  return std::string(**next);
}

TEST(LineReaderTest, ALineSplitAcrossReadsIsJoined) {
  FedPipe couchdb({"[\"re", "set\"]\n[\"map", "_doc\",{}", "]\n"});
  LineReader reader(couchdb.read_end(), kDefaultMaxLineBytes, couchdb.Hook());
  EXPECT_EQ(Got(reader.Next()), "[\"reset\"]");
  EXPECT_EQ(couchdb.waits(), 2);
  EXPECT_EQ(Got(reader.Next()), "[\"map_doc\",{}]");
  EXPECT_EQ(couchdb.waits(), 4);
  EXPECT_EQ(Got(reader.Next()), "end");
  EXPECT_EQ(Got(reader.Next()), "end");
}

TEST(LineReaderTest, ABurstOfLinesCostsOneRead) {
  FedPipe couchdb({"[\"reset\"]\n[\"add_fun\",\"m.f\"]\n\n[\"map_doc\",{}]\n"});
  LineReader reader(couchdb.read_end(), kDefaultMaxLineBytes, couchdb.Hook());
  EXPECT_EQ(Got(reader.Next()), "[\"reset\"]");
  EXPECT_EQ(Got(reader.Next()), "[\"add_fun\",\"m.f\"]");
  EXPECT_EQ(Got(reader.Next()), "");
  EXPECT_EQ(Got(reader.Next()), "[\"map_doc\",{}]");
  // Every line came from the one read; the hook ran before it only.
  EXPECT_EQ(couchdb.waits(), 1);
  EXPECT_EQ(Got(reader.Next()), "end");
  EXPECT_EQ(couchdb.waits(), 2);
}

TEST(LineReaderTest, TheHookRunsOnlyBeforeAReadThatMayBlock) {
  // The second piece ends in the middle of a line: what is buffered then answers nothing, so
  // the reader is about to wait although bytes are buffered.
  FedPipe couchdb({"a\nb\n", "c\nd", "\n"});
  LineReader reader(couchdb.read_end(), kDefaultMaxLineBytes, couchdb.Hook());
  std::vector<int> waits_before_each;
  for (const char* line : {"a", "b", "c", "d"}) {
    EXPECT_EQ(Got(reader.Next()), line);
    waits_before_each.push_back(couchdb.waits());
  }
  EXPECT_EQ(waits_before_each, (std::vector<int>{1, 1, 2, 3}));
}

TEST(LineReaderTest, ALastLineWithoutItsNewlineIsALine) {
  FedPipe couchdb({"[\"reset\"]\n[\"map_doc\",{\"_id\":\"cu"});
  LineReader reader(couchdb.read_end(), kDefaultMaxLineBytes, couchdb.Hook());
  EXPECT_EQ(Got(reader.Next()), "[\"reset\"]");
  // Answered like any other line (a reply nobody reads is harmless; silence is not).
  EXPECT_EQ(Got(reader.Next()), "[\"map_doc\",{\"_id\":\"cu");
  EXPECT_EQ(Got(reader.Next()), "end");
  EXPECT_EQ(Got(reader.Next()), "end");
}

TEST(LineReaderTest, EmptyInputIsTheEnd) {
  FedPipe couchdb({});
  LineReader reader(couchdb.read_end(), kDefaultMaxLineBytes, couchdb.Hook());
  EXPECT_EQ(Got(reader.Next()), "end");
}

TEST(LineReaderTest, LinesLongerThanTheBufferAreKeptWhole) {
  const std::string huge(3 << 20, 'h');
  FedPipe couchdb(Pieces("[\"reset\"]\n" + huge + "\n\n[\"map_doc\",{}]\n", 30000));
  LineReader reader(couchdb.read_end(), kDefaultMaxLineBytes, couchdb.Hook());
  EXPECT_EQ(Got(reader.Next()), "[\"reset\"]");
  EXPECT_EQ(Got(reader.Next()), huge);
  EXPECT_EQ(Got(reader.Next()), "");
  EXPECT_EQ(Got(reader.Next()), "[\"map_doc\",{}]");
  EXPECT_EQ(Got(reader.Next()), "end");
}

TEST(LineReaderTest, ALineOverTheLimitIsDroppedAndTheNextOneRead) {
  const std::string long_line = "[\"map_doc\",\"" + std::string(1 << 20, 'x') + "\"]";
  // Over the limit in one read (whole, with its newline) and across many (dropped as it comes).
  const std::string short_long = "[\"map_doc\",\"" + std::string(100, 'y') + "\"]";
  FedPipe couchdb(Pieces("[\"reset\"]\n" + long_line + "\n[\"map_doc\",{}]\n" + short_long +
                             "\n[\"reset\"]\n",
                         30000));
  LineReader reader(couchdb.read_end(), 100, couchdb.Hook());
  EXPECT_EQ(Got(reader.Next()), "[\"reset\"]");
  absl::StatusOr<std::optional<std::string_view>> next = reader.Next();
  EXPECT_EQ(next.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(next.status().message(), HasSubstr("a line from CouchDB was longer than 100 bytes"));
  EXPECT_EQ(Got(reader.Next()), "[\"map_doc\",{}]");
  EXPECT_EQ(reader.Next().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Got(reader.Next()), "[\"reset\"]");
  EXPECT_EQ(Got(reader.Next()), "end");
}

TEST(LineReaderTest, AnOverLongLineKeepsItsFirstBytes) {
  const std::string list_row = "[\"list_row\",{\"key\":\"" + std::string(1 << 20, 'k') + "\"}]";
  const std::string in_one_read = "[\"map_doc\",{\"_id\":\"" + std::string(500, 'i') + "\"}]";
  FedPipe couchdb(Pieces(list_row + "\n" + in_one_read + "\n" + list_row, 30000));
  LineReader reader(couchdb.read_end(), 300, couchdb.Hook());
  // Dropped across reads, whose start is gone from the buffer by its end.
  EXPECT_EQ(reader.Next().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reader.dropped_start(), list_row.substr(0, kKeptOfLongLine));
  // Whole in the buffer.
  EXPECT_EQ(reader.Next().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reader.dropped_start(), in_one_read.substr(0, kKeptOfLongLine));
  // Cut off by the end of input.
  EXPECT_EQ(reader.Next().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reader.dropped_start(), list_row.substr(0, kKeptOfLongLine));
  EXPECT_EQ(Got(reader.Next()), "end");
}

// README: the adapter holds at most about one line of --max-line-bytes. A line without its
// newline grew the buffer to the limit and then, a read later, to the limit and a read's room,
// copying a whole line into a second buffer (and a std::string doubled its capacity and
// zero-filled it): a 300 MB line held 145 MB at the default 64 MiB limit. Now the buffer
// being replaced is at most half the new one (of which only the copy is written before reads
// fill it), so the allocations held at once stay under one and a half lines.
TEST(LineReaderTest, ALineWithoutItsNewlineHoldsNoMoreThanOneLineAndAHalf) {
  constexpr int64_t kLimit = 1 << 20;
  FedPipe couchdb(Pieces(std::string(4 * kLimit, 'x'), 30000));
  LineReader reader(couchdb.read_end(), kLimit, couchdb.Hook());
  live_bytes = 0;
  peak_live_bytes = 0;
  counting = true;
  const absl::Status status = reader.Next().status();
  counting = false;
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_LE(peak_live_bytes.load(), kLimit + kLimit / 2 + 2 * 64 * 1024);
  EXPECT_GT(peak_live_bytes.load(), kLimit);  // the buffer was counted
}

TEST(LineReaderTest, ALineOfExactlyTheLimitIsKept) {
  const std::string line(1000, 'a');
  FedPipe couchdb({line + "\n" + line + "b\n" + line});
  LineReader reader(couchdb.read_end(), 1000, couchdb.Hook());
  EXPECT_EQ(Got(reader.Next()), line);
  EXPECT_EQ(reader.Next().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reader.dropped_start(), line.substr(0, kKeptOfLongLine));
  EXPECT_EQ(Got(reader.Next()), line);
  EXPECT_EQ(Got(reader.Next()), "end");
}

TEST(LineReaderTest, AFailedReadIsUnavailableAndSaysSo) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  // A pipe's write end cannot be read: read() fails with EBADF.
  LineReader reader(fds[1]);
  absl::StatusOr<std::optional<std::string_view>> next = reader.Next();
  EXPECT_EQ(next.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(next.status().message(), HasSubstr("reading from CouchDB failed: "));
  EXPECT_THAT(next.status().message(), HasSubstr(std::strerror(EBADF)));
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(WriteAllTest, WritesEverything) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_TRUE(WriteAll(fds[1], "true\n").ok());
  ::close(fds[1]);
  char buffer[16] = {};
  EXPECT_EQ(::read(fds[0], buffer, sizeof(buffer)), 5);
  EXPECT_STREQ(buffer, "true\n");
  ::close(fds[0]);
}

TEST(WriteAllTest, AFailedWriteIsUnavailableAndSaysSo) {
  const absl::Status failed = WriteAll(-1, "x");
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(failed.message(), HasSubstr("writing to CouchDB failed: "));
}

}  // namespace
}  // namespace cnp::couchdb
