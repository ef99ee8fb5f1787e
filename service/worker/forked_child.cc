#include "service/worker/forked_child.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/types.h>
#include <unistd.h>

#include <array>
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

// The descriptors ChildMustNotHold names now, each plus one (0, as zero-initialized: a free
// slot), and /dev/null to put in their place. Lock-free: the child handler runs in the child
// of a fork() any thread may make.
std::array<std::atomic<int>, 8> g_held;
const int g_dev_null = ::open("/dev/null", O_RDWR | O_CLOEXEC);

void MarkForkedChild() {
  g_in_forked_child.store(true, std::memory_order_relaxed);
  // The numbers stay taken, by /dev/null: nothing the child opens next gets one and is taken
  // for the pipe or the socket by code that still holds the number.
  if (g_dev_null < 0) return;
  for (const std::atomic<int>& slot : g_held) {
    if (const int fd = slot.load(std::memory_order_relaxed) - 1; fd >= 0) {
      ::dup3(g_dev_null, fd, O_CLOEXEC);
    }
  }
}

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

ChildMustNotHold::ChildMustNotHold(int fd) {
  if (fd < 0) return;
  for (std::atomic<int>& slot : g_held) {
    int free = 0;
    if (slot.compare_exchange_strong(free, fd + 1)) {
      slot_ = &slot - g_held.data();
      return;
    }
  }
}

ChildMustNotHold::~ChildMustNotHold() {
  if (slot_ >= 0) g_held[slot_].store(0);
}

}  // namespace cnp::worker
