// The ceiling for any query server in adapter_lockstep_bench: one process that answers CouchDB's
// lines with the least work possible, no JSON parsed and no Python run. A map_doc line is
// answered with the document's "town" and "n" copied out by a string search (the bench's map
// function emits exactly those); reset and add_fun with true; a reduce line with a constant.
// Whatever it costs per line is the pipe round trip itself: no real server can beat it here.
// (A benchmark tool, never a query server: it knows only the bench's documents.)
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

namespace {

bool WriteAll(const std::string& out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(STDOUT_FILENO, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// The raw JSON text of `"key":VALUE` in `line` (a string with its quotes, or a number).
std::string_view ValueOf(std::string_view line, std::string_view key) {
  const size_t at = line.find(key);
  if (at == std::string_view::npos) return "null";
  size_t begin = at + key.size();
  size_t end = begin;
  if (line[begin] == '"') {
    end = line.find('"', begin + 1) + 1;
  } else {
    while (end < line.size() && line[end] != ',' && line[end] != '}') ++end;
  }
  return line.substr(begin, end - begin);
}

std::string Answer(std::string_view line) {
  if (line.starts_with("[\"map_doc\"")) {
    std::string out = "[[[";
    out += ValueOf(line, "\"town\":");
    out += ',';
    out += ValueOf(line, "\"n\":");
    out += "]]]\n";
    return out;
  }
  if (line.starts_with("[\"reduce\"")) return "[true,[0]]\n";
  return "true\n";
}

}  // namespace

int main() {
  std::string buffer;
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    buffer.append(chunk, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t end; (end = buffer.find('\n', start)) != std::string::npos; start = end + 1) {
      if (!WriteAll(Answer(std::string_view(buffer).substr(start, end - start)))) return 1;
    }
    buffer.erase(0, start);
  }
}
