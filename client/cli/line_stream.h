// A stream that hands a file descriptor whole lines, each in one write(2). std::cerr writes each
// `<<` as it comes, so a long-running command's line ("cnp derive: towns: caught up") reached a
// reader that waits for it (a test, a log shipper, systemd's journal) in pieces: a reader that
// took the first piece for the line saw half of it. Text after the last newline waits for the
// next one, for flush(), or for the stream's end.
//
//   cli::LineStream err(STDERR_FILENO);
//   err << "cnp derive: " << name << ": caught up\n";   // one write
#pragma once

#include <ostream>
#include <streambuf>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace cnp::cli {

class LineBuffer : public std::streambuf {
 public:
  explicit LineBuffer(int fd) : fd_(fd) {}
  ~LineBuffer() override;

 protected:
  int_type overflow(int_type c) override;
  std::streamsize xsputn(const char* s, std::streamsize n) override;
  int sync() override;

 private:
  // Writes what `pending_` holds up to its last newline (everything, with `all`).
  void WriteOut(bool all) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int fd_;
  // Keeps each piece whole. Lines stay whole only when one thread writes them (cnp derive's
  // log: its main thread); another thread's line written meanwhile could land between the
  // pieces of one.
  absl::Mutex mu_;
  std::string pending_ ABSL_GUARDED_BY(mu_);
};

class LineStream : public std::ostream {
 public:
  explicit LineStream(int fd) : std::ostream(nullptr), buffer_(fd) { rdbuf(&buffer_); }

 private:
  LineBuffer buffer_;
};

// The process's stderr as a LineStream, for the commands of the cnp binary; tied to std::cout,
// as std::cerr is.
std::ostream& StderrLines();

}  // namespace cnp::cli
