// --preload-module: a worker imports the module as it starts, before it answers anything, so
// that an import slower than CouchDB's timeout is not run under it (where the worker was killed
// mid-import, and every worker after it too). What the import refuses or fails is logged and
// the worker serves on.
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::cnp::testing::MakeTempDir;
using ::cnp::testing::ReadFile;
using ::cnp::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;

// A code directory holding `module`.py, whose top-level code appends a line to
// <dir>/../<module>.imports each time it runs, and whose `town` emits the document's town.
class PreloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = MakeTempDir("preload");
    ASSERT_FALSE(base_.empty());
    code_ = base_ + "/code";
    ASSERT_EQ(::mkdir(code_.c_str(), 0755), 0);
  }

  void WriteCountingModule(const std::string& module, const std::string& more = "") {
    WriteFile(code_ + "/" + module + ".py",
              absl::StrCat("open('", base_, "/", module, ".imports', 'a').write('import\\n')\n",
                           more, "\ndef town(doc):\n    yield doc['town'], 1\n"),
              0644);
  }

  int Imports(const std::string& module) const {
    return static_cast<int>(std::vector<std::string>(
        absl::StrSplit(ReadFile(base_ + "/" + module + ".imports"), '\n', absl::SkipEmpty()))
                                .size());
  }

  // A worker over the code directory with `args`, once it has answered the server's start
  // handshake (an empty resolve): its start, preloads included, is over.
  std::unique_ptr<WorkerProcess> Started(std::vector<std::string> args) {
    args.insert(args.begin(), "--python-path=" + code_);
    absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = WorkerProcess::Start(args);
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (!worker.ok()) return nullptr;
    Task handshake_task;
    handshake_task.mutable_resolve();
    Reply handshake = (*worker)->Call(handshake_task);
    EXPECT_TRUE(handshake.has_resolve()) << handshake.DebugString();
    return *std::move(worker);
  }

  std::string base_;
  std::string code_;
};

constexpr char kOslo[] = R"({"_id":"a","town":"Oslo"})";

TEST_F(PreloadTest, TheModuleIsImportedBeforeTheFirstTaskAndNotAgain) {
  WriteCountingModule("towns");
  std::unique_ptr<WorkerProcess> worker = Started({"--preload-module=towns"});
  ASSERT_NE(worker, nullptr);
  // Imported during the start, before any task named it.
  EXPECT_EQ(Imports("towns"), 1);
  EXPECT_THAT(worker->ReadStderr(), HasSubstr("preloaded module towns in "));
  Reply reply = worker->Call(MapTask({"towns.town"}, {kOslo}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["Oslo",1]]])");
  EXPECT_EQ(Imports("towns"), 1);
  EXPECT_EQ(worker->CloseAndWait(), 0);
}

TEST_F(PreloadTest, ASubmoduleAndThePackagesAboveItArePreloaded) {
  ASSERT_EQ(::mkdir((code_ + "/views").c_str(), 0755), 0);
  WriteFile(code_ + "/views/__init__.py", "", 0644);
  WriteCountingModule("views/towns");
  // The counter file of views/towns.py is <base>/views/towns.imports.
  ASSERT_EQ(::mkdir((base_ + "/views").c_str(), 0755), 0);
  std::unique_ptr<WorkerProcess> worker = Started({"--preload-module=views.towns"});
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(Imports("views/towns"), 1);
  Reply reply = worker->Call(MapTask({"views.towns.town"}, {kOslo}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["Oslo",1]]])");
  EXPECT_EQ(Imports("views/towns"), 1);
}

// The same checks as a function of the module gets before its import: nothing is imported on
// behalf of a module --allow-module does not cover, nor of the standard library.
TEST_F(PreloadTest, AModuleThePolicyRefusesIsNotImported) {
  WriteCountingModule("towns");
  WriteCountingModule("secrets_of_others");
  std::unique_ptr<WorkerProcess> worker = Started(
      {"--allow-module=towns", "--preload-module=secrets_of_others", "--preload-module=shutil"});
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(Imports("secrets_of_others"), 0);
  const std::string log = worker->ReadStderr();
  EXPECT_THAT(log, HasSubstr("--preload-module=secrets_of_others: PermissionError: "
                             "secrets_of_others is not allowed"));
  EXPECT_THAT(log, HasSubstr("--preload-module=shutil: PermissionError: shutil is not allowed"));
  EXPECT_THAT(log, HasSubstr("standard library"));
  // The worker serves what it may.
  Reply reply = worker->Call(MapTask({"towns.town"}, {kOslo}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["Oslo",1]]])");
}

TEST_F(PreloadTest, AnImportThatFailsIsLoggedAndTheWorkerServesOn) {
  WriteCountingModule("towns");
  WriteCountingModule("raises", "raise RuntimeError('no database configured')\n");
  std::unique_ptr<WorkerProcess> worker = Started(
      {"--preload-module=raises", "--preload-module=no_such_views", "--preload-module=towns",
       "--preload-module=bad..name"});
  ASSERT_NE(worker, nullptr);
  const std::string log = worker->ReadStderr();
  EXPECT_THAT(log, HasSubstr("--preload-module=raises: importing raises: RuntimeError: no "
                             "database configured"));
  EXPECT_THAT(log, HasSubstr("--preload-module=no_such_views: "));
  EXPECT_THAT(log, HasSubstr("No module named 'no_such_views'"));
  EXPECT_THAT(log, HasSubstr("--preload-module=bad..name: 'bad..name' is not a module name"));
  EXPECT_THAT(log, HasSubstr("its functions will be imported when first called"));
  // The modules after a failed one are preloaded all the same.
  EXPECT_EQ(Imports("towns"), 1);
  EXPECT_THAT(log, Not(HasSubstr("preloaded module raises")));
  // A call of the module that failed runs its import again, and answers its error.
  Reply reply = worker->Call(MapTask({"raises.town"}, {kOslo}));
  EXPECT_EQ(Imports("raises"), 2);
  EXPECT_THAT(reply.DebugString(), HasSubstr("no database configured"));
}

}  // namespace
}  // namespace cnp::worker::testing
