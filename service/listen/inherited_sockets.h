// Listening sockets a service manager bound for us and passed at exec: systemd's socket
// activation (sd_listen_fds(3)), so that clients can connect - and wait - before cnp-server has
// started, and the sockets outlive a restart.
//
// cnp-server keeps its configuration as it is: a passed socket is matched to a --listen
// address (a unix path; a TCP address and port, or a port alone for a host name or wildcard)
// or to a direct-session path P.direct, and used instead of binding that address. A passed socket that no address claims is an error at start-up: its
// clients would wait for ever.
#pragma once

#include <sys/socket.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cnp::listen {

// Takes the descriptors passed through LISTEN_FDS/LISTEN_PID, once, before any thread or
// worker starts: the variables are removed from the environment and the descriptors marked
// close-on-exec, so that workers neither see nor inherit them.
void AdoptInheritedSockets();

// The passed socket listening on the unix socket `path`, made non-blocking, or -1. Each is
// handed out once.
int TakeInheritedUnixSocket(const std::string& path);
// Whether systemd passed a listening unix socket bound to `path`, taking nothing.
bool IsInheritedUnixSocket(const std::string& path);
// The passed TCP sockets a --listen of `host` and `port` names, made non-blocking: for an IP
// address (127.0.0.1, ::1), the one bound to that address and port; for a name or a wildcard
// (localhost, 0.0.0.0, ::, none), every one on that port.
std::vector<int> TakeInheritedTcpSockets(int port, const std::string& host);
// The addresses those sockets are bound to, leaving them to be taken: the configuration checks
// what systemd bound before anything starts.
std::vector<sockaddr_storage> InheritedTcpSocketAddresses(int port, const std::string& host);

// Fails, naming them, if passed sockets remain that no address took (and closes them).
absl::Status CheckEveryInheritedSocketTaken();

// Before anything starts: fails, naming them, if passed sockets remain that none of these
// addresses would take (unix socket paths; TCP ports and hosts, as TakeInheritedTcpSockets
// reads them). Takes nothing and closes nothing. A setting to fix (the listen addresses or the
// .socket unit), found before the workers start rather than after.
struct TcpListen {
  int port = 0;
  std::string host;
};
absl::Status CheckInheritedSocketsNamed(const std::vector<std::string>& unix_paths,
                                        const std::vector<TcpListen>& tcp);

}  // namespace cnp::listen
