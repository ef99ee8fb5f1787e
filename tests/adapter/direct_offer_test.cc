// The adapter's side of offering CouchDB's pipes to cnp-server (adapter/direct_session.h),
// against a fake session socket in this process.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "adapter/direct_session.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/common/framing.h"
#include "session.pb.h"

namespace cnp::adapter {
namespace {

using ::testing::HasSubstr;

// A listening unix socket in a directory of the test's own.
class FakeSessionSocket {
 public:
  FakeSessionSocket() {
    char dir_template[] = "/tmp/cnp-offer-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    path_ = dir_ + "/cnp.sock.direct";
    listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path_.c_str(), path_.size() + 1);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(listener_, 4), 0);
  }
  ~FakeSessionSocket() {
    ::close(listener_);
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& dir() const { return dir_; }
  const std::string& path() const { return path_; }
  int listener() const { return listener_; }

 private:
  std::string dir_, path_;
  int listener_ = -1;
};

// cnp-server refuses a uid it does not allow before it reads anything: it answers and closes.
// A hello larger than the socket can buffer cannot be written before that close, so the
// adapter's write fails (EPIPE) with the refusal waiting to be read: the adapter must report
// the refusal and its reason, not "did not answer: sendmsg failed: Broken pipe".
TEST(DirectOfferTest, ARefusalIsReadEvenWhenTheHelloCouldNotBeWritten) {
  FakeSessionSocket server;
  std::thread refuser([&server] {
    const int peer = ::accept4(server.listener(), nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(peer, 0);
    session::v1::Answer answer;
    answer.set_outcome(session::v1::Answer::REFUSED);
    answer.set_reason("uid 65534 may not use this cnp-server; allow it with --allow-uid");
    EXPECT_TRUE(WriteFrame(peer, answer.SerializeAsString()).ok());
    ::close(peer);
  });
  const std::string settings(16 << 20, 's');  // far more than a unix socket buffers
  absl::StatusOr<DirectOffer> offer =
      OfferDirectSession(server.path(), settings, /*max_line_bytes=*/1 << 20,
                         SocketTrust(std::nullopt, server.dir()), absl::Now() + absl::Seconds(30));
  refuser.join();
  ASSERT_TRUE(offer.ok()) << offer.status();
  EXPECT_EQ(offer->outcome, DirectOffer::Outcome::kRefused);
  EXPECT_THAT(offer->reason, HasSubstr("--allow-uid"));
}

// A server that does not accept (its control loop stopped, or a crowd of adapters) leaves
// its backlog full, where a blocking connect would wait past CouchDB's timeout. The offer
// gives up at its deadline with CouchDB's pipes untouched, so the stream path may serve.
TEST(DirectOfferTest, AFullBacklogIsGivenUpAtTheDeadlineForTheStream) {
  FakeSessionSocket server;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, server.path().c_str(), server.path().size() + 1);
  std::vector<int> queued;
  for (;;) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      ::close(fd);
      break;
    }
    queued.push_back(fd);
    ASSERT_LT(queued.size(), 100u) << "the backlog never filled";
  }
  absl::StatusOr<DirectOffer> offer =
      OfferDirectSession(server.path(), "", /*max_line_bytes=*/1 << 20,
                         SocketTrust(std::nullopt, server.dir()),
                         absl::Now() + absl::Milliseconds(200));
  for (int fd : queued) ::close(fd);
  ASSERT_TRUE(offer.ok()) << offer.status();
  EXPECT_EQ(offer->outcome, DirectOffer::Outcome::kUseStream);
  EXPECT_THAT(offer->reason, HasSubstr("backlog stayed full"));
}

// Without an answer, the failed write is what is reported.
TEST(DirectOfferTest, AServerThatClosesWithoutAnAnswerIsReportedAsSuch) {
  FakeSessionSocket server;
  std::thread closer([&server] {
    const int peer = ::accept4(server.listener(), nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(peer, 0);
    ::close(peer);
  });
  const std::string settings(16 << 20, 's');
  absl::StatusOr<DirectOffer> offer =
      OfferDirectSession(server.path(), settings, 1 << 20,
                         SocketTrust(std::nullopt, server.dir()), absl::Now() + absl::Seconds(30));
  closer.join();
  ASSERT_FALSE(offer.ok());
  EXPECT_TRUE(absl::IsUnavailable(offer.status())) << offer.status();
  EXPECT_THAT(std::string(offer.status().message()), HasSubstr("did not answer"));
}

}  // namespace
}  // namespace cnp::adapter
