// Connections whose HTTP/2 a FrameGuard reads as gRPC reads it. gRPC 1.51 reads a connection
// with recvmsg(2) and writes it with sendmsg(2); this library defines both for the server's
// process, so that the bytes of a guarded connection pass its FrameGuard on the way to gRPC
// without a copy, a thread or a process between the client and gRPC (a proxy would add a hop
// to every call, and would hide the client's address from gRPC), and the guard knows when the
// server has sent its SETTINGS (only an acknowledgement after that is one). Once a connection
// passes a limit, the read fails ECONNRESET and the connection is shut down: gRPC closes it,
// the other connections go on.
//
// Only connections whose bytes are HTTP/2 in plaintext are guarded (unix sockets, TCP without
// TLS): under TLS gRPC reads ciphertext. Every other recvmsg and sendmsg of the process (the
// workers' sockets, fd passing) goes to the kernel after a lookup that finds nothing.
#pragma once

#include <functional>
#include <string>

#include "absl/strings/string_view.h"

namespace cnp::http2_guard {

// Told once, on gRPC's thread, why a guarded connection is closed.
using Closing = std::function<void(absl::string_view why)>;

// From now until the socket `fd` is closed, its reads pass a FrameGuard. A later socket that
// gets the same descriptor number is not guarded unless it is guarded anew (the socket's inode
// is checked; an entry found stale is dropped).
void GuardConnection(int fd, Closing closing);

}  // namespace cnp::http2_guard
