#include "common/system_user.h"

#include <pwd.h>

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cnp {

absl::StatusOr<uid_t> ResolveUser(const std::string& user, absl::string_view flag) {
  uint32_t uid = 0;
  if (absl::SimpleAtoi(user, &uid)) return static_cast<uid_t>(uid);
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwnam_r(user.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
      found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, ": no user named '", user, "' (give a user name or a number)"));
  }
  return found->pw_uid;
}

std::optional<std::string> UserName(uid_t uid) {
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return std::nullopt;
  }
  return std::string(found->pw_name);
}

std::string DescribeUser(uid_t uid) {
  std::optional<std::string> name = UserName(uid);
  return name.has_value() ? absl::StrCat("uid ", uid, " (", *name, ")") : absl::StrCat("uid ", uid);
}

}  // namespace cnp
