// What a client's --target may name, and the gRPC target URI it becomes: one server, or several
// replicas the client balances over itself (gRPC's round_robin, set by service_config.h).
//
//   unix:/run/cnp/cnp.sock               one server on this host
//   10.0.0.5:7070, [::1]:7070, host:7070 one server (or a load balancer such as nginx)
//   10.0.0.5:7070,10.0.0.6:7070          replicas: every address, round robin
//   dns:///cnp.internal:7070             replicas: every address the name resolves to, round robin
//   ipv4:..., ipv6:...                   gRPC's own address lists, passed as they are
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace cnp::client {

// The URI to hand gRPC for `target`. A comma-separated list must hold IP addresses with ports,
// all of one family (gRPC's ipv4:/ipv6: lists take no names); INVALID_ARGUMENT, saying what to
// write instead, otherwise. `rotate` starts the list at its (rotate % size)th address: a fresh
// channel's first call goes to whichever address connects first, usually the list's first, so
// clients that open a channel for one long stream (the adapter) pass a random number to spread
// over the replicas.
absl::StatusOr<std::string> ChannelTargetUri(absl::string_view target, size_t rotate = 0);

// INVALID_ARGUMENT when `target` is a file path without unix: ("/run/cnp/cnp.sock"), which gRPC
// would read as a host name: the plaintext refusal that followed advised --insecure, and then
// "no cnp-server answers" advised a --listen the server refuses. Checked first by
// ChannelTargetUri, CheckTlsTarget and LoadChannelSecurity.
absl::Status CheckNotABarePath(absl::string_view target);

// Whether `target` may name several replicas: a list of addresses, or a dns:/// name (however
// many addresses it resolves to today). Their channels watch each replica's health
// (service_config.h); a target of one server does not, as there is nowhere else to go.
bool NamesReplicas(absl::string_view target);

// Whether everything `target` names is on this host, where what a client sends in plaintext is
// read by no one on the way: a unix socket, or TCP hosts that are all loopback by the rule
// cnp-server's plaintext listeners follow (common/loopback.h: 127.0.0.0/8, ::1,
// ::ffff:127.x.x.x, or the name localhost). Any other name is not: what it resolves to when gRPC
// connects is not ours to know.
bool TargetStaysOnThisHost(absl::string_view target);

}  // namespace cnp::client
