#include "service/worker/answered_task.h"

#include <atomic>
#include <cstdint>

namespace cnp::worker {
namespace {

// Written by the thread that reads the server's socket; a direct session's other threads
// (its list thread) write no frames, but an atomic costs nothing here.
std::atomic<uint64_t> g_sequence{0};

}  // namespace

void StartAnswering(const v1::Task& task) {
  g_sequence.store(task.sequence(), std::memory_order_relaxed);
}

void StartAnsweringUnreadTask() { g_sequence.fetch_add(1, std::memory_order_relaxed); }

void StampAnswer(v1::Reply& reply) {
  reply.set_sequence(g_sequence.load(std::memory_order_relaxed));
}

}  // namespace cnp::worker
