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

// A virtualenv's site-packages and what its .pth files add hold installed libraries: their
// modules run only when --allow-module names them (a virtualenv always holds pip and
// setuptools, whose functions run programs).
TEST(EnvironmentTest, VirtualenvSitePackagesAndTheirPthFilesAreLibraries) {
  fs::path root = fs::path(std::getenv("TEST_TMPDIR")) / "venv";
  fs::path site = root / "lib/python3.11/site-packages";
  fs::path extra = root / "editable";
  fs::create_directories(site);
  fs::create_directories(extra);
  std::ofstream(site / "venv_fns.py") << "def one(doc):\n    yield 'venv', 1\n";
  std::ofstream(extra / "editable_fns.py") << "def two(doc):\n    yield 'editable', 2\n";
  std::ofstream(site / "editable.pth") << extra.string() << "\n";

  absl::StatusOr<std::unique_ptr<WorkerProcess>> refusing =
      WorkerProcess::Start({absl::StrCat("--virtualenv=", root.string())});
  ASSERT_TRUE(refusing.ok());
  for (const char* function : {"venv_fns.one", "editable_fns.two"}) {
    Reply refused = (*refusing)->Call(MapTask({function}, {"{}"}));
    ASSERT_TRUE(refused.has_failure()) << refused.DebugString();
    EXPECT_EQ(refused.failure().code(), v1::Failure::PERMISSION_DENIED);
    EXPECT_THAT(refused.failure().message(), HasSubstr("installed library code"));
  }

  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start({absl::StrCat("--virtualenv=", root.string()),
                            "--allow-module=venv_fns", "--allow-module=editable_fns"});
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
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr("--virtualenv /nonexistent/venv is not a directory"));
  // A directory that is no virtualenv of this Python (one of another version, or none).
  const std::string not_a_venv = (fs::path(std::getenv("TEST_TMPDIR")) / "not-a-venv").string();
  fs::create_directories(not_a_venv);
  fs::permissions(not_a_venv, fs::perms(0755));
  worker = WorkerProcess::Start({"--virtualenv=" + not_a_venv});
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ((*worker)->CloseAndWait(), 1);
  EXPECT_THAT((*worker)->ReadStderr(),
              HasSubstr(not_a_venv + "/lib/python3.11/site-packages is not a directory"));
}

// The worker checks the directories it puts on sys.path itself: cnp-server checked the flags
// at start, but a virtualenv's .pth files name more, and a directory may change since.
TEST(EnvironmentTest, ACodeDirectoryOthersMayWriteToStopsTheWorker) {
  fs::path open = fs::path(std::getenv("TEST_TMPDIR")) / "open";
  fs::create_directories(open);
  fs::permissions(open, fs::perms::all);
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start({absl::StrCat("--python-path=", open.string())});
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ((*worker)->CloseAndWait(), 1);
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr(absl::StrCat("chmod go-w ", open.string())));

  fs::path root = fs::path(std::getenv("TEST_TMPDIR")) / "venv-with-open-pth";
  fs::path site = root / "lib/python3.11/site-packages";
  fs::create_directories(site);
  std::ofstream(site / "open.pth") << open.string() << "\n";
  worker = WorkerProcess::Start({absl::StrCat("--virtualenv=", root.string())});
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ((*worker)->CloseAndWait(), 1);
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr("a .pth file of --virtualenv added"));
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr(absl::StrCat("chmod go-w ", open.string())));
}

// cnp-server refuses a virtualenv directory others may write to, sticky bit or not (they could
// add a site-packages of their own); the worker, which checked only the site-packages below
// it, took one with the sticky bit. Both check the list of common/code_directories.h now.
TEST(EnvironmentTest, AVirtualenvOthersMayWriteToStopsTheWorkerAsItStopsTheServer) {
  fs::path root = fs::path(std::getenv("TEST_TMPDIR")) / "sticky-venv";
  fs::create_directories(root / "lib/python3.11/site-packages");
  fs::permissions(root, fs::perms::all | fs::perms::sticky_bit);
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start({absl::StrCat("--virtualenv=", root.string())});
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ((*worker)->CloseAndWait(), 1);
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr(absl::StrCat("--virtualenv ", root.string())));
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr(absl::StrCat("chmod go-w ", root.string())));
}

TEST(EnvironmentTest, SysStdoutIsStderr) {
  auto worker = WorkerProcess::StartWithFunctions();
  Reply reply = worker->Call(MapTask({"worker_env.stdout_is_stderr"}, {"{}"}));
  ASSERT_TRUE(reply.has_map());
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["stdout",true]]])");
}

}  // namespace
}  // namespace cnp::worker::testing
