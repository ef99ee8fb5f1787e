// Connections whose HTTP/2 a FrameGuard reads as gRPC reads it. gRPC 1.51 reads a connection
// with recvmsg(2) and writes it with sendmsg(2); this library defines both for the server's
// process (and close(2), so that a connection's entry leaves with its descriptor number), so
// that the bytes of a guarded connection pass its FrameGuard on the way to gRPC without a
// copy, a thread or a process between the client and gRPC (a proxy would add a hop to every
// call, and would hide the client's address from gRPC), and the guard reads what the server
// writes (its SETTINGS: only an acknowledgement after them is one; its answers). Once a connection
// passes a limit, the read fails ECONNRESET and the connection is shut down: gRPC closes it,
// the other connections go on.
//
// The connections together are held to a count of calls opened and never sent their requests
// (SetAwaitingCallLimit): gRPC hands cnp a unary call only once its request has come whole,
// so until then no token check or memory budget sees it; and to a count of PING and SETTINGS
// frames not yet acknowledged (SetUnacknowledgedLimit).
//
// Only connections whose bytes are HTTP/2 in plaintext are guarded (unix sockets, TCP without
// TLS): under TLS gRPC reads ciphertext. Every other recvmsg and sendmsg of the process (the
// workers' sockets, fd passing) goes to the kernel after a lookup that finds nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/strings/string_view.h"

namespace cnp::http2_guard {

// Told once why a guarded connection is closed: on the gRPC thread that read it, or on another
// connection's, whose call took the connections past their limit of awaiting calls.
using Closing = std::function<void(absl::string_view why)>;

// From now until the socket `fd` is closed, its reads pass a FrameGuard. A later socket that
// gets the same descriptor number is not guarded unless it is guarded anew (the socket's inode
// is checked; an entry found stale is dropped).
void GuardConnection(int fd, Closing closing);

// Calls awaiting their requests (FrameGuard::awaiting) on all guarded connections together.
// A call that takes them past it has the connection holding the most closed (the one that
// opened it, if none holds more), if that is two or more: one connection's 100 calls cost
// gRPC up to 1.8 MB, and the connections a host's clients may open are many (each address of
// 127.0.0.0/8 is a peer of its own). Well-behaved clients hold one or none each: a unary call
// awaits while its request is being sent, a stream call until its first answer.
inline constexpr int64_t kDefaultAwaitingLimit = 4096;
void SetAwaitingCallLimit(int64_t limit);

// PING and SETTINGS frames not yet acknowledged (FrameGuard::unacknowledged) on all guarded
// connections together, held as awaiting calls are: each connection may send a burst of them
// (FrameLimits), and gRPC holds 2 to 4 KB for each PING until answered, so a thousand
// connections' bursts took a server to 2.4 GB and stalled its calls (a red-team probe). A
// gRPC client has one PING at a time, and one SETTINGS at its start.
inline constexpr int64_t kDefaultUnacknowledgedLimit = 16384;
void SetUnacknowledgedLimit(int64_t limit);

}  // namespace cnp::http2_guard
