#include "tests/support/scripted_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cnp::testing {
namespace {

bool WriteAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += n;
  }
  return true;
}

bool WriteChunked(int fd, const ScriptedResponse& response) {
  std::string head = absl::StrCat("HTTP/1.1 ", response.status, " Scripted\r\n",
                                  "Content-Type: application/json\r\n",
                                  "Transfer-Encoding: chunked\r\n\r\n");
  if (!response.body.empty()) {
    absl::StrAppend(&head, absl::Hex(response.body.size()), "\r\n", response.body, "\r\n");
  }
  if (!WriteAll(fd, head)) return false;
  const std::string filler(64 * 1024, 'x');
  for (int64_t left = response.streamed_filler_bytes; left > 0;) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(left, filler.size()));
    if (!WriteAll(fd, absl::StrCat(absl::Hex(n), "\r\n", absl::string_view(filler).substr(0, n),
                                   "\r\n"))) {
      return false;
    }
    left -= static_cast<int64_t>(n);
  }
  return WriteAll(fd, "0\r\n\r\n");
}

}  // namespace

ScriptedHttpServer::ScriptedHttpServer(Handler handler) : handler_(std::move(handler)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 8) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::abort();  // a test machine without loopback cannot run this test at all
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Serve(); });
}

ScriptedHttpServer::~ScriptedHttpServer() {
  ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
  thread_.join();
  {
    absl::MutexLock lock(&mu_);
    for (int fd : connections_) ::shutdown(fd, SHUT_RDWR);  // wakes their recv()
  }
  for (std::thread& connection : connection_threads_) connection.join();
  ::close(listen_fd_);
}

std::string ScriptedHttpServer::url() const { return absl::StrCat("http://127.0.0.1:", port_); }

std::vector<std::string> ScriptedHttpServer::requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

void ScriptedHttpServer::Serve() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    {
      absl::MutexLock lock(&mu_);
      connections_.push_back(fd);
    }
    connection_threads_.emplace_back([this, fd] {
      ServeConnection(fd);
      absl::MutexLock lock(&mu_);
      connections_.erase(std::find(connections_.begin(), connections_.end(), fd));
      ::close(fd);
    });
  }
}

void ScriptedHttpServer::ServeConnection(int fd) {
  std::string buffer;
  char chunk[4096];
  for (;;) {
    size_t header_end;
    while ((header_end = buffer.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n <= 0) return;
      buffer.append(chunk, n);
    }
    std::vector<std::string> lines = absl::StrSplit(buffer.substr(0, header_end), "\r\n");
    std::vector<std::string> request_line = absl::StrSplit(lines[0], ' ');
    HttpRequest request;
    request.method = request_line.size() > 0 ? request_line[0] : "";
    request.target = request_line.size() > 1 ? request_line[1] : "";
    size_t content_length = 0;
    for (size_t i = 1; i < lines.size(); ++i) {
      std::string lower = absl::AsciiStrToLower(lines[i]);
      if (absl::StartsWith(lower, "content-length:")) {
        (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(lower.substr(15)), &content_length);
      } else if (absl::StartsWith(lower, "authorization:")) {
        request.authorization = std::string(absl::StripAsciiWhitespace(lines[i].substr(14)));
      }
    }
    buffer.erase(0, header_end + 4);
    while (buffer.size() < content_length) {
      ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n <= 0) return;
      buffer.append(chunk, n);
    }
    request.body = buffer.substr(0, content_length);
    buffer.erase(0, content_length);
    {
      absl::MutexLock lock(&mu_);
      requests_.push_back(absl::StrCat(request.method, " ", request.target));
    }
    ScriptedResponse response = handler_(request);
    if (response.hang_up) return;
    if (response.streamed_filler_bytes > 0) {
      if (!WriteChunked(fd, response)) return;
      continue;
    }
    std::string reply = absl::StrCat("HTTP/1.1 ", response.status, " Scripted\r\n",
                                     "Content-Type: application/json\r\n",
                                     "Content-Length: ", response.body.size(), "\r\n\r\n",
                                     response.body);
    if (!WriteAll(fd, reply)) return;
  }
}

ScriptedHttpServer::Handler AsCouchDB(ScriptedHttpServer::Handler handler) {
  return [handler = std::move(handler)](const HttpRequest& request) -> ScriptedResponse {
    if (request.method == "GET" && request.target == "/") {
      return {200, R"({"couchdb":"Welcome","version":"3.4.3","vendor":{"name":"The Apache Software Foundation"}})"};
    }
    return handler(request);
  };
}

}  // namespace cnp::testing
