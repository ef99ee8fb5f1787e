#include "tests/support/metrics_scrape.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace cnp::testing {

int MetricsPort(const ServerProcess& server) {
  const std::string log = server.Log();
  const size_t at = log.find("/metrics (port ");
  if (at == std::string::npos) return -1;
  int port = -1;
  const size_t digits = at + std::string("/metrics (port ").size();
  if (!absl::SimpleAtoi(log.substr(digits, log.find(')', digits) - digits), &port)) return -1;
  return port;
}

std::string Http(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "connect failed";
  }
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  char buffer[65536];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) response.append(buffer, n);
  ::close(fd);
  return response;
}

std::string Scrape(int port) { return Http(port, "GET /metrics HTTP/1.0\r\n\r\n"); }

double Value(const std::string& scrape, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double value = -1;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) return value;
    }
  }
  return -1;
}

}  // namespace cnp::testing
