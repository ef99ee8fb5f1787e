// The buffer the worker writes JSON into, and the writer for it: rapidjson's, with an allocator
// that throws std::bad_alloc when memory runs out. rapidjson does not check what realloc
// returns (its stack writes through the null pointer), and under --memory-limit-mb (RLIMIT_AS)
// running out is ordinary: a function near the cap must get a MemoryError, as its caller
// must, not a worker dead of a segmentation fault. PythonJsonWriter turns the exception into
// that MemoryError; what escapes elsewhere ends the task (task_loop.cc).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cnp::worker {

class ThrowingAllocator {
 public:
  static constexpr bool kNeedFree = true;
  void* Malloc(size_t size) {
    if (size == 0) return nullptr;
    return Checked(std::malloc(size));
  }
  void* Realloc(void* original, size_t /*original_size*/, size_t new_size) {
    if (new_size == 0) {
      std::free(original);
      return nullptr;
    }
    // On failure realloc leaves `original` as it was, and so does the buffer that holds it.
    return Checked(std::realloc(original, new_size));
  }
  static void Free(void* pointer) { std::free(pointer); }
  bool operator==(const ThrowingAllocator&) const { return true; }
  bool operator!=(const ThrowingAllocator&) const { return false; }

 private:
  static void* Checked(void* pointer) {
    if (pointer == nullptr) throw std::bad_alloc();
    return pointer;
  }
};

using JsonBuffer = rapidjson::GenericStringBuffer<rapidjson::UTF8<>, ThrowingAllocator>;
using JsonWriter =
    rapidjson::Writer<JsonBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>, ThrowingAllocator>;

}  // namespace cnp::worker
