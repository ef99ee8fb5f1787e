#include "client/upload/local_files.h"

#include "absl/strings/str_cat.h"
#include "common/file_text.h"

namespace cnp::client::upload {

absl::StatusOr<std::string> ReadBounded(const std::string& path, int64_t max_bytes) {
  return ReadFileText(path, max_bytes);
}

}  // namespace cnp::client::upload
