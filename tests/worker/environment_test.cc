// The worker's Python environment: what is on sys.path, and what the policy then allows.
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

namespace fs = std::filesystem;

std::string SysPath(WorkerProcess& worker) {
  Reply reply = worker.Call(MapTask({"worker_env.sys_path"}, {"{}"}));
  EXPECT_TRUE(reply.has_map()) << reply.DebugString();
  return reply.has_map() ? reply.map().results(0).rows() : "";
}

TEST(EnvironmentTest, SysPathIsStdlibPackageAndOperatorDirectoriesOnly) {
  auto worker = WorkerProcess::StartWithFunctions();
  std::string path = SysPath(*worker);
  EXPECT_THAT(path, HasSubstr("\"/usr/lib/python3.11\""));
  EXPECT_THAT(path, HasSubstr("/service/python\""));
  EXPECT_THAT(path, HasSubstr(absl::StrCat("\"", FunctionsDir(), "\"")));
  EXPECT_THAT(path, Not(HasSubstr("\"\"")));              // not the current directory
  EXPECT_THAT(path, Not(HasSubstr("dist-packages")));     // not Debian's site directories
  EXPECT_THAT(path, Not(HasSubstr("site-packages")));     // not the user's either
}

TEST(EnvironmentTest, PythonPathVariableIsAnOperatorDirectory) {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start({}, {absl::StrCat("PYTHONPATH=", FunctionsDir())});
  ASSERT_TRUE(worker.ok());
  Reply reply = (*worker)->Call(MapTask({"worker_views.town"}, {R"({"town":"Oslo"})"}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["Oslo",1]]])");
}

TEST(EnvironmentTest, VirtualenvSitePackagesAndTheirPthFilesAreOperatorDirectories) {
  fs::path root = fs::path(std::getenv("TEST_TMPDIR")) / "venv";
  fs::path site = root / "lib/python3.11/site-packages";
  fs::path extra = root / "editable";
  fs::create_directories(site);
  fs::create_directories(extra);
  std::ofstream(site / "venv_fns.py") << "def one(doc):\n    yield 'venv', 1\n";
  std::ofstream(extra / "editable_fns.py") << "def two(doc):\n    yield 'editable', 2\n";
  std::ofstream(site / "editable.pth") << extra.string() << "\n";

  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start({absl::StrCat("--virtualenv=", root.string())});
  ASSERT_TRUE(worker.ok());
  Reply reply = (*worker)->Call(MapTask({"venv_fns.one", "editable_fns.two"}, {"{}"}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["venv",1]],[["editable",2]]])");
}

TEST(EnvironmentTest, MissingVirtualenvStopsTheWorkerWithAReason) {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start({"--virtualenv=/nonexistent/venv"});
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ((*worker)->CloseAndWait(), 1);
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr("/nonexistent/venv/lib/python3.11/site-packages is not a directory"));
}

TEST(EnvironmentTest, SysStdoutIsStderr) {
  auto worker = WorkerProcess::StartWithFunctions();
  Reply reply = worker->Call(MapTask({"worker_env.stdout_is_stderr"}, {"{}"}));
  ASSERT_TRUE(reply.has_map());
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["stdout",true]]])");
}

}  // namespace
}  // namespace cnp::worker::testing
