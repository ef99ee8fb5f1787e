#include "client/couch/couch_credentials.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "common/couchdb/couch_url.h"
#include "common/file_text.h"
#include "common/loopback.h"

namespace cnp::client::couch {
namespace {

// "https://host:6984/prefix" -> "host"
std::string HostOf(absl::string_view base_url) {
  absl::string_view rest = base_url.substr(base_url.find("://") + 3);
  rest = rest.substr(0, rest.find('/'));
  if (!rest.empty() && rest[0] == '[') return std::string(rest.substr(1, rest.find(']') - 1));
  return std::string(rest.substr(0, rest.find(':')));
}

// "http://[::1]:5984/x" -> "[::1]", as IsLoopbackHost takes it.
absl::string_view HostAsWritten(absl::string_view base_url) {
  absl::string_view rest = base_url.substr(base_url.find("://") + 3);
  rest = rest.substr(0, rest.find('/'));
  if (!rest.empty() && rest[0] == '[') return rest.substr(0, rest.find(']') + 1);
  return rest.substr(0, rest.find(':'));
}

// A netrc larger than this is not one (NETRC=/dev/zero would be read until memory ran out).
constexpr int64_t kMaxNetrcBytes = int64_t{1} << 20;

// The netrc's text; nullopt when there is none at `path` (and `must_exist` is false). Anything
// else it cannot read is an error: read as "no credentials", it sent the request anonymously
// and CouchDB's 401 pointed back at the file without saying why.
absl::StatusOr<std::optional<std::string>> ReadNetrc(const std::string& path, bool must_exist) {
  auto cannot = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read the credentials file ", path, " (", why, "): fix it, or give the "
        "credentials in CNP_COUCHDB_USER and CNP_COUCHDB_PASSWORD"));
  };
  // Non-blocking, so that a FIFO named there cannot hold the command for ever at open().
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT && !must_exist) return std::nullopt;
    return cannot(std::strerror(errno));
  }
  struct stat info {};
  const bool regular = ::fstat(fd, &info) == 0 && S_ISREG(info.st_mode);
  ::close(fd);
  if (!regular) return cannot("not a regular file");
  absl::StatusOr<std::string> text = ReadFileText(path, kMaxNetrcBytes);
  if (!text.ok()) return cannot(text.status().message());
  if (static_cast<int64_t>(text->size()) > kMaxNetrcBytes) {
    return cannot(absl::StrCat("larger than ", kMaxNetrcBytes, " bytes"));
  }
  return std::optional<std::string>(*std::move(text));
}

// netrc's tokens, as curl reads them: separated by white space; one in double quotes may hold
// spaces, with \", \\, \n, \r and \t inside.
std::vector<std::string> NetrcTokens(absl::string_view text) {
  std::vector<std::string> tokens;
  size_t i = 0;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (i < text.size()) {
    while (i < text.size() && space(text[i])) ++i;
    if (i == text.size()) break;
    std::string token;
    if (text[i] == '"') {
      for (++i; i < text.size() && text[i] != '"'; ++i) {
        if (text[i] == '\\' && i + 1 < text.size()) {
          const char next = text[++i];
          token += next == 'n' ? '\n' : next == 'r' ? '\r' : next == 't' ? '\t' : next;
        } else {
          token += text[i];
        }
      }
      if (i < text.size()) ++i;  // the closing quote
    } else {
      while (i < text.size() && !space(text[i])) token += text[i++];
    }
    tokens.push_back(std::move(token));
  }
  return tokens;
}

}  // namespace

std::optional<std::string> ProcessEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

std::optional<NetrcEntry> FindNetrcEntry(absl::string_view netrc, absl::string_view host) {
  const std::vector<std::string> tokens = NetrcTokens(netrc);
  std::optional<NetrcEntry> found, fallback;
  std::optional<NetrcEntry>* current = nullptr;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& token = tokens[i];
    bool has_value = i + 1 < tokens.size();
    if (token == "machine" && has_value) {
      current = nullptr;
      // Host names are not case-sensitive (curl matches them so too).
      if (!found && absl::EqualsIgnoreCase(tokens[++i], host)) {
        found.emplace();
        current = &found;
      }
    } else if (token == "default") {
      current = nullptr;
      if (!fallback) {
        fallback.emplace();
        current = &fallback;
      }
    } else if (token == "macdef") {
      break;  // macros run to the end of a paragraph; nothing cnp needs follows reliably
    } else if ((token == "login" || token == "password") && has_value) {
      const std::string& value = tokens[++i];
      if (current != nullptr) {
        if (token == "login") {
          (*current)->login = value;
        } else {
          (*current)->password = value;
        }
      }
    }
  }
  return found ? found : fallback;
}

absl::StatusOr<CouchCredentials> FindCouchCredentials(absl::string_view url, const GetEnv& env) {
  absl::StatusOr<cnp::couchdb::CouchUrl> parsed = cnp::couchdb::ParseCouchUrl(url);
  if (!parsed.ok()) return parsed.status();
  CouchCredentials out;
  out.url = parsed->base;
  if (!parsed->username.empty()) {
    out.username = parsed->username;
    out.password = parsed->password;
    out.source = "the URL";
    return out;
  }
  std::optional<std::string> user = env("CNP_COUCHDB_USER");
  if (user && !user->empty()) {
    // An unset (or empty, as an unset shell variable expands) password was sent as "" and
    // CouchDB's 401 read as "refused the credentials", which sends the user to check a
    // password they never gave (found by a review). An empty password here is far more likely
    // a missing variable than a real one; a real one can still come from ~/.netrc or the URL.
    const std::optional<std::string> password = env("CNP_COUCHDB_PASSWORD");
    if (!password || password->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CNP_COUCHDB_USER is set but CNP_COUCHDB_PASSWORD is ", password ? "empty" : "not set",
          ": set it to CouchDB's password for that user (or unset CNP_COUCHDB_USER to use "
          "~/.netrc)"));
    }
    out.username = *user;
    out.password = *password;
    out.source = "CNP_COUCHDB_USER and CNP_COUCHDB_PASSWORD";
    return out;
  }
  std::string netrc_path;
  bool named = false;  // by $NETRC: then it must be there
  if (std::optional<std::string> netrc = env("NETRC"); netrc && !netrc->empty()) {
    netrc_path = *netrc;
    named = true;
  } else if (std::optional<std::string> home = env("HOME"); home && !home->empty()) {
    netrc_path = absl::StrCat(*home, "/.netrc");
  }
  if (!netrc_path.empty()) {
    absl::StatusOr<std::optional<std::string>> text = ReadNetrc(netrc_path, named);
    if (!text.ok()) return text.status();
    if (text->has_value()) {
      if (std::optional<NetrcEntry> entry = FindNetrcEntry(**text, HostOf(out.url))) {
        out.username = entry->login;
        out.password = entry->password;
        out.source = netrc_path;
      }
    }
  }
  return out;
}

}  // namespace cnp::client::couch

namespace cnp::client::couch {

absl::Status CheckCredentialsStayPrivate(const CouchCredentials& credentials, bool insecure) {
  if (credentials.username.empty() || insecure) return absl::OkStatus();
  // ParseCouchUrl lowercased the scheme.
  if (!absl::StartsWith(credentials.url, "http://")) return absl::OkStatus();
  if (IsLoopbackHost(HostAsWritten(credentials.url))) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "refusing to send CouchDB's user and password (from ", credentials.source, ") to ",
      credentials.url, " in plaintext: it is not this host's loopback (127.0.0.0/8, ::1, "
      "localhost), so anyone on the way could read them; use https://, or pass --insecure if "
      "the network between here and CouchDB is trusted"));
}

}  // namespace cnp::client::couch
