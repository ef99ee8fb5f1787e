// Where cnp-server listens when nobody says otherwise, shared by cnp-server, cnp-adapter and cnp.
#pragma once

#include <string>

namespace cnp {

// $CNP_TARGET if set; otherwise the host's default unix socket, "unix:/tmp/cnp-<uid>/cnp.sock",
// one per user so that every CouchDB query-server process of that user shares one service.
std::string DefaultTarget();

// The directory holding the default socket, its lock and the log of a service started on
// demand: "/tmp/cnp-<uid>".
std::string DefaultRuntimeDir();

}  // namespace cnp
