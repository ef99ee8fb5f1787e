#include "service/worker/forked_child.h"

#include <pthread.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>

namespace cnp::worker {
namespace {

// Set by fork()'s child handler, so the check costs a load instead of a getpid() system call
// (glibc no longer caches the pid): the worker asks several times per document, and the
// system calls were a quarter of its CPU on batch Map. Python's os.fork() goes through the
// C library's fork(), which runs the handler; a child made by vfork() or posix_spawn() (the
// subprocess module) runs no Python before exec() and never reaches the worker's code. A child
// made past the C library (a raw clone() system call through ctypes) is not seen: the
// getpid() check saw it, at a quarter of the worker's CPU for every document.
std::atomic<bool> g_in_forked_child{false};

void MarkForkedChild() { g_in_forked_child.store(true, std::memory_order_relaxed); }

// Registered at load, before any function could have forked: the worker is exec()'d by the
// server, and tests running the worker's code in their own process do not fork without exec.
const pid_t g_worker_pid = ::getpid();
const bool g_handler_registered = ::pthread_atfork(nullptr, nullptr, &MarkForkedChild) == 0;

}  // namespace

bool InForkedChild() {
  // pthread_atfork fails only when out of memory: then the system call it stood in for.
  if (!g_handler_registered) return ::getpid() != g_worker_pid;
  return g_in_forked_child.load(std::memory_order_relaxed);
}

void LeaveIfForkedChild() {
  if (InForkedChild()) ::_exit(0);
}

}  // namespace cnp::worker
