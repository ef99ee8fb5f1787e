// Python runs a module's bytecode cache (__pycache__/NAME.cpython-311.pyc) instead of its source
// whenever the cache's header matches the source's mtime and size. A cache another user could
// write (its file, or the __pycache__ directory it is in) is theirs to fill with any code, the
// source untouched: cnp-worker refuses it for the function's module, a package above it, and a
// module it imports, naming the file and the fix. Each planted cache here is a valid one (the
// control shows Python running it once nobody else could have written it). The same guard
// checks the virtualenv's .pth files, whose `import` lines run as the worker starts.
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/allowlist/modules.h"
#include "tests/support/spawn.h"
#include "tests/support/worker_process.h"

namespace cnp::security::testing {
namespace {

using ::cnp::worker::testing::MapTask;
using ::cnp::worker::testing::Reply;
using ::cnp::worker::testing::WorkerProcess;
using ::cnp::worker::v1::Failure;
using ::testing::HasSubstr;

// Writes the bytecode cache Python would look for next to `source`, holding `code` compiled, with
// the header (magic, mtime, size) of `source` as it is now, the way an attacker plants one:
// Python 3.11's own importlib builds it.
void PlantCache(const std::string& source, const std::string& code) {
  constexpr const char* kPlant = R"PY(
import importlib._bootstrap_external as bootstrap, importlib.util, os, sys
source, code = sys.argv[1], sys.argv[2]
st = os.stat(source)
cache = importlib.util.cache_from_source(source)
os.makedirs(os.path.dirname(cache), exist_ok=True)
data = bootstrap._code_to_timestamp_pyc(compile(code, source, "exec"), int(st.st_mtime), st.st_size)
with open(cache, "wb") as out:
    out.write(data)
)PY";
  absl::StatusOr<pid_t> pid =
      cnp::testing::Spawn({.argv = {"python3.11", "-I", "-c", kPlant, source, code}});
  ASSERT_TRUE(pid.ok()) << pid.status();
  ASSERT_EQ(cnp::testing::ExitCode(cnp::testing::WaitForExit(*pid)), 0) << "planting a cache";
}

// Module-level code that leaves `marker` behind, and a map function saying it was planted.
std::string Planted(const std::string& marker) {
  return absl::StrCat("open('", marker, "', 'w').close()\n",
                      "def by_town(doc):\n    yield 'planted', 1\n");
}

constexpr const char* kHonest = "def by_town(doc):\n    yield doc.get('town'), 1\n";

struct Fixture {
  std::string dir;
  std::unique_ptr<WorkerProcess> worker;
  std::string marker() const { return dir + "/marker"; }
  std::string cache_dir() const { return dir + "/__pycache__"; }
  Reply Map(const std::string& function) const {
    return worker->Call(MapTask({function}, {R"({"town":"Oslo"})"}));
  }
};

Fixture Start() {
  Fixture t;
  t.dir = FreshDir("bytecode");
  ::chmod(t.dir.c_str(), 0755);
  auto worker = WorkerProcess::Start({"--python-path=" + t.dir});
  EXPECT_TRUE(worker.ok()) << worker.status();
  if (worker.ok()) t.worker = *std::move(worker);
  return t;
}

void ExpectRefused(const Fixture& t, const Reply& reply, const std::string& fix) {
  ASSERT_TRUE(reply.has_failure()) << reply.DebugString();
  EXPECT_EQ(reply.failure().code(), Failure::PERMISSION_DENIED) << reply.DebugString();
  EXPECT_THAT(reply.failure().message(), HasSubstr("is not allowed"));
  EXPECT_THAT(reply.failure().message(), HasSubstr(fix));
  EXPECT_FALSE(Exists(t.marker())) << "the planted cache ran";
}

void ExpectPlantedRan(const Fixture& t, const Reply& reply) {
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["planted",1]]])");
  EXPECT_TRUE(Exists(t.marker()));
}

TEST(BytecodeCacheTest, APlantedCacheInACacheDirectoryOthersMayWriteToIsRefused) {
  Fixture t = Start();
  WriteModule(t.dir + "/myviews.py", kHonest);
  PlantCache(t.dir + "/myviews.py", Planted(t.marker()));
  ::chmod(t.cache_dir().c_str(), 0777);
  Reply reply = t.Map("myviews.by_town");
  ExpectRefused(t, reply, "chmod go-w " + t.cache_dir());
  EXPECT_THAT(reply.failure().message(),
              HasSubstr(t.cache_dir() + "/myviews.cpython-311.pyc"));
  EXPECT_THAT(reply.failure().message(), HasSubstr("is writable by every user (mode 0777)"));
  EXPECT_THAT(reply.failure().message(), HasSubstr("remove " + t.cache_dir()));

  // Control: nobody else may write to it now, so it is Python's cache like any other, and the
  // code in it runs (the plant above was one Python takes).
  ::chmod(t.cache_dir().c_str(), 0755);
  ExpectPlantedRan(t, t.Map("myviews.by_town"));
}

TEST(BytecodeCacheTest, ACacheFileItsGroupMayWriteIsRefused) {
  Fixture t = Start();
  WriteModule(t.dir + "/myviews.py", kHonest);
  PlantCache(t.dir + "/myviews.py", Planted(t.marker()));
  std::string cache = t.cache_dir() + "/myviews.cpython-311.pyc";
  ::chmod(t.cache_dir().c_str(), 0755);
  ::chmod(cache.c_str(), 0664);
  Reply reply = t.Map("myviews.by_town");
  ExpectRefused(t, reply, "chmod go-w " + cache);
  EXPECT_THAT(reply.failure().message(), HasSubstr("is writable by its group (mode 0664)"));
}

TEST(BytecodeCacheTest, AnImportedModulesPlantedCacheIsRefused) {
  Fixture t = Start();
  WriteModule(t.dir + "/helper.py", "def town(doc):\n    return doc.get('town')\n");
  WriteModule(t.dir + "/myviews.py",
              "import helper\ndef by_town(doc):\n    yield helper.town(doc), 1\n");
  PlantCache(t.dir + "/helper.py",
             absl::StrCat("open('", t.marker(), "', 'w').close()\n",
                          "def town(doc):\n    return 'planted'\n"));
  ::chmod(t.cache_dir().c_str(), 0777);
  Reply reply = t.Map("myviews.by_town");
  ExpectRefused(t, reply, "chmod go-w " + t.cache_dir());
  EXPECT_THAT(reply.failure().message(), HasSubstr(t.cache_dir() + "/helper.cpython-311.pyc"));
}

TEST(BytecodeCacheTest, APackagesPlantedCacheIsRefused) {
  Fixture t = Start();
  std::string package = t.dir + "/views";
  ASSERT_EQ(::mkdir(package.c_str(), 0755), 0);
  WriteModule(package + "/__init__.py", "");
  WriteModule(package + "/towns.py", kHonest);
  PlantCache(package + "/__init__.py", absl::StrCat("open('", t.marker(), "', 'w').close()\n"));
  ::chmod((package + "/__pycache__").c_str(), 0775);
  Reply reply = t.Map("views.towns.by_town");
  ExpectRefused(t, reply, "chmod go-w " + package + "/__pycache__");
  EXPECT_THAT(reply.failure().message(), HasSubstr("is writable by its group (mode 0775)"));

  // A cache planted for the module itself, in the package's private __pycache__, by whoever
  // owns it: another user. (Root may give a file away; elsewhere the test has nobody to give
  // it to.)
  ::chmod((package + "/__pycache__").c_str(), 0755);
  ::unlink((package + "/__pycache__/__init__.cpython-311.pyc").c_str());
  PlantCache(package + "/towns.py", Planted(t.marker()));
  std::string cache = package + "/__pycache__/towns.cpython-311.pyc";
  if (::geteuid() != 0 || ::chown(cache.c_str(), 65534, 65534) != 0) {
    GTEST_SKIP() << "cannot give " << cache << " to another user";
  }
  Reply foreign = t.Map("views.towns.by_town");
  ExpectRefused(t, foreign, "chown " + cache + " to root or uid 0");
  EXPECT_THAT(foreign.failure().message(), HasSubstr("belongs to uid 65534"));
}

// The module policy checks the file of the module a request names; a module that one imports
// is read through the guard, so its source is held to the same rule.
TEST(CodeFileGuardTest, AnImportedModuleOthersMayWriteToIsRefused) {
  Fixture t = Start();
  std::string helper = t.dir + "/helper.py";
  WriteModule(helper, absl::StrCat("open('", t.marker(), "', 'w').close()\n",
                                   "def town(doc):\n    return 'edited by someone else'\n"));
  ASSERT_EQ(::chmod(helper.c_str(), 0666), 0);
  WriteModule(t.dir + "/myviews.py",
              "import helper\ndef by_town(doc):\n    yield helper.town(doc), 1\n");
  Reply reply = t.Map("myviews.by_town");
  ExpectRefused(t, reply, "chmod go-w " + helper);
  EXPECT_THAT(reply.failure().message(), HasSubstr("is writable by every user (mode 0666)"));

  ASSERT_EQ(::chmod(helper.c_str(), 0644), 0);
  Reply control = t.Map("myviews.by_town");
  ASSERT_TRUE(control.has_map()) << control.DebugString();
  EXPECT_EQ(control.map().results(0).rows(), R"([[["edited by someone else",1]]])");
}

// A .pth file others may write to would run their `import` line in every worker: the worker
// stops before it runs, naming the file and the fix.
TEST(CodeFileGuardTest, AVirtualenvPthFileOthersMayWriteToStopsTheWorker) {
  std::string venv = FreshDir("venv");
  std::string site = venv;
  for (const char* part : {"", "/lib", "/python3.11", "/site-packages"}) {
    site += part;
    ::mkdir(site.c_str(), 0755);
    ASSERT_EQ(::chmod(site.c_str(), 0755), 0) << site;
  }
  std::string marker = venv + "/marker";
  std::string pth = site + "/planted.pth";
  WriteModule(pth, absl::StrCat("import os; open('", marker, "', 'w').close()\n"));
  ASSERT_EQ(::chmod(pth.c_str(), 0666), 0);
  auto worker = WorkerProcess::Start({"--virtualenv=" + venv});
  ASSERT_TRUE(worker.ok()) << worker.status();
  EXPECT_EQ((*worker)->CloseAndWait(), 1);
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr("chmod go-w " + pth));
  EXPECT_FALSE(Exists(marker)) << "the .pth file's import line ran";

  // Control: private, it is an ordinary .pth file, and its line runs.
  ASSERT_EQ(::chmod(pth.c_str(), 0644), 0);
  worker = WorkerProcess::Start({"--virtualenv=" + venv});
  ASSERT_TRUE(worker.ok()) << worker.status();
  EXPECT_EQ((*worker)->CloseAndWait(), 0) << (*worker)->ReadStderr();
  EXPECT_TRUE(Exists(marker));
}

}  // namespace
}  // namespace cnp::security::testing
