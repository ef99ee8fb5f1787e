#include "service/common/shared_flag.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace cnp {
namespace {

constexpr size_t kBytes = sizeof(std::atomic<uint32_t>);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

absl::StatusOr<std::atomic<uint32_t>*> MapWord(int fd) {
  void* mapped = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mapped == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("mmap of a shared flag: ", std::strerror(errno)));
  }
  return static_cast<std::atomic<uint32_t>*>(mapped);
}

}  // namespace

absl::StatusOr<SharedFlag> SharedFlag::Create() {
  const int fd = ::memfd_create("cnp-shared-flag", MFD_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("memfd_create: ", std::strerror(errno)));
  }
  if (::ftruncate(fd, kBytes) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("ftruncate of a shared flag: ", std::strerror(error)));
  }
  absl::StatusOr<std::atomic<uint32_t>*> word = MapWord(fd);
  if (!word.ok()) {
    ::close(fd);
    return word.status();
  }
  return SharedFlag(fd, *word);  // a new memfd reads zero
}

absl::StatusOr<SharedFlag> SharedFlag::Map(int fd) {
  struct stat about {};
  // Not trusted blindly: a descriptor too short to map would fault on the first store.
  if (::fstat(fd, &about) != 0 || about.st_size < static_cast<off_t>(kBytes)) {
    ::close(fd);
    return absl::InvalidArgumentError("the shared flag's descriptor is not a flag");
  }
  absl::StatusOr<std::atomic<uint32_t>*> word = MapWord(fd);
  ::close(fd);
  if (!word.ok()) return word.status();
  return SharedFlag(-1, *word);
}

SharedFlag::SharedFlag(SharedFlag&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), word_(std::exchange(other.word_, nullptr)) {}

SharedFlag& SharedFlag::operator=(SharedFlag&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
    word_ = std::exchange(other.word_, nullptr);
  }
  return *this;
}

SharedFlag::~SharedFlag() { Release(); }

void SharedFlag::Release() {
  CloseDescriptor();
  if (word_ != nullptr) ::munmap(word_, kBytes);
  word_ = nullptr;
}

void SharedFlag::CloseDescriptor() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace cnp
