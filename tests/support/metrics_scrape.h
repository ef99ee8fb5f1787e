// A cnp-server's /metrics, read as a test reads it: the port the server logged for
// --metrics-listen=127.0.0.1:0, an HTTP/1.0 exchange over loopback with a plain socket, and one
// series' value.
#pragma once

#include <string>

#include "tests/support/server_process.h"

namespace cnp::testing {

// The port `server` logged for --metrics-listen=127.0.0.1:0 (it logs it before "ready"), or -1.
int MetricsPort(const ServerProcess& server);

// A whole HTTP/1.0 exchange with 127.0.0.1:`port`: the server closes the connection after its
// answer, which is returned whole ("connect failed" when there was none).
std::string Http(int port, const std::string& request);

// GET /metrics.
std::string Scrape(int port);

// The value of one series (`name{labels}` as the scrape writes it) in a scrape, or -1 when the
// scrape does not have it.
double Value(const std::string& scrape, const std::string& series);

}  // namespace cnp::testing
