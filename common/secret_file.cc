#include "common/secret_file.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/code_ownership.h"

namespace cnp {

namespace {

// Whether this process is in group `gid`, as its effective or a supplementary group.
bool ThisProcessIsInGroup(gid_t gid) {
  if (::getegid() == gid) return true;
  const int count = ::getgroups(0, nullptr);
  if (count <= 0) return false;
  std::vector<gid_t> groups(static_cast<size_t>(count));
  const int got = ::getgroups(count, groups.data());
  return got > 0 && std::find(groups.begin(), groups.begin() + got, gid) != groups.begin() + got;
}

std::string GroupName(gid_t gid) {
  const struct group* group = ::getgrgid(gid);
  return group != nullptr ? std::string(group->gr_name) : std::to_string(gid);
}

// Who besides the owner may read or change the secret file `fd` (what fstat said: `st`), or
// nothing. A file root owns may be read by its group when this process, not root, is in that
// group (PostgreSQL's rule for its key, and what a service's user needs for a key that stays
// root's: chown root:cnp, chmod 640); never by a group this process is not in (`users` would
// be everyone), nor with an ACL, whose entries the group bits then only mask. A file this
// process's user owns is that user's alone, and so is one a root process reads.
std::optional<std::string> WhoElseMayReadOrChange(int fd, const struct stat& st) {
  if ((st.st_mode & 007) != 0) return "every user";
  if ((st.st_mode & 070) == 0) return std::nullopt;
  const std::string members = absl::StrCat("the members of its group ", GroupName(st.st_gid));
  if ((st.st_mode & 030) != 0 || st.st_uid != 0 || ::geteuid() == 0) return members;
  if (!ThisProcessIsInGroup(st.st_gid)) {
    return absl::StrCat(members, ", a group this program's user is not in,");
  }
  if (::fgetxattr(fd, "system.posix_acl_access", nullptr, 0) >= 0) {
    return "the users and groups its ACL names (getfacl shows them)";
  }
  return std::nullopt;
}

// What lets this process read a file it was refused: the two layouts ReadSecretFile accepts.
std::string HowToLetThisUserRead(const std::string& path) {
  const uid_t uid = ::geteuid();
  const struct passwd* user = ::getpwuid(uid);
  const std::string user_name = user != nullptr ? user->pw_name : std::to_string(uid);
  return absl::StrCat("; this process runs as ", user_name, " (uid ", uid,
                      "): give it the file (chown ", user_name, " ", path, "; chmod 600 ", path,
                      "), or keep it root's and let a group of ", user_name,
                      "'s that no one else needs read it (chown root:GROUP ", path,
                      "; chmod 640 ", path, "), and make every directory above it searchable "
                      "by ", user_name);
}

}  // namespace

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view what) {
  // O_NONBLOCK: opening a named pipe would wait for a writer, and the server hang at start
  // saying nothing; it is then refused as no regular file. (Reads of a regular file ignore it.)
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int error = errno;
    return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path, ": ",
                                            std::strerror(error),
                                            error == EACCES ? HowToLetThisUserRead(path) : ""));
  }
  struct stat st {};
  std::string content;
  absl::Status status;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    status = absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is not a regular file"));
  } else if (std::optional<std::string> who = WhoElseMayReadOrChange(fd, st); who.has_value()) {
    status = absl::PermissionDeniedError(absl::StrFormat(
        "%s %s has mode %04o: %s on this host could read or change it; run chmod 600 %s (or, "
        "for a file root owns and a program not run as root, chmod 640 %s with a group of "
        "that program's user)",
        what, path, st.st_mode & 07777, *who, path, path));
  } else if (std::optional<OwnershipProblem> problem = OthersCanChange(path, st);
             problem.has_value()) {
    // A secret another user owns is theirs to read, change or hand out: a token file owned by
    // nobody, however private its mode, lets nobody decide who may call a root server.
    status = absl::PermissionDeniedError(absl::StrCat(
        what, " ", path, " ", problem->what, ": that user could read or change it; run chown ",
        ::geteuid() == 0 ? "root" : std::to_string(::geteuid()), " ", path));
  } else {
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(fd, buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR)) {
      if (n > 0) content.append(buffer, n);
    }
    if (n < 0) {
      status = absl::UnavailableError(
          absl::StrCat("cannot read ", what, " ", path, ": ", std::strerror(errno)));
    }
  }
  ::close(fd);
  if (!status.ok()) return status;
  return content;
}

namespace {

// A token travels as an HTTP/2 header value, where gRPC aborts the client on anything but
// visible ASCII after logging the whole header (the token with it). The message names the
// byte's place in the file, never the token.
absl::Status CheckTokenBytes(const std::string& path, absl::string_view token, size_t offset) {
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char byte = static_cast<unsigned char>(token[i]);
    if (byte >= 0x21 && byte <= 0x7e) continue;
    if (byte == '\n') {
      // Two lines of `openssl rand -base64 64` are the likely case.
      return absl::InvalidArgumentError(absl::StrFormat(
          "the token file %s holds more than one line (a line break at offset %d): a client "
          "sends one token, one line of visible ASCII (cnp-server's own file may list several, "
          "one per line); make one with openssl rand -hex 32",
          path, offset + i));
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "the token file %s holds byte 0x%02x at offset %d, where a token is one line of "
        "visible ASCII (no spaces); make one with openssl rand -hex 32",
        path, byte, offset + i));
  }
  return absl::OkStatus();
}

// 1 for the file's first line.
size_t LineNumberAt(absl::string_view content, size_t offset) {
  const absl::string_view before = content.substr(0, offset);
  return 1 + static_cast<size_t>(std::count(before.begin(), before.end(), '\n'));
}

}  // namespace

absl::StatusOr<std::string> ReadAuthToken(const std::string& path) {
  absl::StatusOr<std::string> content = ReadSecretFile(path, "the token file");
  if (!content.ok()) return content.status();
  const absl::string_view stripped = absl::StripAsciiWhitespace(*content);
  if (stripped.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the token file ", path, " is empty"));
  }
  const size_t offset = static_cast<size_t>(stripped.data() - content->data());
  if (absl::Status s = CheckTokenBytes(path, stripped, offset); !s.ok()) return s;
  return std::string(stripped);
}

absl::StatusOr<std::vector<std::string>> ReadAuthTokens(const std::string& path) {
  absl::StatusOr<std::string> content = ReadSecretFile(path, "the token file");
  if (!content.ok()) return content.status();
  std::vector<std::string> tokens;
  for (absl::string_view line : absl::StrSplit(*content, '\n')) {
    const absl::string_view token = absl::StripAsciiWhitespace(line);
    if (token.empty()) continue;
    const size_t offset = static_cast<size_t>(token.data() - content->data());
    if (absl::Status s = CheckTokenBytes(path, token, offset); !s.ok()) return s;
    if (token.size() < kMinAuthTokenBytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the token file %s holds a token of %d characters on line %d; cnp-server accepts "
          "tokens of %d characters or more (a short one can be guessed by a caller who tries "
          "many): make one with openssl rand -hex 32",
          path, token.size(), LineNumberAt(*content, offset), kMinAuthTokenBytes));
    }
    tokens.emplace_back(token);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the token file ", path, " is empty"));
  }
  return tokens;
}

}  // namespace cnp
