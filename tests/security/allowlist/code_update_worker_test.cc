// Issue 8 inside one long-lived worker: a module edited on disk with a bumped @version is
// imported anew when a caller asks for the new version - by every kind of task - and a stale
// version asked for again and again costs no import at all.
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/allowlist/modules.h"
#include "tests/support/worker_process.h"

namespace cnp::security::testing {
namespace {

using ::cnp::worker::testing::DesignTask;
using ::cnp::worker::testing::MapTask;
using ::cnp::worker::testing::Reply;
using ::cnp::worker::testing::ResolveTask;
using ::cnp::worker::testing::WorkerProcess;
using ::cnp::worker::v1::Failure;
using ::testing::HasSubstr;

struct Fixture {
  std::string dir;
  std::unique_ptr<WorkerProcess> worker;

  int Imports(const std::string& module) const {
    std::vector<std::string> lines =
        absl::StrSplit(ReadFile(absl::StrCat(dir, "/", module, ".imports")), '\n',
                       absl::SkipEmpty());
    return static_cast<int>(lines.size());
  }
};

Fixture StartWith(const std::string& module, int version, const std::string& label) {
  Fixture fixture;
  fixture.dir = FreshDir("update");
  WriteModule(absl::StrCat(fixture.dir, "/", module, ".py"),
              VersionedModule(fixture.dir, module, version, label));
  auto worker = WorkerProcess::Start({"--python-path=" + fixture.dir});
  EXPECT_TRUE(worker.ok()) << worker.status();
  if (worker.ok()) fixture.worker = *std::move(worker);
  return fixture;
}

void Bump(const Fixture& t, const std::string& module, int version, const std::string& label) {
  WriteModule(absl::StrCat(t.dir, "/", module, ".py"), VersionedModule(t.dir, module, version, label));
}

TEST(CodeUpdateTest, MapPicksUpABumpedVersion) {
  Fixture t = StartWith("evolving", 1, "old");
  Reply first = t.worker->Call(MapTask({"evolving.f|1"}, {"{}"}));
  ASSERT_TRUE(first.has_map()) << first.DebugString();
  EXPECT_EQ(first.map().results(0).rows(), R"([[["old",1]]])");
  Bump(t, "evolving", 2, "new");
  Reply second = t.worker->Call(MapTask({"evolving.f|2"}, {"{}"}));
  ASSERT_TRUE(second.has_map()) << second.DebugString();
  EXPECT_EQ(second.map().results(0).rows(), R"([[["new",2]]])");
  EXPECT_EQ(t.Imports("evolving"), 2);
}

TEST(CodeUpdateTest, BumpsInQuickSuccessionAreEachPickedUpAtOnce) {
  Fixture t = StartWith("evolving", 1, "v");
  ASSERT_TRUE(t.worker->Call(MapTask({"evolving.f|1"}, {"{}"})).has_map());
  for (int version = 2; version <= 5; ++version) {
    // A stale name in between must not delay the next version.
    Reply stale = t.worker->Call(MapTask({"evolving.f|1"}, {"{}"}));
    EXPECT_EQ(stale.has_failure(), version > 2) << stale.DebugString();
    Bump(t, "evolving", version, "v");
    Reply reply = t.worker->Call(MapTask({absl::StrCat("evolving.f|", version)}, {"{}"}));
    ASSERT_TRUE(reply.has_map()) << version << ": " << reply.DebugString();
    EXPECT_EQ(reply.map().results(0).rows(), absl::StrCat(R"([[["v",)", version, "]]]"));
  }
}

TEST(CodeUpdateTest, ResolvePicksUpABumpedVersionWithOrWithoutOne) {
  Fixture t = StartWith("evolving", 1, "old");
  EXPECT_EQ(t.worker->Call(ResolveTask({"evolving.f"})).resolve().functions(0).versioned_name(),
            "evolving.f|1");
  Bump(t, "evolving", 2, "new");
  // Without a version: what upload asks to learn the version to append.
  EXPECT_EQ(t.worker->Call(ResolveTask({"evolving.f"})).resolve().functions(0).versioned_name(),
            "evolving.f|2");
  Bump(t, "evolving", 3, "newer");
  // With one: what add_fun asks.
  Reply reply = t.worker->Call(ResolveTask({"evolving.f|3"}));
  ASSERT_EQ(reply.resolve().functions_size(), 1);
  EXPECT_EQ(reply.resolve().functions(0).error(), "");
  EXPECT_EQ(reply.resolve().functions(0).version(), 3);
}

TEST(CodeUpdateTest, DesignFunctionsPickUpABumpedVersion) {
  Fixture t = StartWith("evolving", 1, "old");
  EXPECT_EQ(t.worker->Call(DesignTask(cnp::v1::SHOW, "evolving.show|1", "[null, {}]")).design().reply(),
            R"(["resp",{"body":"old"}])");
  Bump(t, "evolving", 2, "new");
  Reply reply = t.worker->Call(DesignTask(cnp::v1::SHOW, "evolving.show|2", "[null, {}]"));
  ASSERT_TRUE(reply.has_design()) << reply.DebugString();
  EXPECT_EQ(reply.design().reply(), R"(["resp",{"body":"new"}])");
}

TEST(CodeUpdateTest, APackageIsImportedAnewWithItsChangedSubmodules) {
  Fixture t;
  t.dir = FreshDir("package");
  std::string package = t.dir + "/views";
  ASSERT_EQ(::mkdir(package.c_str(), 0755), 0);
  // The package re-exports the function from a submodule: the submodule's edit must be
  // imported before the package's own code runs again.
  WriteModule(package + "/__init__.py", "from views.impl import f\n");
  WriteModule(package + "/impl.py", VersionedModule(t.dir, "impl", 1, "old"));
  auto worker = WorkerProcess::Start({"--python-path=" + t.dir, "--allow-module=views"});
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ((*worker)->Call(MapTask({"views.f|1"}, {"{}"})).map().results(0).rows(),
            R"([[["old",1]]])");
  WriteModule(package + "/impl.py", VersionedModule(t.dir, "impl", 2, "new"));
  Reply reply = (*worker)->Call(MapTask({"views.f|2"}, {"{}"}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["new",2]]])");
}

TEST(CodeUpdateTest, FunctionsLoadedEarlierInTheSameCallAreLoadedAgain) {
  Fixture t = StartWith("evolving", 1, "old");
  ASSERT_TRUE(t.worker->Call(MapTask({"evolving.plain", "evolving.f|1"}, {"{}"})).has_map());
  Bump(t, "evolving", 2, "new");
  // evolving.plain is cached and loads first; evolving.f|2 then imports the module anew,
  // which drops the first: the call must run plain's new code, not what it dropped.
  Reply reply = t.worker->Call(MapTask({"evolving.plain", "evolving.f|2"}, {"{}"}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["new","plain"]],[["new",2]]])");
}

TEST(CodeUpdateTest, AStaleVersionCostsNoImportWhenNothingChanged) {
  Fixture t = StartWith("evolving", 1, "old");
  Bump(t, "evolving", 2, "new");
  ASSERT_TRUE(t.worker->Call(MapTask({"evolving.f|2"}, {"{}"})).has_map());
  int imports = t.Imports("evolving");
  EXPECT_EQ(imports, 1);
  for (int i = 0; i < 200; ++i) {
    Reply stale = t.worker->Call(MapTask({"evolving.f|1"}, {"{}"}));
    ASSERT_TRUE(stale.has_failure());
    EXPECT_EQ(stale.failure().message(),
              "ValueError: Loaded version 2 did not match expected version 1");
  }
  EXPECT_EQ(t.Imports("evolving"), imports);
  // The function itself keeps working throughout.
  EXPECT_TRUE(t.worker->Call(MapTask({"evolving.f|2"}, {"{}"})).has_map());
}

TEST(CodeUpdateTest, ABrokenEditFailsWithItsErrorAndTheFixIsPickedUp) {
  Fixture t = StartWith("evolving", 1, "old");
  ASSERT_TRUE(t.worker->Call(MapTask({"evolving.f|1"}, {"{}"})).has_map());
  WriteModule(t.dir + "/evolving.py", "@version(2\ndef f(doc):\n");
  Reply broken = t.worker->Call(MapTask({"evolving.f|2"}, {"{}"}));
  ASSERT_TRUE(broken.has_failure());
  EXPECT_THAT(broken.failure().message(), HasSubstr("SyntaxError"));
  // The failure is remembered until the file changes: asked again, the module is not
  // imported again (one import of the broken edit, after the first).
  for (int i = 0; i < 50; ++i) {
    Reply again = t.worker->Call(MapTask({"evolving.f|2"}, {"{}"}));
    ASSERT_TRUE(again.has_failure());
    EXPECT_EQ(again.failure().message(), broken.failure().message());
  }
  Bump(t, "evolving", 2, "fixed");
  // Resolve (an upload, add_fun) looks at the disk at once, and the tasks then run the fix
  // (a task looks within a second by itself: tests/worker/broken_import_test).
  Reply resolved = t.worker->Call(ResolveTask({"evolving.f|2"}));
  ASSERT_EQ(resolved.resolve().functions_size(), 1) << resolved.DebugString();
  EXPECT_EQ(resolved.resolve().functions(0).error(), "");
  Reply fixed = t.worker->Call(MapTask({"evolving.f|2"}, {"{}"}));
  ASSERT_TRUE(fixed.has_map()) << fixed.DebugString();
  EXPECT_EQ(fixed.map().results(0).rows(), R"([[["fixed",2]]])");
}

// CouchDB's side of a direct session: the worker serves CouchDB's line protocol on two pipes
// itself, so it cannot move to a fresh worker - the worker must import the module anew.
class DirectSession {
 public:
  explicit DirectSession(WorkerProcess& worker) {
    int commands[2], answers[2];
    EXPECT_EQ(::pipe(commands), 0);
    EXPECT_EQ(::pipe(answers), 0);
    cnp::worker::testing::Task task;
    task.mutable_direct_session()->set_id("code-update");
    task.mutable_direct_session()->set_default_timeout_ms(30000);
    EXPECT_TRUE(worker.SendWithDescriptors(task, {commands[0], answers[1]}).ok());
    ::close(commands[0]);
    ::close(answers[1]);
    commands_ = commands[1];
    answers_ = answers[0];
  }
  ~DirectSession() {
    if (commands_ >= 0) ::close(commands_);
    ::close(answers_);
  }

  // Writes one command and returns the answer line (without log lines).
  std::string Call(const std::string& line) {
    std::string data = line + "\n";
    EXPECT_EQ(::write(commands_, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    for (;;) {
      std::string answer = ReadLine();
      if (answer.rfind(R"(["log")", 0) != 0) return answer;
    }
  }
  void CloseInput() {
    ::close(commands_);
    commands_ = -1;
  }

 private:
  std::string ReadLine() {
    while (buffer_.find('\n') == std::string::npos) {
      pollfd ready{answers_, POLLIN, 0};
      if (::poll(&ready, 1, 30000) != 1) {
        ADD_FAILURE() << "the worker did not answer";
        return "";
      }
      char chunk[4096];
      ssize_t n = ::read(answers_, chunk, sizeof chunk);
      if (n <= 0) return "";
      buffer_.append(chunk, n);
    }
    size_t end = buffer_.find('\n');
    std::string line = buffer_.substr(0, end);
    buffer_.erase(0, end + 1);
    return line;
  }

  int commands_ = -1;
  int answers_ = -1;
  std::string buffer_;
};

TEST(CodeUpdateTest, ADirectSessionPicksUpABumpedVersion) {
  Fixture t = StartWith("evolving", 1, "old");
  {
    DirectSession session(*t.worker);
    EXPECT_EQ(session.Call(R"(["reset",{"timeout":30000}])"), "true");
    EXPECT_EQ(session.Call(R"(["add_fun","evolving.f|1"])"), "true");
    EXPECT_EQ(session.Call(R"(["map_doc",{"_id":"a"}])"), R"([[["old",1]]])");
    Bump(t, "evolving", 2, "new");
    EXPECT_EQ(session.Call(R"(["reset",{"timeout":30000}])"), "true");
    EXPECT_EQ(session.Call(R"(["add_fun","evolving.f|2"])"), "true");
    EXPECT_EQ(session.Call(R"(["map_doc",{"_id":"a"}])"), R"([[["new",2]]])");
    session.CloseInput();
    absl::StatusOr<Reply> end = t.worker->Receive();
    ASSERT_TRUE(end.ok()) << end.status();
    EXPECT_TRUE(end->has_session_end()) << end->DebugString();
  }
}

}  // namespace
}  // namespace cnp::security::testing
