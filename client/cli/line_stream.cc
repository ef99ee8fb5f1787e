#include "client/cli/line_stream.h"

#include <unistd.h>

#include <cerrno>
#include <iostream>

namespace cnp::cli {

LineBuffer::~LineBuffer() {
  absl::MutexLock lock(&mu_);
  WriteOut(/*all=*/true);
}

LineBuffer::int_type LineBuffer::overflow(int_type c) {
  if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
  const char ch = traits_type::to_char_type(c);
  xsputn(&ch, 1);
  return c;
}

std::streamsize LineBuffer::xsputn(const char* s, std::streamsize n) {
  absl::MutexLock lock(&mu_);
  pending_.append(s, static_cast<size_t>(n));
  if (pending_.find('\n', pending_.size() - static_cast<size_t>(n)) != std::string::npos) {
    WriteOut(/*all=*/false);
  }
  return n;
}

int LineBuffer::sync() {
  absl::MutexLock lock(&mu_);
  WriteOut(/*all=*/true);
  return 0;
}

void LineBuffer::WriteOut(bool all) {
  const size_t end = all ? pending_.size() : pending_.rfind('\n') + 1;
  size_t done = 0;
  while (done < end) {
    const ssize_t n = ::write(fd_, pending_.data() + done, end - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // stderr closed or full: what it cannot take is dropped, as cerr would
    done += static_cast<size_t>(n);
  }
  pending_.erase(0, end);
}

std::ostream& StderrLines() {
  // Never destroyed: commands may log until exit (every line they write ends in a newline).
  static auto* const err = [] {
    auto* stream = new LineStream(STDERR_FILENO);
    // As std::cerr is: what stdout holds goes out first, so that with 2>&1 the lines keep
    // the order they were written in.
    stream->tie(&std::cout);
    return stream;
  }();
  return *err;
}

}  // namespace cnp::cli
