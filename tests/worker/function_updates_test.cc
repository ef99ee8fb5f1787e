// What a long-lived worker makes of a module the operator edits while it runs: a function added
// to a module the worker imported already is found (by Resolve, which upload and add_fun use,
// and by the tasks that run functions), and add_fun's resolve checks versions as running the
// function will, so a name that could never run is refused when CouchDB adds it.
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kRevmod[] = R"PY(from couch_named_python import version


@version(1)
def townmap(doc):
    yield doc.get("town"), 1


def plain(doc):
    yield "plain", 1
)PY";

class FunctionUpdatesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp ? tmp : "/tmp", "/updates-XXXXXX");
    ASSERT_NE(::mkdtemp(dir_.data()), nullptr);
    Write(kRevmod);
    auto worker = WorkerProcess::Start({"--python-path=" + dir_});
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = *std::move(worker);
  }

  void Write(const std::string& text) {
    std::ofstream(dir_ + "/revmod.py", std::ios::trunc) << text;
  }
  // As the review did it: the function is appended to the file in place (same inode).
  void Append(const std::string& text) { std::ofstream(dir_ + "/revmod.py", std::ios::app) << text; }

  cnp::v1::ResolvedFunction Resolve(const std::string& name, bool versions_as_run = false) {
    Task task = ResolveTask({name});
    task.set_versions_as_run(versions_as_run);
    Reply reply = worker_->Call(task);
    EXPECT_EQ(reply.resolve().functions_size(), 1) << reply.DebugString();
    return reply.resolve().functions_size() == 1 ? reply.resolve().functions(0)
                                                 : cnp::v1::ResolvedFunction();
  }

  std::string dir_;
  std::unique_ptr<WorkerProcess> worker_;
};

TEST_F(FunctionUpdatesTest, ResolveFindsAFunctionAddedToAnImportedModule) {
  ASSERT_EQ(Resolve("revmod.townmap").versioned_name(), "revmod.townmap|1");
  Append("\n\n@version(3)\ndef brand_new(doc):\n    yield 'new', 3\n");
  // Alone, as `cnp resolve` and `cnp check` of a YAML naming only the new function ask.
  cnp::v1::ResolvedFunction added = Resolve("revmod.brand_new");
  EXPECT_EQ(added.error(), "");
  EXPECT_EQ(added.versioned_name(), "revmod.brand_new|3");
  // And with its version, as add_fun asks.
  EXPECT_EQ(Resolve("revmod.brand_new|3", /*versions_as_run=*/true).error(), "");
  // The function loaded before is still there, from the module imported anew.
  Reply rows = worker_->Call(MapTask({"revmod.townmap|1", "revmod.brand_new|3"}, {R"({"town":"Oslo"})"}));
  ASSERT_TRUE(rows.has_map()) << rows.DebugString();
  EXPECT_EQ(rows.map().results(0).rows(), R"([[["Oslo",1]],[["new",3]]])");
}

TEST_F(FunctionUpdatesTest, AMapFindsAFunctionAddedToAnImportedModule) {
  ASSERT_TRUE(worker_->Call(MapTask({"revmod.townmap|1"}, {"{}"})).has_map());
  Append("\n\n@version(2)\ndef later(doc):\n    yield 'later', 2\n");
  Reply rows = worker_->Call(MapTask({"revmod.later|2"}, {"{}"}));
  ASSERT_TRUE(rows.has_map()) << rows.DebugString();
  EXPECT_EQ(rows.map().results(0).rows(), R"([[["later",2]]])");
}

TEST_F(FunctionUpdatesTest, ANameThatIsReallyMissingStillFails) {
  ASSERT_EQ(Resolve("revmod.townmap").error(), "");
  EXPECT_EQ(Resolve("revmod.nowhere").error(),
            "AttributeError: module 'revmod' has no attribute 'nowhere'");
  Reply failed = worker_->Call(MapTask({"revmod.nowhere|1"}, {"{}"}));
  ASSERT_TRUE(failed.has_failure()) << failed.DebugString();
  EXPECT_THAT(failed.failure().message(), HasSubstr("has no attribute 'nowhere'"));
}

// A typo in the function or the module (cnp check, cnp upload, add_fun) is answered with the
// closest existing name, when one is close; a name close to nothing gets no guess.
TEST_F(FunctionUpdatesTest, AMisspeltNameGetsTheClosestExistingOne) {
  // As a design document's YAML names it, and what a call adds, whatever was asked for (an
  // operator's trial was told "revmod.townmap", which then failed in a call for its missing
  // |1; "revmod.townmap|1" is wrong in YAML).
  EXPECT_EQ(Resolve("revmod.townmpa").error(),
            "AttributeError: module 'revmod' has no attribute 'townmpa'; did you mean "
            "\"revmod.townmap\" (@version(1): revmod.townmap|1 in a call)?");
  EXPECT_THAT(Resolve("revmod.townmpa|7").error(),
              HasSubstr("; did you mean \"revmod.townmap\" (@version(1): revmod.townmap|1 in a call)?"));
  EXPECT_THAT(Resolve("revmdo.townmap|1").error(),
              AllOf(HasSubstr("No module named 'revmdo'"),
                    HasSubstr("; did you mean \"revmod.townmap\" (@version(1): revmod.townmap|1 in a call)?")));
  EXPECT_THAT(Resolve("revmod.zzzzzzzz").error(), Not(HasSubstr("did you mean")));
  EXPECT_THAT(Resolve("qqqqqqqq.townmap").error(), Not(HasSubstr("did you mean")));
  // The module meant has no such function (a probe was told "did you mean myviews.f" of one).
  EXPECT_THAT(Resolve("revmdo.nowhere").error(), Not(HasSubstr("did you mean")));
  // And the name meant still resolves as ever.
  EXPECT_EQ(Resolve("revmod.townmap").versioned_name(), "revmod.townmap|1");
}

// A misspelt module is outside --allow-module too, so it is refused before it is looked for:
// the refusal says which allowed name was meant; a module refused as it is named gets no guess.
TEST_F(FunctionUpdatesTest, AMisspeltModuleRefusedByTheAllowListGetsTheClosestAllowedName) {
  auto restricted = WorkerProcess::Start({"--python-path=" + dir_, "--allow-module=revmod"});
  ASSERT_TRUE(restricted.ok()) << restricted.status();
  worker_ = *std::move(restricted);
  cnp::v1::ResolvedFunction misspelt = Resolve("revmdo.townmap|1");
  EXPECT_EQ(misspelt.error_code(), 7) << misspelt.error();  // PERMISSION_DENIED, as before
  EXPECT_THAT(misspelt.error(), AllOf(HasSubstr("PermissionError: revmdo.townmap is not allowed"),
                                      HasSubstr("; did you mean \"revmod.townmap\"?")));
  EXPECT_THAT(Resolve("os.system").error(), Not(HasSubstr("did you mean")));
  EXPECT_THAT(Resolve("qqqqqqqq.townmap").error(), Not(HasSubstr("did you mean")));
}

// Found by a review: a batch call's misspelt name got no guess where `cnp check` gave one.
TEST_F(FunctionUpdatesTest, AMisspeltNameInAMapCallGetsTheClosestExistingOneToo) {
  Reply function = worker_->Call(MapTask({"revmod.townmpa"}, {"{}"}));
  ASSERT_TRUE(function.has_failure()) << function.DebugString();
  EXPECT_EQ(function.failure().message(),
            "AttributeError: module 'revmod' has no attribute 'townmpa'; did you mean "
            "\"revmod.townmap\" (@version(1): revmod.townmap|1 in a call)?");
  Reply module = worker_->Call(MapTask({"revmdo.townmap|1"}, {"{}"}));
  ASSERT_TRUE(module.has_failure()) << module.DebugString();
  EXPECT_THAT(module.failure().message(),
              HasSubstr("; did you mean \"revmod.townmap\" (@version(1): revmod.townmap|1 in a call)?"));
  Reply nowhere = worker_->Call(MapTask({"revmod.zzzzzzzz"}, {"{}"}));
  ASSERT_TRUE(nowhere.has_failure()) << nowhere.DebugString();
  EXPECT_THAT(nowhere.failure().message(), Not(HasSubstr("did you mean")));
}

TEST_F(FunctionUpdatesTest, AddFunsResolveRefusesAnUnversionedNameForAVersionedFunction) {
  cnp::v1::ResolvedFunction refused = Resolve("revmod.townmap", /*versions_as_run=*/true);
  EXPECT_EQ(refused.error(),
            "ValueError: Loaded version 1 did not match expected version None: revmod.townmap "
            "has @version(1), so design documents and calls must name it revmod.townmap|1 (`cnp "
            "resolve revmod.townmap` prints the name to use)");
  EXPECT_EQ(refused.error_code(), 9);  // FAILED_PRECONDITION, as any version mismatch
  // An empty version is no version.
  EXPECT_THAT(Resolve("revmod.townmap|", true).error(), HasSubstr("revmod.townmap|1"));
  EXPECT_EQ(Resolve("revmod.townmap|1", true).error(), "");
  EXPECT_EQ(Resolve("revmod.plain", true).error(), "");
  EXPECT_THAT(Resolve("revmod.plain|1", true).error(),
              HasSubstr("Loaded version None did not match expected version 1"));
  // Upload's resolve still learns the version to append.
  EXPECT_EQ(Resolve("revmod.townmap").versioned_name(), "revmod.townmap|1");
}

TEST_F(FunctionUpdatesTest, ABrokenEditFailsOnlyTheNamesThatNeedIt) {
  Reply before = worker_->Call(MapTask({"revmod.townmap|1", "revmod.plain"}, {R"({"town":"Oslo"})"}));
  ASSERT_TRUE(before.has_map()) << before.DebugString();
  // Saved half-way: the new version does not even compile.
  Write("from couch_named_python import version\n\n@version(2\ndef townmap(doc):\n");
  Reply broken = worker_->Call(MapTask({"revmod.townmap|2"}, {"{}"}));
  ASSERT_TRUE(broken.has_failure()) << broken.DebugString();
  EXPECT_THAT(broken.failure().message(), HasSubstr("SyntaxError"));
  EXPECT_THAT(Resolve("revmod.townmap").error(), HasSubstr("SyntaxError"));
  // The views that still ask for what was imported go on.
  Reply still = worker_->Call(MapTask({"revmod.townmap|1", "revmod.plain"}, {R"({"town":"Oslo"})"}));
  ASSERT_TRUE(still.has_map()) << still.DebugString();
  EXPECT_EQ(still.map().results(0).rows(), R"([[["Oslo",1]],[["plain",1]]])");
  // The fix is picked up at once by Resolve (an upload, add_fun), which looks at the disk
  // each time; a task that runs the name looks within a second (broken_import_test).
  Write("from couch_named_python import version\n\n@version(2)\ndef townmap(doc):\n"
        "    yield 'fixed', 2\n");
  EXPECT_EQ(Resolve("revmod.townmap").versioned_name(), "revmod.townmap|2");
  Reply fixed = worker_->Call(MapTask({"revmod.townmap|2"}, {"{}"}));
  ASSERT_TRUE(fixed.has_map()) << fixed.DebugString();
  EXPECT_EQ(fixed.map().results(0).rows(), R"([[["fixed",2]]])");
  Reply stale = worker_->Call(MapTask({"revmod.townmap|1"}, {"{}"}));
  ASSERT_TRUE(stale.has_failure()) << stale.DebugString();
  EXPECT_EQ(stale.failure().message(), "ValueError: Loaded version 2 did not match expected version 1");
}

// A view build over a module that does not compile: one task per document, each naming it.
// The module is imported once (its package's __init__ counts), every task still fails with
// the SyntaxError, its file and line, and the traceback reaches the log once.
TEST_F(FunctionUpdatesTest, AModuleThatDoesNotCompileIsImportedOnceForAllItsCalls) {
  std::string package = dir_ + "/brokenpkg";
  ASSERT_EQ(::mkdir(package.c_str(), 0755), 0);
  std::string counter = dir_ + ".brokenpkg-imports";
  std::ofstream(package + "/__init__.py")
      << "open('" << counter << "', 'a').write('import\\n')\nfrom brokenpkg.impl import f\n";
  std::ofstream(package + "/impl.py") << "def f(doc):\n    yield (doc,\n";
  int tracebacks = 0;
  for (int doc = 0; doc < 200; ++doc) {
    Reply failed = worker_->Call(MapTask({"brokenpkg.f"}, {"{}"}));
    ASSERT_TRUE(failed.has_failure()) << failed.DebugString();
    EXPECT_EQ(failed.failure().code(), v1::Failure::NOT_FOUND);
    EXPECT_THAT(failed.failure().message(), HasSubstr("importing brokenpkg: SyntaxError:"));
    EXPECT_THAT(failed.failure().message(), HasSubstr("impl.py, line 2"));
    tracebacks += failed.function_logs_size();
  }
  EXPECT_EQ(tracebacks, 1);
  std::ifstream imports(counter);
  std::string lines((std::istreambuf_iterator<char>(imports)), std::istreambuf_iterator<char>());
  EXPECT_EQ(lines, "import\n");
  // Fixed: upload's Resolve sees it at once, and the tasks run it.
  std::ofstream(package + "/impl.py", std::ios::trunc) << "def f(doc):\n    yield 'fixed', 1\n";
  EXPECT_EQ(Resolve("brokenpkg.f").error(), "");
  Reply rows = worker_->Call(MapTask({"brokenpkg.f"}, {"{}"}));
  ASSERT_TRUE(rows.has_map()) << rows.DebugString();
  EXPECT_EQ(rows.map().results(0).rows(), R"([[["fixed",1]]])");
}

}  // namespace
}  // namespace cnp::worker::testing
