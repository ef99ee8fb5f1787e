// pouchdb-server, a CouchDB-compatible HTTP server, run by a test on a loopback port and
// stopped with it. It serves CouchDB's document API; it cannot run a query server, so view
// queries on databases with documents do not work (upload tests need none).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/support/child_process.h"

namespace cnp::testing {

class PouchDbServer {
 public:
  // Starts it and returns once it accepts requests. The server is found through
  // $CNP_POUCHDB_SERVER or else in tests/upload/node_modules (install_pouchdb_server.sh).
  static absl::StatusOr<std::unique_ptr<PouchDbServer>> Start();
  ~PouchDbServer();

  std::string url() const;  // "http://127.0.0.1:<port>"
  int port() const { return port_; }
  // Everything it printed so far (its request log).
  std::string output() const { return process_->output(); }
  // Waits until its output contains `text` (it logs a request after answering it, so a test
  // that wants the log of its requests sends a marker request and waits for it).
  bool WaitForOutput(const std::string& text, absl::Duration timeout) {
    return process_->WaitForOutput(text, timeout);
  }

 private:
  PouchDbServer() = default;

  int port_ = 0;
  std::string work_dir_;
  std::unique_ptr<ChildProcess> process_;
};

// A TCP port on 127.0.0.1 that nothing listens on right now.
int UnusedLoopbackPort();

}  // namespace cnp::testing
