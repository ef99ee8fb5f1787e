// The server's listening sockets, bound by cnp-server itself rather than by gRPC, so that it
// decides who gets in (connection_acceptor.h) and never loses its listener to a full
// descriptor table.
//
// A unix socket is created 0600 (0660 with a group) whatever the umask, in a directory that
// must be ours and writable by no one else; a socket file already there is removed only when
// nothing listens on it any more (checked without blocking), never when a server still does;
// servers take turns at that (socket_path_lock.h).
// An address systemd already bound and passed (inherited_sockets.h) is taken as it is. The
// gRPC listeners, the metrics listener and the direct-session socket (service/session) all
// listen through here, so these rules are written once.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "service/listen/listen_address.h"

namespace cnp::listen {

struct ListeningSocket {
  int fd = -1;
  std::string address;  // as configured: "unix:/run/cnp/cnp.sock", "127.0.0.1:7070", ...
  bool is_unix = false;
  std::string unix_path;
  dev_t unix_dev = 0;  // the socket file we created: only that one is ever removed
  ino_t unix_ino = 0;
  bool inherited = false;  // systemd bound it and passed it (its file is the unit's)
  int port = 0;          // TCP: the bound port (useful with port 0)
  bool loopback = true;  // TCP: every bound address is a loopback address
};

struct UnixSocketOptions {
  int gid = -1;  // >= 0: the socket is 0660 and a directory we create 0750, with this group
};

// Binds and listens on `address` ("unix:/path", "unix:///path", "host:port", "[v6]:port").
// A host name may bind several sockets (localhost: 127.0.0.1 and ::1), all on one port.
absl::StatusOr<std::vector<ListeningSocket>> OpenListeningSockets(const std::string& address,
                                                                  const UnixSocketOptions& unix);

// Binds and listens on each of `resolved`, the addresses a TCP `address` of `host` and `port`
// resolves to (ListenTcp's second half, apart for the tests). An address of a family this host
// lacks, or that it does not have, is left out; any other failure fails them all (and closes
// those bound): another process on one address's port would be reached by a client that
// resolves the name to that address. With port 0 each address takes the port the first got,
// and one where that port is taken is left out.
absl::StatusOr<std::vector<ListeningSocket>> ListenOnEach(const std::string& address,
                                                          const std::string& host, int port,
                                                          std::vector<PassiveAddress> resolved);

// The unix socket `path` (no scheme), as OpenListeningSockets opens a unix: address: the
// socket systemd passed for it, else one bound here. `address` names it in messages.
absl::StatusOr<ListeningSocket> OpenUnixListeningSocket(const std::string& address,
                                                        const std::string& path,
                                                        const UnixSocketOptions& unix);

// Creates the directory of the unix socket `path` as OpenUnixListeningSocket would (0700, or
// 0750 with a group), or checks the one there is ours and writable by no one else; what it
// says is what listening there would fail with. Called before the workers start, so that a
// directory to fix is a setting to fix (exit 2), not a start systemd retries every second.
absl::Status PrepareSocketDirectory(const std::string& path, const UnixSocketOptions& unix);

// Removes the socket file of a unix listener if it is still the one we created: not one
// systemd passed, nor one another server has put at the path since.
void RemoveOwnSocketFile(const ListeningSocket& socket);

// Whether a unix socket at `path` accepts connections, without blocking: a server whose
// backlog is full still counts as alive.
enum class SocketLiveness { kAbsent, kStale, kAlive, kUnknown };
SocketLiveness ProbeUnixSocket(const std::string& path, int* error);

}  // namespace cnp::listen
