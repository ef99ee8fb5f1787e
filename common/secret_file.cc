#include "common/secret_file.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/code_ownership.h"

namespace cnp {

namespace {

std::string GroupName(gid_t gid) {
  const struct group* group = ::getgrgid(gid);
  return group != nullptr ? std::string(group->gr_name) : std::to_string(gid);
}

// Who besides the owner may read or change a secret file of mode `st`, or nothing. Its group
// never may: a group-readable key (root:cnp 0640) was tried and taken out again, since the
// group a service's user is in is also the group of the users it serves (the socket's), and
// nothing a program can check says no one else is in it (a review).
std::optional<std::string> WhoElseMayReadOrChange(const struct stat& st) {
  if ((st.st_mode & 007) != 0) return "every user";
  if ((st.st_mode & 070) != 0) {
    return absl::StrCat("the members of its group ", GroupName(st.st_gid));
  }
  return std::nullopt;
}

// What lets this process read a file it was refused: a file of its own user's.
std::string HowToLetThisUserRead(const std::string& path) {
  const uid_t uid = ::geteuid();
  const struct passwd* user = ::getpwuid(uid);
  const std::string user_name = user != nullptr ? user->pw_name : std::to_string(uid);
  return absl::StrCat("; this process runs as ", user_name, " (uid ", uid,
                      "): give it the file (chown ", user_name, " ", path, "; chmod 600 ", path,
                      "; for a key that is renewed as root's, such as certbot's, a deploy hook "
                      "that installs a copy: install -o ", user_name, " -m 600 KEY ", path,
                      "), and make every directory above it searchable by ", user_name);
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
  } else if (std::optional<std::string> who = WhoElseMayReadOrChange(st); who.has_value()) {
    status = absl::PermissionDeniedError(absl::StrFormat(
        "%s %s has mode %04o: %s on this host could read or change it; run chmod 600 %s",
        what, path, st.st_mode & 07777, *who, path));
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
    // Meant as a comment, it was a token anyone who read the file's convention could send (a
    // security probe: "#oldtoken-rotated-2026-01-01-below" was accepted). Before the bytes'
    // check, which would call "# rotated" a token with a space.
    if (absl::StartsWith(token, "#")) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the token file %s has a line starting with '#' (line %d): the file has no comments, "
          "and every line is a token the server accepts; remove it, or keep notes elsewhere",
          path, LineNumberAt(*content, offset)));
    }
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
