// Whether an address is this host's loopback interface, where what is sent in plaintext is read
// by no one on the way. One rule for cnp-server's plaintext listeners, the clients' choice to
// send a token without TLS, and the CouchDB servers an Upload may reach without --couchdb-allow.
//
// Loopback is 127.0.0.0/8, ::1, and ::ffff:127.0.0.0/104 (IPv4-mapped: a dual-stack socket that
// connects to it reaches 127.x). Numbers are read with inet_pton, never compared as text:
// "127.0.0.1.evil.com" is a name, "::ffff:10.0.0.1" is 10.0.0.1. 0.0.0.0 and :: are not
// loopback (listening on them is listening everywhere).
//
// Of the names, only "localhost" (any case) is trusted: RFC 6761 reserves it, and every resolver
// cnp uses answers it from /etc/hosts (glibc, gRPC) or by itself (libcurl) without asking DNS.
// Any other name, "localhost." included (an absolute DNS name, which glibc does not find in
// /etc/hosts and sends to DNS), is not: what it resolves to is decided by whoever answers for it
// when the connection is made, and can change after this check.
#pragma once

#include <sys/socket.h>

#include "absl/strings/string_view.h"

namespace cnp {

// `host` as a URL or a gRPC target writes it, without the port: "localhost", "127.0.0.1",
// "[::1]" (or "::1"). A bracketed host must be an IPv6 address, as in a URL.
bool IsLoopbackHost(absl::string_view host);

// A socket address (AF_INET or AF_INET6; any other family is not loopback).
bool IsLoopbackAddress(const sockaddr* address);

}  // namespace cnp
