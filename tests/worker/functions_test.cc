// Naming, @version checks, the module policy and Resolve, over a real cnp-worker.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

const char kDoc[] = R"({"_id":"doc-1","town":"Oslo","n":1})";

v1::Failure MapFailure(WorkerProcess& worker, const std::string& function) {
  Reply reply = worker.Call(MapTask({function}, {kDoc}));
  EXPECT_TRUE(reply.has_failure()) << reply.DebugString();
  return reply.failure();
}

TEST(NamesTest, PathNeedsTwoNonEmptyParts) {
  auto worker = WorkerProcess::StartWithFunctions();
  for (const char* name : {"town", "worker_views.", ".town", "worker_views..town", "|3"}) {
    v1::Failure failure = MapFailure(*worker, name);
    EXPECT_EQ(failure.code(), v1::Failure::BAD_NAME) << name;
    EXPECT_EQ(failure.message(),
              absl::StrCat("ValueError: Invalid function path: '",
                           absl::string_view(name).substr(0, absl::string_view(name).find('|')),
                           "' is not module.function or module.function|version"))
        << name;
    EXPECT_EQ(failure.function(), name);
  }
  v1::Failure bad_version = MapFailure(*worker, "worker_views.town|x");
  EXPECT_EQ(bad_version.code(), v1::Failure::BAD_NAME);
  EXPECT_EQ(bad_version.message(),
            "ValueError: invalid literal for int() with base 10: 'x' (after '|' comes the "
            "function's @version number: module.function|N)");
}

TEST(NamesTest, MissingModuleOrAttributeIsNotFound) {
  auto worker = WorkerProcess::StartWithFunctions();
  // No function's error (nothing of it ran): not counted in cnp_function_errors_total.
  for (const char* name : {"no_such_module.f", "worker_views.nope"}) {
    Reply reply = worker->Call(MapTask({name}, {kDoc}));
    EXPECT_THAT(reply.import_raised(), IsEmpty()) << name;
  }
  v1::Failure module = MapFailure(*worker, "no_such_module.f");
  EXPECT_EQ(module.code(), v1::Failure::NOT_FOUND);
  EXPECT_EQ(module.message(), "ModuleNotFoundError: No module named 'no_such_module'");
  v1::Failure attribute = MapFailure(*worker, "worker_views.nope");
  EXPECT_EQ(attribute.code(), v1::Failure::NOT_FOUND);
  EXPECT_EQ(attribute.message(), "AttributeError: module 'worker_views' has no attribute 'nope'");
}

// A module whose own code raises is not the function's error: the message says it was the
// import, of which module, and where; the service's log gets the traceback.
TEST(NamesTest, AModuleThatRaisesWhenImportedIsNamedWithWhere) {
  auto worker = WorkerProcess::StartWithFunctions();
  Reply reply = worker->Call(MapTask({"worker_import_fails.f"}, {kDoc}));
  ASSERT_TRUE(reply.has_failure()) << reply.DebugString();
  EXPECT_EQ(reply.failure().code(), v1::Failure::NOT_FOUND);
  EXPECT_EQ(reply.failure().function(), "worker_import_fails.f");
  EXPECT_EQ(reply.failure().message(),
            "importing worker_import_fails: ZeroDivisionError: division by zero" +
                RaisedAt("worker_import_fails.py", "RATE = 1 / 0", "<module>"));
  ASSERT_EQ(reply.function_logs_size(), 1) << reply.DebugString();
  const v1::FunctionLog& logged = reply.function_logs(0);
  EXPECT_EQ(logged.error(), "ZeroDivisionError");
  EXPECT_EQ(logged.kind(), "import");
  EXPECT_EQ(logged.function(), "worker_import_fails.f");
  EXPECT_THAT(logged.traceback(), HasSubstr("worker_import_fails.py\", line "));
  EXPECT_THAT(logged.traceback(), HasSubstr("RATE = 1 / 0"));
  EXPECT_THAT(logged.traceback(), Not(HasSubstr("<frozen importlib")));
  // Marked as the module's error, for cnp_function_errors_total: now, and when the failure
  // is answered again from the failed-import cache (no import, no log line).
  EXPECT_THAT(reply.import_raised(), ElementsAre("worker_import_fails"));
  Reply again = worker->Call(MapTask({"worker_import_fails.f"}, {kDoc}));
  ASSERT_TRUE(again.has_failure()) << again.DebugString();
  EXPECT_EQ(again.function_logs_size(), 0) << again.DebugString();
  EXPECT_THAT(again.import_raised(), ElementsAre("worker_import_fails"));
}

// The import's log line names the function as asked for, "|version" included, as the
// function's other lines do (before: "worker_import_fails.f").
TEST(NamesTest, AnImportFailureIsLoggedUnderTheNameAsAskedFor) {
  auto worker = WorkerProcess::StartWithFunctions();
  Reply reply = worker->Call(MapTask({"worker_import_fails.f|7"}, {kDoc}));
  ASSERT_TRUE(reply.has_failure()) << reply.DebugString();
  ASSERT_EQ(reply.function_logs_size(), 1) << reply.DebugString();
  EXPECT_EQ(reply.function_logs(0).kind(), "import");
  EXPECT_EQ(reply.function_logs(0).function(), "worker_import_fails.f|7");
}

// An import failure is counted under the module that raised, whatever name asked for it: a
// caller making up names in a broken module ("m.f1", "m.f2|3", "m.sub.f") made a series of
// cnp_function_errors_total each, until the metric's 1000 were taken and every function's
// errors after them counted as "other" (a review of the metrics).
TEST(NamesTest, AnImportFailureIsCountedUnderTheModuleThatRaised) {
  auto worker = WorkerProcess::StartWithFunctions();
  for (const char* name : {"worker_import_fails.f|7", "worker_import_fails.made_up",
                           "worker_import_fails.sub.g|2"}) {
    Reply reply = worker->Call(MapTask({name}, {kDoc}));
    ASSERT_TRUE(reply.has_failure()) << name << ": " << reply.DebugString();
    EXPECT_EQ(reply.failure().code(), v1::Failure::NOT_FOUND) << name;
    EXPECT_THAT(reply.import_raised(), ElementsAre("worker_import_fails")) << name;
  }
}

TEST(VersionsTest, MatchingVersionRuns) {
  auto worker = WorkerProcess::StartWithFunctions();
  Reply reply = worker->Call(MapTask({"worker_views.versioned|556", "worker_views.unversioned"}, {kDoc}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["doc-1",556]],[["doc-1",null]]])");
}

TEST(VersionsTest, MismatchInEitherDirectionFails) {
  auto worker = WorkerProcess::StartWithFunctions();
  struct Case {
    const char* name;
    const char* message;
  } cases[] = {
      {"worker_views.versioned|2", "ValueError: Loaded version 556 did not match expected version 2"},
      {"worker_views.versioned",
       "ValueError: Loaded version 556 did not match expected version None: worker_views.versioned "
       "has @version(556), so design documents and calls must name it worker_views.versioned|556 "
       "(`cnp resolve worker_views.versioned` prints the name to use)"},
      {"worker_views.unversioned|7", "ValueError: Loaded version None did not match expected version 7"},
  };
  for (const Case& c : cases) {
    v1::Failure failure = MapFailure(*worker, c.name);
    EXPECT_EQ(failure.code(), v1::Failure::VERSION_MISMATCH) << c.name;
    EXPECT_EQ(failure.message(), c.message);
  }
}

TEST(PolicyTest, StandardLibraryIsRefusedWithoutAllowList) {
  auto worker = WorkerProcess::StartWithFunctions();
  v1::Failure system = MapFailure(*worker, "os.system");
  EXPECT_EQ(system.code(), v1::Failure::PERMISSION_DENIED);
  EXPECT_THAT(system.message(), HasSubstr("module 'os' is part of Python's standard library"));
  EXPECT_THAT(system.message(), Not(HasSubstr("--allow-module")));
  v1::Failure json = MapFailure(*worker, "json.dumps");
  EXPECT_EQ(json.code(), v1::Failure::PERMISSION_DENIED);
  EXPECT_THAT(json.message(), HasSubstr("standard library"));
}

TEST(PolicyTest, ReexportedStandardFunctionIsRefused) {
  auto worker = WorkerProcess::StartWithFunctions();
  v1::Failure failure = MapFailure(*worker, "worker_reexport.system");
  EXPECT_EQ(failure.code(), v1::Failure::PERMISSION_DENIED);
  EXPECT_THAT(failure.message(), HasSubstr("builtin_function_or_method, not a Python function"));
}

TEST(PolicyTest, PackageHelpersAreNotCallable) {
  auto worker = WorkerProcess::StartWithFunctions();
  for (const char* name : {"couch_named_python.log", "couch_named_python.helpers.emit", "_cnp.emit"}) {
    EXPECT_EQ(MapFailure(*worker, name).code(), v1::Failure::PERMISSION_DENIED) << name;
  }
}

TEST(PolicyTest, AllowListChecksTheFunctionsOwnModule) {
  auto worker = WorkerProcess::StartWithFunctions(
      {"--allow-module=worker_views", "--allow-module=worker_reexport"});
  Reply allowed = worker->Call(MapTask({"worker_views.town"}, {kDoc}));
  EXPECT_TRUE(allowed.has_map()) << allowed.DebugString();

  v1::Failure reexport = MapFailure(*worker, "worker_reexport.system");
  EXPECT_EQ(reexport.code(), v1::Failure::PERMISSION_DENIED);
  EXPECT_THAT(reexport.message(), HasSubstr("not a Python function"));
  EXPECT_THAT(reexport.message(), Not(HasSubstr("--allow-module=posix")));

  v1::Failure other = MapFailure(*worker, "worker_reduce.total");
  EXPECT_EQ(other.code(), v1::Failure::PERMISSION_DENIED);
  EXPECT_THAT(other.message(), HasSubstr("--allow-module=worker_reduce"));
}

TEST(PolicyTest, AllowListPrefixMatchesWholeModuleNames) {
  auto worker = WorkerProcess::StartWithFunctions({"--allow-module=worker"});
  EXPECT_EQ(MapFailure(*worker, "worker_views.town").code(), v1::Failure::PERMISSION_DENIED);
}

// Allowing the standard library is a bad setting: the worker answers its first task saying so
// (which is how cnp-server learns it, and exits 2), and serves nothing.
TEST(PolicyTest, AllowListNeverAllowsTheStandardLibrary) {
  auto worker =
      WorkerProcess::StartWithFunctions({"--allow-module=worker_views", "--allow-module=json"});
  Reply reply = worker->Call(ResolveTask({"json.dumps"}));
  ASSERT_TRUE(reply.has_failure()) << reply.DebugString();
  EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_SETTING);
  EXPECT_THAT(reply.failure().message(),
              HasSubstr("--allow-module=json: module 'json' is part of Python's standard library"));
  // Without an allow list, it is refused per name.
  auto open = WorkerProcess::StartWithFunctions();
  reply = open->Call(ResolveTask({"json.dumps"}));
  ASSERT_EQ(reply.resolve().functions_size(), 1);
  EXPECT_EQ(reply.resolve().functions(0).error_code(), 7);  // PERMISSION_DENIED
  EXPECT_THAT(reply.resolve().functions(0).error(), HasSubstr("standard library"));
}

TEST(ResolveTest, ReportsVersionsAndErrorsPerName) {
  auto worker = WorkerProcess::StartWithFunctions();
  Reply reply = worker->Call(ResolveTask({"worker_views.versioned", "worker_views.unversioned",
                                          "worker_views.versioned|556", "worker_views.versioned|3",
                                          "bad", "nope.f", "os.system"}));
  ASSERT_TRUE(reply.has_resolve()) << reply.DebugString();
  ASSERT_EQ(reply.resolve().functions_size(), 7);
  const auto& f = reply.resolve().functions();

  EXPECT_EQ(f[0].function(), "worker_views.versioned");
  EXPECT_EQ(f[0].module(), "worker_views");
  EXPECT_TRUE(f[0].has_version());
  EXPECT_EQ(f[0].version(), 556);
  EXPECT_EQ(f[0].versioned_name(), "worker_views.versioned|556");
  EXPECT_EQ(f[0].error(), "");

  EXPECT_FALSE(f[1].has_version());
  EXPECT_EQ(f[1].versioned_name(), "worker_views.unversioned");
  EXPECT_EQ(f[2].versioned_name(), "worker_views.versioned|556");

  EXPECT_EQ(f[3].error(), "ValueError: Loaded version 556 did not match expected version 3");
  EXPECT_EQ(f[3].error_code(), 9);  // FAILED_PRECONDITION, as a Map naming it fails
  EXPECT_EQ(f[4].error(),
            "ValueError: Invalid function path: 'bad' is not module.function or "
            "module.function|version");
  EXPECT_EQ(f[4].error_code(), 3);
  EXPECT_EQ(f[5].error_code(), 5);
  EXPECT_EQ(f[6].error_code(), 7);
}

TEST(StartupTest, HelpDescribesTheCommandLine) {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = WorkerProcess::Start({"--no-such-flag"});
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ((*worker)->CloseAndWait(), 2);
  EXPECT_THAT((*worker)->ReadStderr(), HasSubstr("unknown argument --no-such-flag"));
}

}  // namespace
}  // namespace cnp::worker::testing
