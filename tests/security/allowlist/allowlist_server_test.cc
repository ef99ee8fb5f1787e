// The allowlist and code updates end to end: a real cnp-server with real workers, called the
// way an attacker on its socket and the way CouchDB's adapter would call it.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/security/allowlist/modules.h"
#include "tests/support/server_process.h"

namespace cnp::security::testing {
namespace {

using ::cnp::testing::ServerProcess;
using ::testing::HasSubstr;
using ::testing::Not;

absl::StatusOr<v1::DesignFunctionResponse> Call(client::Client& client, v1::DesignFunctionKind kind,
                                                const std::string& function,
                                                const std::string& args) {
  v1::DesignFunctionRequest request;
  request.set_kind(kind);
  request.set_function(function);
  request.set_args(args);
  return client.CallDesignFunction(request);
}

void ExpectRefusedNamingTheServerFlag(const absl::Status& status) {
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_THAT(status.message(), HasSubstr("cnp-server"));
  EXPECT_THAT(status.message(), Not(HasSubstr("cnp-worker")));
  EXPECT_THAT(status.message(), Not(HasSubstr("--allow-module=posix")));
  EXPECT_THAT(status.message(), Not(HasSubstr("--allow-module=builtins")));
}

int WorkersStarted(const ServerProcess& server) {
  std::vector<std::string> lines = absl::StrSplit(server.Log(), '\n');
  int started = 0;
  // The pool's workers ("worker 1 started"), not the spare workers of direct sessions.
  for (const std::string& line : lines) {
    started += absl::StrContains(line, "] worker ") && absl::StrContains(line, " started (pid ");
  }
  return started;
}

TEST(AllowListServerTest, TheIssuesRemoteCodeExecutionChainIsRefused) {
  std::string dir = FreshDir("chain");
  WriteAttackModules(dir);
  auto server = ServerProcess::StartWithFunctions({dir}, 1, {"--allow-module=myviews"});
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();

  auto set_path = Call(*client, v1::SHOW, "myviews.__setattr__",
                       R"(["__path__", ["/usr/lib/python3.11"]])");
  ExpectRefusedNamingTheServerFlag(set_path.status());
  auto run = Call(*client, v1::REWRITE, "myviews.subprocess.getoutput", R"(["id"])");
  EXPECT_FALSE(run.ok());
  EXPECT_THAT(run.ok() ? run->reply() : std::string(run.status().message()),
              Not(HasSubstr("uid=")));

  auto secret = Call(*client, v1::SHOW, "myviews.__getattribute__", R"(["SECRET"])");
  ExpectRefusedNamingTheServerFlag(secret.status());
  EXPECT_THAT(secret.status().message(), Not(HasSubstr("s3cr3t")));

  auto evil = Call(*client, v1::SHOW, "myviews_evil.f", "[null, {}]");
  ExpectRefusedNamingTheServerFlag(evil.status());
  EXPECT_THAT(evil.status().message(), HasSubstr("cnp-server with --allow-module=myviews_evil"));
  EXPECT_FALSE(Exists(dir + "/marker")) << "a refused module's top-level code ran";

  auto resolved = client->Resolve({"myviews.__setattr__", "myviews.Klass", "this.s"});
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  for (const v1::ResolvedFunction& f : resolved->functions()) {
    EXPECT_EQ(f.error_code(), 7) << f.function() << ": " << f.error();  // PERMISSION_DENIED
  }

  auto state = Call(*client, v1::SHOW, "myviews.state", "[null, {}]");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_THAT(state->reply(), HasSubstr("secret=s3cr3t-value path=False present=f,show,state,names,lam imported= "));
}

TEST(AllowListServerTest, HugeAndNulNamesAreRefusedWithShortMessagesAndLogs) {
  std::string dir = FreshDir("names");
  WriteAttackModules(dir);
  auto server = ServerProcess::StartWithFunctions({dir}, 1);
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  std::string huge = "myviews.show|" + std::string(1 << 20, ' ') + "1";
  for (int i = 0; i < 10; ++i) {
    auto reply = Call(*client, v1::SHOW, huge, "[null, {}]");
    EXPECT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_LT(reply.status().message().size(), 400u);
  }
  auto nul = Call(*client, v1::SHOW, std::string("myviews.show\0x", 14), "[null, {}]");
  EXPECT_EQ(nul.status().code(), absl::StatusCode::kInvalidArgument);
  auto fine = Call(*client, v1::SHOW, "myviews.show", "[null, {}]");
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_LT(server->Log().size(), 64u * 1024);
}

// Issue 8: edit the module, bump @version, and every path picks it up without a restart.
class CodeUpdateServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir("update");
    Write(1, "old");
    server_ = ServerProcess::StartWithFunctions({dir_}, 2, {"--allow-module=evolving"});
    ASSERT_NE(server_, nullptr);
    client_ = server_->Connect();
  }
  void Write(int version, const std::string& label) {
    WriteModule(dir_ + "/evolving.py", VersionedModule(dir_, "evolving", version, label));
  }
  int Imports() const {
    std::vector<std::string> lines =
        absl::StrSplit(ReadFile(dir_ + "/evolving.imports"), '\n', absl::SkipEmpty());
    return static_cast<int>(lines.size());
  }

  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(CodeUpdateServerTest, MapPicksUpABumpedVersion) {
  // Two calls in flight at once load the module on both workers.
  std::vector<std::string> docs(200, R"({"_id":"a"})");
  auto first = client_->Map({"evolving.f|1"}, docs);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->results(0).rows(), R"([[["old",1]]])");
  Write(2, "new");
  for (int i = 0; i < 4; ++i) {
    auto second = client_->Map({"evolving.f|2"}, docs);
    ASSERT_TRUE(second.ok()) << second.status() << server_->Log();
    EXPECT_EQ(second->results(199).rows(), R"([[["new",2]]])");
  }
}

TEST_F(CodeUpdateServerTest, ResolvePicksUpABumpedVersion) {
  auto before = client_->Resolve({"evolving.f", "evolving.f|1"});
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->functions(0).versioned_name(), "evolving.f|1");
  Write(2, "new");
  auto after = client_->Resolve({"evolving.f", "evolving.f|2"});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->functions(0).versioned_name(), "evolving.f|2");
  EXPECT_EQ(after->functions(1).error(), "");
  EXPECT_EQ(after->functions(1).version(), 2);
}

TEST_F(CodeUpdateServerTest, SessionAddFunPicksUpABumpedVersion) {
  auto stub = v1::Functions::NewStub(
      grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->Session(&context);
  auto exchange = [&](const std::string& line) {
    v1::SessionInput input;
    input.set_line(line);
    EXPECT_TRUE(stream->Write(input));
    v1::SessionOutput output;
    EXPECT_TRUE(stream->Read(&output));
    return absl::StrJoin(output.lines(), "\n");
  };
  EXPECT_EQ(exchange(R"(["add_fun","evolving.f|1"])"), "true");
  EXPECT_EQ(exchange(R"(["map_doc",{"_id":"a"}])"), R"([[["old",1]]])");
  Write(2, "new");
  // CouchDB resets and adds the functions of the saved design document.
  v1::SessionInput reset;
  reset.set_line(R"(["reset"])");
  ASSERT_TRUE(stream->Write(reset));
  EXPECT_EQ(exchange(R"(["add_fun","evolving.f|2"])"), "true");
  EXPECT_EQ(exchange(R"(["map_doc",{"_id":"a"}])"), R"([[["new",2]]])");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(CodeUpdateServerTest, AStaleVersionStartsNoWorkerAndImportsNothing) {
  Write(2, "new");
  std::vector<std::string> docs(50, R"({"_id":"a"})");
  ASSERT_TRUE(client_->Map({"evolving.f|2"}, docs).ok());
  int workers = WorkersStarted(*server_);
  int imports = Imports();
  EXPECT_EQ(workers, 2);
  for (int i = 0; i < 100; ++i) {
    auto stale = client_->Map({"evolving.f|1"}, {R"({"_id":"a"})"});
    ASSERT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(stale.status().message(), HasSubstr("Loaded version 2 did not match expected version 1"));
  }
  EXPECT_EQ(WorkersStarted(*server_), workers) << server_->Log();
  EXPECT_EQ(Imports(), imports);
}

}  // namespace
}  // namespace cnp::security::testing
