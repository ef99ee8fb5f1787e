// Two kinds of module Python loads without io.open_code, so that the bytecode guard
// (code_file_guard.h) did not see them: a bare NAME.pyc with no NAME.py beside it (CPython
// 3.11's SourcelessFileLoader reads it with io.FileIO), and an extension module (NAME.so,
// NAME.cpython-311-x86_64-linux-gnu.so), which _imp.create_dynamic dlopens by its name. Planted
// where another user may write - the file, or for an extension (opened by name, so it could be
// swapped) its directory - either ran its code as the worker when a module the request names
// imported it, and an extension in a package directory others may write to even when the
// request named it (the module policy checks the file, not the package's directory). Each is
// refused now with the guard's message, its code never run (no marker); each control shows the
// same plant running once nobody else could have written it.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/allowlist/modules.h"
#include "tests/support/runfiles.h"
#include "tests/support/spawn.h"
#include "tests/support/worker_process.h"

namespace cnp::security::testing {
namespace {

using ::cnp::worker::testing::MapTask;
using ::cnp::worker::testing::Reply;
using ::cnp::worker::testing::WorkerProcess;
using ::cnp::worker::v1::Failure;
using ::testing::HasSubstr;

constexpr const char* kImportsPlanted =
    "import planted\ndef by_town(doc):\n    yield planted.WHO, 1\n";

struct Fixture {
  std::string dir;
  std::unique_ptr<WorkerProcess> worker;
  Reply Map(const std::string& function) const {
    return worker->Call(MapTask({function}, {R"({"town":"Oslo"})"}));
  }
};

Fixture Start() {
  Fixture t;
  t.dir = FreshDir("loaders");
  ::chmod(t.dir.c_str(), 0755);
  auto worker = WorkerProcess::Start({"--python-path=" + t.dir});
  EXPECT_TRUE(worker.ok()) << worker.status();
  if (worker.ok()) t.worker = *std::move(worker);
  return t;
}

// Writes `path` as a bare bytecode file holding `code` compiled, the way an attacker plants
// one: Python 3.11's own importlib builds it (a sourceless file's header is not compared with
// any source).
// `compiled_as` is the file name its code objects carry (co_filename): `path` itself, or the
// source's, as `python -m compileall -b` leaves it once the source is removed.
void PlantBytecode(const std::string& path, const std::string& code,
                   const std::string& compiled_as = "") {
  constexpr const char* kPlant = R"PY(
import importlib._bootstrap_external as bootstrap, sys
path, code, compiled_as = sys.argv[1], sys.argv[2], sys.argv[3] or sys.argv[1]
with open(path, "wb") as out:
    out.write(bootstrap._code_to_timestamp_pyc(compile(code, compiled_as, "exec"), 0, 0))
)PY";
  absl::StatusOr<pid_t> pid = cnp::testing::Spawn(
      {.argv = {"python3.11", "-I", "-c", kPlant, path, code, compiled_as}});
  ASSERT_TRUE(pid.ok()) << pid.status();
  ASSERT_EQ(cnp::testing::ExitCode(cnp::testing::WaitForExit(*pid)), 0) << "planting " << path;
}

// Module-level code that leaves `marker` behind, and what the map function yields.
std::string PlantedModule(const std::string& marker) {
  return absl::StrCat("open('", marker, "', 'w').close()\n", "WHO = 'planted bytecode'\n",
                      "def by_town(doc):\n    yield WHO, 1\n");
}

// Copies the extension module built from planted_extension.cc to `path`, with `mode`. Its
// init function leaves `marker` in the directory it was loaded from.
void PlantExtension(const std::string& path, mode_t mode) {
  std::error_code error;
  std::filesystem::copy_file(
      cnp::testing::Runfile("tests/security/allowlist/planted_extension.so"), path, error);
  ASSERT_FALSE(error) << path << ": " << error.message();
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

void ExpectRefused(const Reply& reply, const std::string& file, const std::string& fix,
                   const std::string& marker) {
  EXPECT_FALSE(Exists(marker)) << "the planted code ran";
  ASSERT_TRUE(reply.has_failure()) << reply.DebugString();
  EXPECT_EQ(reply.failure().code(), Failure::PERMISSION_DENIED) << reply.DebugString();
  EXPECT_THAT(reply.failure().message(), HasSubstr("is not allowed"));
  EXPECT_THAT(reply.failure().message(), HasSubstr(file));
  EXPECT_THAT(reply.failure().message(), HasSubstr(fix));
}

// The guard's refusal (code_file_guard.h), not the module policy's check of a named module.
void ExpectRefusedByTheGuard(const Reply& reply, const std::string& file, const std::string& fix,
                             const std::string& marker) {
  ExpectRefused(reply, file, fix, marker);
  EXPECT_THAT(reply.failure().message(), HasSubstr("cnp-worker does not load " + file));
}

void ExpectRan(const Reply& reply, const std::string& who, const std::string& marker) {
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), absl::StrCat(R"([[[")", who, R"(",1]]])"));
  EXPECT_TRUE(Exists(marker)) << "the plant did not run: the control shows nothing";
}

TEST(BareBytecodeTest, ABarePycAModuleImportsIsHeldToTheRule) {
  Fixture t = Start();
  const std::string marker = t.dir + "/marker";
  const std::string pyc = t.dir + "/planted.pyc";
  WriteModule(t.dir + "/myviews.py", kImportsPlanted);
  PlantBytecode(pyc, PlantedModule(marker));
  ASSERT_EQ(::chmod(pyc.c_str(), 0666), 0);
  Reply reply = t.Map("myviews.by_town");
  ExpectRefusedByTheGuard(reply, pyc, "chmod go-w " + pyc, marker);
  EXPECT_THAT(reply.failure().message(), HasSubstr("is writable by every user (mode 0666)"));

  // Private to another user: refused the same way. (Root may give a file away; elsewhere the
  // test has nobody to give it to.)
  ASSERT_EQ(::chmod(pyc.c_str(), 0644), 0);
  if (::geteuid() == 0 && ::chown(pyc.c_str(), 65534, 65534) == 0) {
    Reply foreign = t.Map("myviews.by_town");
    ExpectRefusedByTheGuard(foreign, pyc, "chown " + pyc + " to root or uid 0", marker);
    EXPECT_THAT(foreign.failure().message(), HasSubstr("belongs to uid 65534"));
    ASSERT_EQ(::chown(pyc.c_str(), 0, 0), 0);
  }

  // Control: nobody else may write to it, so it is a module like any other, and it runs.
  ExpectRan(t.Map("myviews.by_town"), "planted bytecode", marker);
}

// The module policy checked a named module's file before the guard existed; named, a bare .pyc
// is refused by it (and, if it changed after that check, by the guard).
TEST(BareBytecodeTest, ANamedBarePycOthersMayWriteToIsRefused) {
  Fixture t = Start();
  const std::string marker = t.dir + "/marker";
  const std::string pyc = t.dir + "/planted.pyc";
  PlantBytecode(pyc, PlantedModule(marker));
  ASSERT_EQ(::chmod(pyc.c_str(), 0664), 0);
  ExpectRefused(t.Map("planted.by_town"), pyc, "chmod go-w " + pyc, marker);

  ASSERT_EQ(::chmod(pyc.c_str(), 0644), 0);
  ExpectRan(t.Map("planted.by_town"), "planted bytecode", marker);
}

// A module shipped as bytecode alone, compiled in place (compileall -b) and its source
// removed: its functions name the missing source as their file, which is no reason to refuse
// them (found by a review: the check of the way to a function's file refused a file it could
// not find).
TEST(BareBytecodeTest, AModuleShippedAsBytecodeAloneRuns) {
  Fixture t = Start();
  const std::string marker = t.dir + "/marker";
  PlantBytecode(t.dir + "/shipped.pyc", PlantedModule(marker), t.dir + "/shipped.py");
  ExpectRan(t.Map("shipped.by_town"), "planted bytecode", marker);
}

TEST(ExtensionModuleTest, AnExtensionAModuleImportsIsHeldToTheRule) {
  Fixture t = Start();
  const std::string marker = t.dir + "/marker";
  const std::string so = t.dir + "/planted.cpython-311-x86_64-linux-gnu.so";
  WriteModule(t.dir + "/myviews.py", kImportsPlanted);
  PlantExtension(so, 0775);
  Reply reply = t.Map("myviews.by_town");
  ExpectRefusedByTheGuard(reply, so, "chmod go-w " + so, marker);
  EXPECT_THAT(reply.failure().message(), HasSubstr("is writable by its group (mode 0775)"));

  ASSERT_EQ(::chmod(so.c_str(), 0755), 0);
  ExpectRan(t.Map("myviews.by_town"), "planted extension", marker);
}

// dlopen opens an extension by its name: whoever may write to its directory could put another
// file there under that name between any check of the file and the load.
TEST(ExtensionModuleTest, AnExtensionInADirectoryOthersMayWriteToIsRefused) {
  Fixture t = Start();
  const std::string package = t.dir + "/views";
  ASSERT_EQ(::mkdir(package.c_str(), 0755), 0);
  WriteModule(package + "/__init__.py", "");
  const std::string marker = package + "/marker";
  const std::string so = package + "/planted.so";
  WriteModule(t.dir + "/myviews.py",
              "from views import planted\ndef by_town(doc):\n    yield planted.WHO, 1\n");
  PlantExtension(so, 0755);
  ASSERT_EQ(::chmod(package.c_str(), 0777), 0);
  Reply reply = t.Map("myviews.by_town");
  ExpectRefusedByTheGuard(reply, so, "chmod go-w " + package, marker);
  EXPECT_THAT(reply.failure().message(), HasSubstr("is writable by every user (mode 0777)"));

  ASSERT_EQ(::chmod(package.c_str(), 0755), 0);
  ExpectRan(t.Map("myviews.by_town"), "planted extension", marker);
}

// Named by the request, an extension's file is checked by the module policy; its package's
// directory was not, and the import ran the extension's code before the function was looked for.
// (Since the security review's symlink finding, the policy refuses a package whose directory
// others may write to before anything in it is imported: so here, at `views` itself.)
TEST(ExtensionModuleTest, ANamedExtensionIsCheckedBeforeItLoads) {
  Fixture t = Start();
  const std::string package = t.dir + "/views";
  ASSERT_EQ(::mkdir(package.c_str(), 0755), 0);
  WriteModule(package + "/__init__.py", "");
  const std::string marker = package + "/marker";
  const std::string so = package + "/planted.so";
  PlantExtension(so, 0755);
  ASSERT_EQ(::chmod(package.c_str(), 0777), 0);
  Reply refused = t.Map("views.planted.by_town");
  ExpectRefused(refused, package + "/__init__.py", "chmod go-w " + package, marker);
  EXPECT_THAT(refused.failure().message(), HasSubstr("whose directory is writable by every user"));

  const std::string top = t.dir + "/planted.so";
  PlantExtension(top, 0666);
  ExpectRefused(t.Map("planted.by_town"), top, "chmod go-w " + top, t.dir + "/marker");
}

}  // namespace
}  // namespace cnp::security::testing
