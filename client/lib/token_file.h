// A client's bearer token, followed in its file: read when the client connects, and again at a
// call whenever the file has changed since (another inode, size or modification time), so that
// a long-running client (a `cnp derive` follower, a service built on this library) goes along
// with a token rotated on the server (README "The token") instead of failing UNAUTHENTICATED
// once the old one is removed there. A file that cannot be read at a later look (being
// replaced, or made unsafe) leaves the token read before: the server says whether it still
// takes it.
#pragma once

#include <sys/stat.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace cnp::client {

class TokenFile {
 public:
  // Reads the token at `path` (common/secret_file.h's checks); an error when it cannot.
  static absl::StatusOr<std::unique_ptr<TokenFile>> Open(std::string path);

  // "Bearer <token>", as the file holds it now: one stat() a call, a read when it changed.
  std::string Authorization() const;

 private:
  TokenFile(std::string path, struct stat seen, std::string authorization)
      : path_(std::move(path)), seen_(seen), authorization_(std::move(authorization)) {}

  const std::string path_;
  mutable absl::Mutex mu_;
  mutable struct stat seen_ ABSL_GUARDED_BY(mu_);
  mutable std::string authorization_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cnp::client
