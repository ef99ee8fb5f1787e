// A minimal HTTP/1.1 server on loopback whose answers a test scripts, for CouchDB behaviour
// pouchdb-server does not have (an indexer in _active_tasks, odd status codes). Each connection
// is served on a thread of its own: an upload keeps one open (keep-alive), and a cancelled one
// cleans up on a second while the first is still open. The handler may be called from more
// than one thread, but only while more than one connection sends requests.
#pragma once

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace cnp::testing {

struct HttpRequest {
  std::string method;
  std::string target;  // path and query, as sent
  std::string body;
  std::string authorization;
};

struct ScriptedResponse {
  int status = 200;
  std::string body;
  // When set, `body` is followed by this many bytes of filler, sent chunked as they are made,
  // so that a test can send more than it holds in memory. Stops when the client hangs up.
  int64_t streamed_filler_bytes = 0;
  // When set, nothing is answered: the connection is closed once the request has been read,
  // as a server that applied a write and then went away.
  bool hang_up = false;
};

class ScriptedHttpServer {
 public:
  using Handler = std::function<ScriptedResponse(const HttpRequest&)>;

  explicit ScriptedHttpServer(Handler handler);
  ~ScriptedHttpServer();

  std::string url() const;
  // "METHOD target" of every request so far, in order.
  std::vector<std::string> requests() const;

 private:
  void Serve();
  void ServeConnection(int fd);

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  mutable absl::Mutex mu_;
  std::vector<std::string> requests_ ABSL_GUARDED_BY(mu_);
  // Connections being served, shut down by the destructor to end their threads.
  std::vector<int> connections_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> connection_threads_;  // only Serve's thread, then the destructor
};

// `handler`, with GET / answered as CouchDB 3.4.3 answers it: an Upload talks only to a server
// that says it is CouchDB (service/upload/uploader.cc). The GET / is still in requests().
ScriptedHttpServer::Handler AsCouchDB(ScriptedHttpServer::Handler handler);

}  // namespace cnp::testing
