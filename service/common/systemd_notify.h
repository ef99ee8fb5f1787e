// Tells the service manager how cnp-server stands (systemd's notify protocol, sd_notify(3)):
// READY=1 once it listens and its workers have started, STOPPING=1 when it begins to stop, and
// EXTEND_TIMEOUT_USEC while its workers start. The packaged unit is Type=notify, so systemd
// counts the service as started only at READY=1: a `systemctl reload` (SIGHUP) waits for it
// instead of reaching a process still loading its libraries, whose default action for SIGHUP
// is to die (killed by the signal, which Restart=on-failure takes for a clean stop: an
// operator probe left the service down so), and units ordered after cnp-server start once it
// answers.
//
// libsystemd's sd_notify reads NOTIFY_SOCKET at each call, so the variable would have to stay
// in the environment the workers and what their functions start inherit (systemd ignores
// their datagrams under the default NotifyAccess=main; the variable is no business of theirs
// all the same). The address is taken from the environment once, before any thread or worker
// starts, and the datagram sent here.
#pragma once

#include <string>
#include <string_view>

namespace cnp {

class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET and removes it from the environment. Call once, first thing in main.
  static SystemdNotifier TakeFromEnvironment();

  // Sends `state` ("READY=1"); does nothing without a NOTIFY_SOCKET. A failure is logged (a
  // warning) and is not fatal: systemd's start timeout says the rest.
  void Notify(std::string_view state) const;

  bool enabled() const { return !address_.empty(); }

 private:
  explicit SystemdNotifier(std::string address) : address_(std::move(address)) {}
  std::string address_;  // a path, or "@name" for an abstract socket; empty: not under systemd
};

}  // namespace cnp
