// How much memory a process holds, from /proc/<pid>/status: for the tests that bound it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace cnp::testing {

// A field of /proc/<pid>/status in bytes ("VmRSS", "VmHWM"); -1 if it cannot be read.
int64_t ProcStatusBytes(pid_t pid, const std::string& field);

// This process's resident memory (VmRSS of /proc/self/status).
int64_t OwnResidentBytes();

}  // namespace cnp::testing
