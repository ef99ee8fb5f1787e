// Whom a client trusts with a unix socket (common/socket_trust.h): a directory, a socket or a
// listening process of another user is refused, naming the path, the owner and the flag that
// accepts it; --server-user accepts that user, except for the user's own default directory.
// Another user is played by nobody (65534), so the tests need root to chown (they skip
// without it).
#include "common/socket_trust.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/system_user.h"
#include "tests/support/as_user.h"
#include "tests/support/files.h"

namespace cnp {
namespace {

using ::cnp::testing::ShortTempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uid_t kNobody = 65534;

// A directory `name` under a fresh directory, with `mode`, owned by `owner`.
std::string MakeDir(const std::string& parent, const std::string& name, mode_t mode, uid_t owner) {
  const std::string dir = parent + "/" + name;
  EXPECT_EQ(::mkdir(dir.c_str(), mode), 0);
  EXPECT_EQ(::chmod(dir.c_str(), mode), 0);
  EXPECT_EQ(::chown(dir.c_str(), owner, owner), 0);
  return dir;
}

// A bound (not listening) unix socket at `path`, owned by `owner`.
void MakeSocket(const std::string& path, uid_t owner) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << path;
  ::close(fd);
  ASSERT_EQ(::chown(path.c_str(), owner, owner), 0);
}

class SocketTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to give files to another user";
    dir_ = ShortTempDir();
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  }
  // Trust as a client whose default directory is elsewhere.
  SocketTrust Trust(std::optional<uid_t> server_uid) const {
    return SocketTrust(server_uid, dir_ + "/own");
  }
  std::string dir_;
};

TEST_F(SocketTrustTest, ADirectoryOfAnotherUserIsRefusedUnlessItIsTheServerUser) {
  const std::string theirs = MakeDir(dir_, "theirs", 0755, kNobody);
  absl::Status refused = Trust(std::nullopt).CheckSocket(theirs + "/cnp.sock");
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(refused.message(),
              AllOf(HasSubstr("the socket directory " + theirs + " belongs to uid 65534"),
                    HasSubstr("not to this user (uid 0"), HasSubstr("--server-user=")));
  EXPECT_TRUE(Trust(kNobody).CheckSocket(theirs + "/cnp.sock").ok());
  // Another server user is not that one.
  EXPECT_TRUE(absl::IsFailedPrecondition(Trust(4242).CheckSocket(theirs + "/cnp.sock")));
}

TEST_F(SocketTrustTest, ASocketOfAnotherUserIsRefusedInATrustedDirectory) {
  const std::string ours = MakeDir(dir_, "ours", 0755, 0);
  MakeSocket(ours + "/cnp.sock", kNobody);
  absl::Status refused = Trust(std::nullopt).CheckSocket(ours + "/cnp.sock");
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(refused.message(), AllOf(HasSubstr("the socket " + ours + "/cnp.sock belongs to "
                                                 "uid 65534"),
                                       HasSubstr("--server-user=")));
  EXPECT_TRUE(Trust(kNobody).CheckSocket(ours + "/cnp.sock").ok());
  // Root's socket in root's directory needs no flag; a missing socket is no reason to refuse.
  MakeSocket(ours + "/root.sock", 0);
  EXPECT_TRUE(Trust(std::nullopt).CheckSocket(ours + "/root.sock").ok());
  EXPECT_TRUE(Trust(std::nullopt).CheckSocket(ours + "/none.sock").ok());
}

// A socket whose mode keeps this user out said "no cnp-server answers" and advised starting one
// (found by an operator's trial); it says what lets this user in. Checked as nobody, in a child.
TEST_F(SocketTrustTest, ASocketThisUserMayNotOpenSaysWhatLetsItIn) {
  constexpr gid_t kDaemon = 1;  // a group nobody is not in, and not root's
  const std::string ours = MakeDir(dir_, "ours", 0755, 0);
  MakeSocket(ours + "/group.sock", 0);
  ASSERT_EQ(::chown((ours + "/group.sock").c_str(), 0, kDaemon), 0);
  ASSERT_EQ(::chmod((ours + "/group.sock").c_str(), 0660), 0);
  MakeSocket(ours + "/private.sock", 0);
  ASSERT_EQ(::chmod((ours + "/private.sock").c_str(), 0600), 0);
  MakeSocket(ours + "/roots.sock", 0);  // group root's: nobody is told to join root
  ASSERT_EQ(::chmod((ours + "/roots.sock").c_str(), 0660), 0);
  const std::string grouped = MakeDir(dir_, "grouped", 0750, 0);
  ASSERT_EQ(::chown(grouped.c_str(), 0, kDaemon), 0);
  MakeSocket(grouped + "/cnp.sock", 0);
  const std::string closed = MakeDir(dir_, "closed", 0700, 0);
  MakeSocket(closed + "/cnp.sock", 0);
  const int status = ::cnp::testing::ExitStatusAsUser(kNobody, kNobody, [&] {
    const SocketTrust trust(std::nullopt, dir_ + "/own");
    const absl::Status group = trust.CheckSocket(ours + "/group.sock");
    if (!absl::IsFailedPrecondition(group) ||
        !absl::StrContains(group.message(), "does not let this user (uid 65534") ||
        !absl::StrContains(group.message(), ours + "/group.sock has mode 0660, owner root, "
                                            "group daemon; this user is not in its group daemon") ||
        !absl::StrContains(group.message(), "usermod -aG daemon ")) {
      return 11;
    }
    for (const char* name : {"/private.sock", "/roots.sock"}) {
      const absl::Status refused = trust.CheckSocket(ours + name);
      if (!absl::IsFailedPrecondition(refused) ||
          !absl::StrContains(refused.message(), "--socket-group=GROUP") ||
          absl::StrContains(refused.message(), "usermod")) {
        return 12;
      }
    }
    // A directory of the group's (0750, as cnp-server makes it with --socket-group): the
    // socket cannot even be looked at, and the directory is named.
    const absl::Status grouped_dir = trust.CheckSocket(grouped + "/cnp.sock");
    if (!absl::IsFailedPrecondition(grouped_dir) ||
        !absl::StrContains(grouped_dir.message(), grouped + " has mode 0750, owner root, group "
                                                  "daemon; this user is not in its group daemon")) {
      return 13;
    }
    // A directory for its owner only keeps its mode whatever the server's flags: its own fix.
    const absl::Status closed_dir = trust.CheckSocket(closed + "/cnp.sock");
    if (!absl::IsFailedPrecondition(closed_dir) ||
        !absl::StrContains(closed_dir.message(), "chgrp GROUP " + closed + " && chmod 0750 ")) {
      return 14;
    }
    return 0;
  });
  EXPECT_EQ(status, 0) << "125 could not become nobody, 11 the group socket's message, 12 the "
                          "0600 or root-group socket's, 13 the group directory's, 14 the 0700 "
                          "directory's";
  // Root may open them: no refusal.
  EXPECT_TRUE(Trust(std::nullopt).CheckSocket(ours + "/group.sock").ok());
}

TEST_F(SocketTrustTest, TheDefaultDirectoryMustBeMineWhateverTheServerUser) {
  const std::string own = MakeDir(dir_, "own", 0700, kNobody);
  for (std::optional<uid_t> server_uid : {std::optional<uid_t>(), std::optional<uid_t>(kNobody)}) {
    absl::Status refused = Trust(server_uid).CheckSocket(own + "/cnp.sock");
    EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
    EXPECT_THAT(refused.message(), AllOf(HasSubstr(own + " belongs to uid 65534"),
                                         HasSubstr("default socket directory"),
                                         HasSubstr("no flag")));
  }
  // Spelt another way, it is the same directory.
  EXPECT_FALSE(Trust(kNobody).CheckSocket(dir_ + "//own/./cnp.sock").ok());
}

TEST_F(SocketTrustTest, ADirectoryOthersMayWriteIsRefusedEvenWhenOwnedByATrustedUser) {
  const std::string open = MakeDir(dir_, "open", 0777, kNobody);
  absl::Status refused = Trust(kNobody).CheckSocket(open + "/cnp.sock");
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(refused.message(), HasSubstr(open + " has mode 0777"));
}

TEST_F(SocketTrustTest, AMissingDirectoryIsUnavailable) {
  absl::Status missing = Trust(std::nullopt).CheckSocket(dir_ + "/none/cnp.sock");
  EXPECT_TRUE(absl::IsUnavailable(missing)) << missing;
  EXPECT_THAT(missing.message(), HasSubstr(dir_ + "/none does not exist"));
}

TEST_F(SocketTrustTest, APeerOfAnotherUserIsRefusedUnlessItIsTheServerUser) {
  absl::Status refused = Trust(std::nullopt).CheckPeer(kNobody, "/run/cnp/cnp.sock.direct");
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(refused.message(),
              AllOf(HasSubstr("/run/cnp/cnp.sock.direct runs as uid 65534"),
                    HasSubstr("--server-user=")));
  EXPECT_TRUE(Trust(kNobody).CheckPeer(kNobody, "/run/cnp/cnp.sock.direct").ok());
  EXPECT_TRUE(Trust(std::nullopt).CheckPeer(0, "/run/cnp/cnp.sock.direct").ok());
  EXPECT_TRUE(Trust(std::nullopt).CheckPeer(::geteuid(), "/run/cnp/cnp.sock.direct").ok());
}

// cnp-adapter resolves --server-user once and builds its trust from the uid; a name or a uid
// given to WithServerUser trusts the same user.
TEST(SocketTrustFromFlagTest, ANameAndItsResolvedUidTrustTheSameUsers) {
  absl::StatusOr<SocketTrust> by_name = SocketTrust::WithServerUser("nobody");
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  const SocketTrust by_uid = SocketTrust::WithServerUid(kNobody);
  const SocketTrust nobody_else = SocketTrust::WithServerUid(std::nullopt);
  for (uid_t uid : {uid_t{0}, ::geteuid(), kNobody, uid_t{4242}}) {
    EXPECT_EQ(by_name->Trusts(uid), by_uid.Trusts(uid)) << uid;
    EXPECT_EQ(nobody_else.Trusts(uid), uid == 0 || uid == ::geteuid()) << uid;
  }
  EXPECT_TRUE(by_uid.Trusts(kNobody));
  EXPECT_FALSE(SocketTrust::WithServerUser("no-such-user-here").ok());
}

TEST(ResolveUserTest, TakesANameOrANumber) {
  EXPECT_EQ(*ResolveUser("0", "server-user"), 0u);
  EXPECT_EQ(*ResolveUser("root", "server-user"), 0u);
  absl::StatusOr<uid_t> none = ResolveUser("no-such-user-here", "server-user");
  EXPECT_TRUE(absl::IsInvalidArgument(none.status()));
  EXPECT_THAT(none.status().message(), HasSubstr("--server-user: no user named"));
}

}  // namespace
}  // namespace cnp
