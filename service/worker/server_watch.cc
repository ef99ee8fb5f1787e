#include "service/worker/server_watch.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "service/worker/protocol/server_gone_signal.h"

namespace cnp::worker {
namespace {

// A worker the server started leads its process group; one started otherwise (by hand, by a
// test) kills only itself, not the group of whoever started it. A process a function put in a
// group or session of its own has left on purpose. Async-signal-safe.
void KillOwnProcessGroup() {
  const pid_t self = ::getpid();
  ::kill(::getpgrp() == self ? 0 : self, SIGKILL);
}

void OnServerGone(int) { KillOwnProcessGroup(); }

void* WatchServer(void* pidfd) {
  pollfd server{.fd = static_cast<int>(reinterpret_cast<intptr_t>(pidfd)), .events = POLLIN,
                .revents = 0};
  while (::poll(&server, 1, -1) < 0 && errno == EINTR) {
  }
  // Only the server's end: a descriptor closed under the thread (code that closes every
  // descriptor it does not know) is no death, and leaves the signal to watch.
  if ((server.revents & POLLIN) != 0) KillOwnProcessGroup();
  return nullptr;
}

}  // namespace

void DieWithTheServer() {
  struct sigaction server_gone = {};
  server_gone.sa_handler = OnServerGone;
  ::sigaction(kServerGoneSignal, &server_gone, nullptr);

  const pid_t server = ::getppid();
  // Close-on-exec, as pidfd_open makes it: a process a function starts does not hold it.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, server, 0));
  if (pidfd < 0) return;
  // Adopted meanwhile: the pid watched may be another process's by now.
  if (::getppid() != server) KillOwnProcessGroup();
  sigset_t all, previous;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &previous);  // inherited by the thread
  pthread_attr_t attributes;
  ::pthread_attr_init(&attributes);
  ::pthread_attr_setstacksize(&attributes, 64 << 10);
  ::pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  ::pthread_create(&thread, &attributes, WatchServer,
                   reinterpret_cast<void*>(static_cast<intptr_t>(pidfd)));
  ::pthread_attr_destroy(&attributes);
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

}  // namespace cnp::worker
