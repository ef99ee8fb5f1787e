// cnp upload interrupted (SIGINT, SIGTERM) while a staged deploy is in hand: the call is
// cancelled, and the command says what that left, as cnp-server would have had the call lived.
// In the settle wait the staging document is kept (deleting it could lose the built index),
// and the user is told when to delete it; it used to exit 130 without a word.
#include <stdlib.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/upload/upload_command.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace cnp::client::upload {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::UploadEvent Progress(const std::string& phase, int64_t done = 0, int64_t total = 0) {
  v1::UploadEvent event;
  v1::IndexBuildProgress& progress = *event.mutable_progress();
  progress.set_database("db");
  progress.set_id("_design/towns__staging");
  progress.set_phase(phase);
  progress.set_changes_done(done);
  progress.set_total_changes(total);
  return event;
}

// Sends its events, then holds the call open until the test lets it go: only a cancel by the
// client ends the command before then.
class HoldingService final : public v1::Functions::Service {
 public:
  explicit HoldingService(std::vector<v1::UploadEvent> events) : events_(std::move(events)) {}
  ~HoldingService() override { Release(); }

  grpc::Status Upload(grpc::ServerContext*, const v1::UploadRequest*,
                      grpc::ServerWriter<v1::UploadEvent>* writer) override {
    for (const v1::UploadEvent& event : events_) writer->Write(event);
    released_.wait_for(std::chrono::seconds(30));
    return grpc::Status(grpc::StatusCode::CANCELLED, "held");
  }

  void Release() {
    if (!release_called_) {
      release_called_ = true;
      release_.set_value();
    }
  }

 private:
  const std::vector<v1::UploadEvent> events_;
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
  bool release_called_ = false;
};

// An output stream that raises `signal` once its text holds `trigger`, as a user pressing
// Ctrl-C on seeing that line would.
class SignalOnText final : public std::stringbuf {
 public:
  SignalOnText(std::string trigger, int signal) : trigger_(std::move(trigger)), signal_(signal) {}

 protected:
  int sync() override {
    if (!raised_ && absl::StrContains(str(), trigger_)) {
      raised_ = true;
      std::raise(signal_);
    }
    return 0;
  }

 private:
  const std::string trigger_;
  const int signal_;
  bool raised_ = false;
};

struct CommandRun {
  int exit_code;
  std::string out, err;
};

class UploadInterruptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // TEST_TMPDIR is too long for a unix socket path (108 bytes).
    char dir[] = "/tmp/cnp-upload-interrupt.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    yaml_ = dir_ + "/design.yml";
    std::ofstream(yaml_) << "towns:\n  views:\n    v: myviews.townmap\n";
  }
  void TearDown() override {
    if (service_) service_->Release();
    if (server_) server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  // Runs `cnp upload --staged` against a service that sends `events` and holds on, raising
  // `signal` once the output holds `trigger`.
  CommandRun Interrupt(std::vector<v1::UploadEvent> events, const std::string& trigger,
                       int signal) {
    service_ = std::make_unique<HoldingService>(std::move(events));
    const std::string target = absl::StrCat("unix:", dir_, "/cnp.sock");
    grpc::ServerBuilder builder;
    builder.AddListeningPort(target, grpc::InsecureServerCredentials());
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    SignalOnText out_buffer(trigger, signal);
    std::ostream out(&out_buffer);
    std::ostringstream err;
    const int code = RunUpload({"cnp upload", "--staged", absl::StrCat("--target=", target),
                                "http://127.0.0.1:5984", "db", yaml_},
                               {.out = out, .err = err});
    return {code, out_buffer.str(), err.str()};
  }

  std::string dir_, yaml_;
  std::unique_ptr<HoldingService> service_;
  std::unique_ptr<grpc::Server> server_;
};

v1::UploadEvent LiveUpdated() {
  v1::UploadEvent event;
  v1::DesignDocOutcome& outcome = *event.mutable_outcome();
  outcome.set_database("db");
  outcome.set_id("_design/towns");
  outcome.set_action(v1::DesignDocOutcome::UPDATED);
  return event;
}

TEST_F(UploadInterruptTest, InTheSettleWaitTheKeptStagingDocumentIsNamedWithWhenToDeleteIt) {
  CommandRun run = Interrupt({Progress("staged"), Progress("building", 3, 7), Progress("built"),
                              LiveUpdated(), Progress("settling", 6, 7)},
                             "_design/towns__staging: waiting", SIGINT);
  EXPECT_EQ(run.exit_code, 130) << run.err;
  EXPECT_THAT(run.err, HasSubstr("interrupted (SIGINT)"));
  EXPECT_THAT(run.err, HasSubstr("the staging document _design/towns__staging in db was kept"));
  EXPECT_THAT(run.err, HasSubstr("delete it once GET /db/_design/towns/_info shows update_seq 7 "
                                 "and \"waiting_commit\": false"));
}

TEST_F(UploadInterruptTest, DuringTheBuildTheStagingDocumentIsSaidToBeDeleted) {
  CommandRun run = Interrupt({Progress("staged"), Progress("building", 3, 7)},
                             "building index", SIGTERM);
  EXPECT_EQ(run.exit_code, 128 + SIGTERM) << run.err;
  EXPECT_THAT(run.err, HasSubstr("interrupted (SIGTERM)"));
  EXPECT_THAT(run.err, HasSubstr("before the live design document was written: cnp-server "
                                 "deletes the staging document _design/towns__staging in db"));
  EXPECT_THAT(run.err, Not(HasSubstr("kept")));
}

// A probe counted 513 design documents in CouchDB after 511 "created" lines and "what is
// reported above was done": the writes already sent finish there, unreported.
TEST_F(UploadInterruptTest, WithNoStagingDocumentInHandWritesInFlightAreSaidToBeFinishedByARerun) {
  CommandRun run = Interrupt({LiveUpdated()}, "updated", SIGINT);
  EXPECT_EQ(run.exit_code, 130) << run.err;
  EXPECT_THAT(run.err, HasSubstr("interrupted (SIGINT)"));
  EXPECT_THAT(run.err, HasSubstr("a write CouchDB had already been sent may have been made too: "
                                 "run the upload again to finish it"));
}

// After the call the signals act as they did before it.
TEST_F(UploadInterruptTest, TheHandlersArePutBackAfterTheCall) {
  const auto before = std::signal(SIGINT, SIG_DFL);
  std::signal(SIGINT, before);
  CommandRun run = Interrupt({Progress("staged")}, "starting its index build", SIGINT);
  EXPECT_EQ(run.exit_code, 130) << run.err;
  const auto after = std::signal(SIGINT, SIG_DFL);
  std::signal(SIGINT, after);
  EXPECT_EQ(after, before);
}

}  // namespace
}  // namespace cnp::client::upload
