// The function allowlist, attacked through a real cnp-worker over its socket: every bypass
// reported in issue 7 and the other routes we could think of. Each refusal is checked, and
// so is its absence of effect (nothing imported, nothing run, nothing assigned).
#include <sys/stat.h>
#include <unistd.h>

#include <set>
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
using ::cnp::worker::testing::Task;
using ::cnp::worker::testing::WorkerProcess;
using ::cnp::worker::v1::Failure;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

struct Fixture {
  std::string dir;
  std::unique_ptr<WorkerProcess> worker;
};

Fixture Start(std::vector<std::string> flags = {}) {
  Fixture fixture;
  fixture.dir = FreshDir("attack");
  WriteAttackModules(fixture.dir);
  flags.push_back("--python-path=" + fixture.dir);
  auto worker = WorkerProcess::Start(flags);
  EXPECT_TRUE(worker.ok()) << worker.status();
  if (worker.ok()) fixture.worker = *std::move(worker);
  return fixture;
}

Reply Show(WorkerProcess& worker, const std::string& function, const std::string& args) {
  return worker.Call(DesignTask(cnp::v1::SHOW, function, args));
}

// The body myviews.state reports: the secret, whether the module grew a __path__, which of
// its functions are still there and which watched modules were imported.
std::string State(WorkerProcess& worker) {
  Reply reply = Show(worker, "myviews.state", "[null, {}]");
  EXPECT_TRUE(reply.has_design()) << reply.DebugString();
  return reply.design().reply();
}

constexpr char kUntouched[] =
    "secret=s3cr3t-value path=False present=f,show,state,names,lam imported= collected=0";

void ExpectRefused(const Reply& reply, const std::string& function) {
  ASSERT_TRUE(reply.has_failure()) << function << ": " << reply.DebugString();
  EXPECT_EQ(reply.failure().code(), Failure::PERMISSION_DENIED) << function;
  EXPECT_THAT(reply.failure().message(), HasSubstr("is not allowed")) << function;
  // Refusals never suggest allowing the standard library or the interpreter's own modules.
  for (const char* never : {"--allow-module=posix", "--allow-module=builtins",
                            "--allow-module=os", "--allow-module=subprocess", "--allow-module=sys"}) {
    EXPECT_THAT(reply.failure().message(), Not(HasSubstr(never))) << function;
  }
}

// Both modes: with --allow-module=myviews (the issue's setting) and with none (only the
// operator's directories count).
class BothModes : public ::testing::TestWithParam<bool> {
 protected:
  std::vector<std::string> Flags() const {
    return GetParam() ? std::vector<std::string>{"--allow-module=myviews"}
                      : std::vector<std::string>{};
  }
};

INSTANTIATE_TEST_SUITE_P(AllowList, BothModes, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "AllowModule" : "PathOnly"; });

TEST_P(BothModes, OperatorFunctionsStillRun) {
  Fixture t = Start(Flags());
  Reply reply = Show(*t.worker, "myviews.show", "[null, {}]");
  ASSERT_TRUE(reply.has_design()) << reply.DebugString();
  EXPECT_EQ(reply.design().reply(), R"(["resp",{"body":"show ran"}])");
  EXPECT_EQ(Show(*t.worker, "myviews.lam", "[null, {}]").design().reply(),
            R"(["resp",{"body":"lambda ran"}])");
  EXPECT_EQ(Show(*t.worker, "myviews.f|1", "[null, {}]").design().reply(),
            R"(["resp",{"body":"f ran"}])");
  EXPECT_EQ(State(*t.worker), absl::StrCat(R"(["resp",{"body":")", kUntouched, R"("}])"));
}

// The issue's remote code execution: give the module a __path__ into the standard library,
// then import subprocess as its submodule and call getoutput.
TEST_P(BothModes, SetattrPathThenSubprocessChainIsRefusedAndHasNoEffect) {
  Fixture t = Start(Flags());
  Reply set = Show(*t.worker, "myviews.__setattr__", R"(["__path__", ["/usr/lib/python3.11"]])");
  ExpectRefused(set, "myviews.__setattr__");
  EXPECT_THAT(set.failure().message(), HasSubstr("dunder"));
  Reply run = t.worker->Call(DesignTask(cnp::v1::REWRITE, "myviews.subprocess.getoutput", R"(["id"])"));
  ASSERT_TRUE(run.has_failure()) << run.DebugString();
  EXPECT_THAT(run.DebugString(), Not(HasSubstr("uid=")));
  EXPECT_THAT(State(*t.worker), HasSubstr(kUntouched));
}

TEST_P(BothModes, EveryModuleMachineryNameIsRefused) {
  Fixture t = Start(Flags());
  for (const char* dunder : {"__setattr__", "__getattribute__", "__delattr__", "__init__",
                             "__dir__", "__reduce_ex__", "__new__", "__getattr__", "__class__",
                             "__dict__", "__loader__", "__builtins__", "__import__"}) {
    std::string function = absl::StrCat("myviews.", dunder);
    ExpectRefused(Show(*t.worker, function, R"(["SECRET", "pwned"])"), function);
  }
  // Deeper paths through a dunder part, and dunder modules.
  for (const char* function : {"myviews.__dict__.update", "myviews.__builtins__.exec",
                               "myviews.f.__call__", "myviews.__loader__.exec_module",
                               "unittest.__main__.x", "venv.__main__.main",
                               "lib2to3.__main__.main", "__main__.f", "builtins.__import__"}) {
    ExpectRefused(Show(*t.worker, function, "[null, {}]"), function);
  }
  EXPECT_THAT(State(*t.worker), HasSubstr(kUntouched));
}

TEST_P(BothModes, GetattributeCannotReadAGlobal) {
  Fixture t = Start(Flags());
  Reply reply = Show(*t.worker, "myviews.__getattribute__", R"(["SECRET"])");
  ExpectRefused(reply, "myviews.__getattribute__");
  EXPECT_THAT(reply.DebugString(), Not(HasSubstr("s3cr3t")));
  // Nor can the name of a non-function global reveal its value.
  Reply global = Show(*t.worker, "myviews.SECRET", "[null, {}]");
  ASSERT_TRUE(global.has_failure());
  EXPECT_THAT(global.DebugString(), Not(HasSubstr("s3cr3t")));
}

TEST_P(BothModes, DelattrCannotRemoveAFunction) {
  Fixture t = Start(Flags());
  ExpectRefused(Show(*t.worker, "myviews.__delattr__", R"(["show"])"), "myviews.__delattr__");
  EXPECT_EQ(Show(*t.worker, "myviews.show", "[null, {}]").design().reply(),
            R"(["resp",{"body":"show ran"}])");
}

TEST_P(BothModes, ClassesBuiltinsBoundMethodsAndWrappersAreNeverCallable) {
  Fixture t = Start(Flags());
  struct Case {
    const char* name;
    const char* type;
  } cases[] = {
      {"Klass", "type"},
      {"CallableThing", "type"},
      {"Forbidden", "type"},
      {"instance", "CallableThing"},
      {"bound", "method"},
      {"appender", "builtin_function_or_method"},
      {"wrapper", "method-wrapper"},
      {"partial", "functools.partial"},
      {"static", "staticmethod"},
      {"length", "builtin_function_or_method"},
      {"setter", "builtin_function_or_method"},
      {"getter", "builtin_function_or_method"},
      {"evaluate", "builtin_function_or_method"},
      {"module_setattr", "wrapper_descriptor"},
      {"emit", "builtin_function_or_method"},
      {"log", "builtin_function_or_method"},
  };
  for (const Case& c : cases) {
    std::string function = absl::StrCat("myviews.", c.name);
    Reply reply = Show(*t.worker, function, R"(["SECRET", "pwned"])");
    ExpectRefused(reply, function);
    EXPECT_THAT(reply.failure().message(), HasSubstr(absl::StrCat("it is of type ", c.type)))
        << function;
  }
  EXPECT_THAT(State(*t.worker), HasSubstr(kUntouched));
}

TEST_P(BothModes, FunctionsFromTheStandardLibraryOrThePackageAreRefusedEvenWhenReexported) {
  Fixture t = Start(Flags());
  // Python functions, but defined in the standard library or in couch_named_python: their
  // own module or their code's file gives them away, whatever name they are bound to.
  for (const char* function : {"myviews.dumps", "myviews.getoutput", "myviews.laundered",
                               "myviews.start", "myviews.version"}) {
    Reply reply = Show(*t.worker, function, R"(["id"])");
    ExpectRefused(reply, function);
    EXPECT_THAT(reply.DebugString(), Not(HasSubstr("uid=")));
  }
  Reply laundered = Show(*t.worker, "myviews.laundered", R"(["id"])");
  EXPECT_THAT(laundered.failure().message(), HasSubstr("standard library"));
  // And the standard library by its own names.
  for (const char* function : {"os.system", "posix.system", "subprocess.getoutput",
                               "builtins.exec", "sys.exit", "json.dumps", "this.s"}) {
    ExpectRefused(Show(*t.worker, function, R"(["id"])"), function);
  }
}

// The one kind of function whose code lives in couch_named_python and still runs: what a
// handler factory made (mr.item("town")), bound in the operator's module that asked for it.
// The factories themselves, other package functions and a product re-exported by another
// module stay refused.
TEST(FactoryProductTest, OnlyAFactorysProductBoundInItsOwnModuleRuns) {
  Fixture t = Start({"--allow-module=handlers", "--allow-module=relay"});
  WriteModule(t.dir + "/handlers.py",
              "from couch_named_python.mr import count, handler, item\n"
              "town = item('town')\n"
              "counted = handler(count)\n"
              "count_itself = count\n"
              "item_itself = item\n");
  WriteModule(t.dir + "/relay.py", "from handlers import town\n");
  Reply mapped = t.worker->Call(MapTask({"handlers.town"}, {R"({"_id":"a","town":"Oslo"})"}));
  ASSERT_TRUE(mapped.has_map()) << mapped.DebugString();
  EXPECT_THAT(mapped.map().DebugString(), HasSubstr("Oslo"));
  EXPECT_THAT(mapped.map().DebugString(), Not(HasSubstr("error")));
  for (const char* function : {"handlers.count_itself", "handlers.item_itself", "relay.town"}) {
    ExpectRefused(t.worker->Call(MapTask({function}, {R"({"_id":"a","town":"Oslo"})"})),
                  function);
  }
}

// couch_named_python's helper factories (couch_named_python.mr) make functions whose code is
// the package's: callable only as what they were made for, a name in the module that made them.
TEST_P(BothModes, FactoryProductsRunOnlyUnderTheModuleThatMadeThem) {
  Fixture t = Start(GetParam() ? std::vector<std::string>{"--allow-module=myviews",
                                                          "--allow-module=reexporter"}
                               : std::vector<std::string>{});
  Reply map = t.worker->Call(MapTask({"myviews.by_town"}, {R"({"town":"Oslo"})"}));
  ASSERT_TRUE(map.has_map()) << map.DebugString();
  EXPECT_EQ(map.map().results(0).rows(), R"([[["Oslo",null]]])");
  Reply resolved = t.worker->Call(ResolveTask({"myviews.counted"}));
  EXPECT_EQ(resolved.resolve().functions(0).error(), "");
  // Re-exported elsewhere, a product is refused; a plain function is not.
  ExpectRefused(t.worker->Call(MapTask({"reexporter.by_town"}, {"{}"})), "reexporter.by_town");
  EXPECT_TRUE(Show(*t.worker, "reexporter.show", "[null, {}]").has_design());
  // The package's own function, and the registration used to launder standard-library code.
  ExpectRefused(Show(*t.worker, "myviews.raw_count", "[null, {}]"), "myviews.raw_count");
  Reply laundered = Show(*t.worker, "myviews.product_of_stdlib", R"(["id"])");
  ExpectRefused(laundered, "myviews.product_of_stdlib");
  EXPECT_THAT(laundered.failure().message(), HasSubstr("standard library"));
}

// Issue 7: modules were imported (their top-level code run) before they were checked.
TEST(PreImportTest, ARefusedModulesCodeNeverRuns) {
  Fixture t = Start({"--allow-module=myviews", "--allow-module=pkg.sub"});
  ExpectRefused(Show(*t.worker, "myviews_evil.f", "[null, {}]"), "myviews_evil.f");
  EXPECT_FALSE(Exists(t.dir + "/marker")) << "myviews_evil's top-level code ran";
  // A prefix covers whole module names only: pkg.sub does not cover pkg.subversive.
  ExpectRefused(Show(*t.worker, "pkg.subversive.f", "[null, {}]"), "pkg.subversive.f");
  ExpectRefused(Show(*t.worker, "pkg.other.f", "[null, {}]"), "pkg.other.f");
  EXPECT_FALSE(Exists(t.dir + "/marker.subversive"));
  EXPECT_FALSE(Exists(t.dir + "/marker.other"));
  EXPECT_EQ(Show(*t.worker, "pkg.sub.f", "[null, {}]").design().reply(),
            R"(["resp",{"body":"sub ran"}])");
  // Standard-library modules whose import runs code: never imported.
  for (const char* function : {"this.s", "this.x", "unittest.__main__.x", "venv.__main__.main",
                               "lib2to3.__main__.main", "antigravity.geohash"}) {
    ExpectRefused(Show(*t.worker, function, "[null, {}]"), function);
  }
  EXPECT_THAT(State(*t.worker), HasSubstr(kUntouched));
  EXPECT_THAT(t.worker->ReadStderr(), Not(HasSubstr("Beautiful is better than ugly")));
}

TEST(PreImportTest, TheMarkerDoesShowAModuleThatRan) {
  // The same module where the operator allows it: the marker appears, so its absence above
  // means the code did not run.
  Fixture t = Start();
  Reply reply = Show(*t.worker, "myviews_evil.f", "[null, {}]");
  ASSERT_TRUE(reply.has_design()) << reply.DebugString();
  EXPECT_TRUE(Exists(t.dir + "/marker"));
}

TEST(PreImportTest, StandardLibraryModulesAreRefusedWithoutAllowList) {
  Fixture t = Start();
  for (const char* function : {"this.s", "unittest.__main__.x", "venv.__main__.main",
                               "antigravity.geohash", "unittest.main"}) {
    ExpectRefused(Show(*t.worker, function, "[null, {}]"), function);
  }
  Reply os = Show(*t.worker, "os.system", R"(["id"])");
  EXPECT_THAT(os.failure().message(), HasSubstr("standard library"));
  EXPECT_THAT(State(*t.worker), HasSubstr("imported= "));
  EXPECT_THAT(t.worker->ReadStderr(), Not(HasSubstr("Beautiful is better than ugly")));
}

// "Nothing reachable from a request can assign to a module attribute": every name the
// module, its type, a function and object offer, through every kind of task, with arguments
// that would assign or delete. Only the operator's functions may run.
TEST_P(BothModes, NoRouteAssignsToAModuleAttribute) {
  Fixture t = Start(Flags());
  Reply listed = Show(*t.worker, "myviews.names", "[null, {}]");
  ASSERT_TRUE(listed.has_design()) << listed.DebugString();
  std::string body = listed.design().reply();
  body = body.substr(body.find("\"body\":\"") + 8);
  body = body.substr(0, body.find('"'));
  std::vector<std::string> names = absl::StrSplit(body, ' ', absl::SkipEmpty());
  ASSERT_GT(names.size(), 50u);
  std::set<std::string> functions(std::begin(kMyviewsFunctions), std::end(kMyviewsFunctions));
  std::set<std::string> ran;
  std::vector<std::string> routes;
  for (const std::string& name : names) {
    routes.push_back(absl::StrCat("myviews.", name));
    routes.push_back(absl::StrCat("myviews.", name, ".__call__"));
    routes.push_back(absl::StrCat("myviews.", name, ".update"));
  }
  for (const char* extra : {"myviews.sys.modules", "myviews.subprocess.getoutput",
                            "myviews.types.ModuleType", "myviews.Klass.method",
                            "myviews.Klass.static", "myviews.COLLECTED.append",
                            "myviews.f.__globals__", "myviews.functools.partial"}) {
    routes.push_back(extra);
  }
  const std::string assign = R"(["SECRET", "pwned"])";
  for (const std::string& route : routes) {
    std::vector<Task> tasks = {
        DesignTask(cnp::v1::SHOW, route, assign),
        DesignTask(cnp::v1::UPDATE, route, assign),
        DesignTask(cnp::v1::REWRITE, route, R"(["SECRET"])"),
        DesignTask(cnp::v1::FILTER, route, R"([["SECRET"], "pwned"])"),
        MapTask({route}, {R"({"_id":"SECRET"})"}),
    };
    for (const Task& task : tasks) {
      Reply reply = t.worker->Call(task);
      if (reply.has_failure()) {
        // BAD_INPUT: an allowed function, never handed text where CouchDB passes documents.
        EXPECT_THAT(reply.failure().code(),
                    AnyOf(Failure::PERMISSION_DENIED, Failure::NOT_FOUND,
                          Failure::VERSION_MISMATCH, Failure::BAD_NAME, Failure::BAD_INPUT))
            << route << ": " << reply.failure().message();
        if (reply.failure().code() == Failure::BAD_INPUT) {
          EXPECT_THAT(reply.failure().message(), HasSubstr("must be a JSON object")) << route;
          ran.insert(route);  // loaded: it is an allowed function
        }
        if (reply.failure().code() == Failure::PERMISSION_DENIED) ExpectRefused(reply, route);
      } else {
        ran.insert(route);
      }
    }
    Reply resolved = t.worker->Call(ResolveTask({route}));
    if (resolved.resolve().functions(0).error().empty()) ran.insert(route);
  }
  std::set<std::string> allowed;
  for (const std::string& name : functions) allowed.insert("myviews." + name);
  EXPECT_EQ(ran, allowed);
  EXPECT_THAT(State(*t.worker), HasSubstr(kUntouched));
}

TEST(NamesTest, NulAndControlCharactersAreRefusedNotTruncated) {
  Fixture t = Start();
  // Each would be "myviews.show" (which runs) if the name were cut at the NUL.
  for (const std::string& function :
       {std::string("myviews.show\0evil", 17), std::string("myviews.show\0", 13),
        std::string("myviews\0.show", 13), std::string("myviews.show\n"),
        std::string("myviews.sh\tow"), std::string("myviews.show|1\r"),
        std::string("myviews.show\x7f")}) {
    Reply reply = Show(*t.worker, function, "[null, {}]");
    ASSERT_TRUE(reply.has_failure()) << reply.DebugString();
    EXPECT_EQ(reply.failure().code(), Failure::BAD_NAME);
    EXPECT_THAT(reply.failure().message(), HasSubstr("control character"));
    EXPECT_EQ(reply.failure().function().find('\0'), std::string::npos);
    EXPECT_EQ(reply.failure().message().find('\0'), std::string::npos);
  }
  Reply nul = Show(*t.worker, std::string("myviews.show\0evil", 17), "[null, {}]");
  EXPECT_THAT(nul.failure().message(), HasSubstr("myviews.show\\x00evil"));
}

TEST(NamesTest, EveryPartMustBeAnIdentifier) {
  Fixture t = Start();
  for (const char* function : {"myviews.sh-ow", "my views.show", "myviews.1show", "myviews.show()",
                               "myviews.show;x", "myviews/show.x", "myviews.show ", "../myviews.show"}) {
    Reply reply = Show(*t.worker, function, "[null, {}]");
    ASSERT_TRUE(reply.has_failure()) << function;
    EXPECT_EQ(reply.failure().code(), Failure::BAD_NAME) << function;
  }
  // Identifiers outside ASCII are identifiers (Python decides), other letters are not.
  WriteModule(t.dir + "/unicode_names.py", "def maß(doc, req):\n    return {'body': 'ß'}\n");
  Reply unicode = Show(*t.worker, "unicode_names.maß", "[null, {}]");
  EXPECT_EQ(unicode.design().reply(), R"(["resp",{"body":"ß"}])") << unicode.DebugString();
  Reply dash = Show(*t.worker, "unicode_names.ma–ß", "[null, {}]");
  EXPECT_EQ(dash.failure().code(), Failure::BAD_NAME) << dash.DebugString();
}

TEST(NamesTest, AHugeNameIsRefusedWithoutEchoingIt) {
  Fixture t = Start();
  std::string huge = "myviews." + std::string(1 << 20, 'a');
  std::string padded = "myviews.show|" + std::string(1 << 20, ' ') + "1";
  for (const std::string& function : {huge, padded}) {
    for (int i = 0; i < 20; ++i) {
      Reply reply = Show(*t.worker, function, "[null, {}]");
      ASSERT_TRUE(reply.has_failure());
      EXPECT_EQ(reply.failure().code(), Failure::BAD_NAME);
      EXPECT_THAT(reply.failure().message(), HasSubstr("too long"));
      EXPECT_LT(reply.failure().message().size(), 300u);
      EXPECT_LT(reply.failure().function().size(), 600u);
    }
  }
  Reply resolved = t.worker->Call(ResolveTask({huge}));
  EXPECT_LT(resolved.ByteSizeLong(), 1000u);
  // A name at the limit is still a name.
  std::string longest(512 - std::string("myviews.").size(), 'b');
  Reply at_limit = Show(*t.worker, "myviews." + longest, "[null, {}]");
  EXPECT_EQ(at_limit.failure().code(), Failure::NOT_FOUND);
  EXPECT_LT(t.worker->ReadStderr().size(), 4096u);
}

// A module file another user may write to is somebody else's code: refused before it is
// imported, whatever the directory, and so is an edit picked up without a restart; made
// private again, it runs.
TEST(CodeFileTest, AModuleFileOtherUsersMayChangeIsRefused) {
  Fixture t = Start();
  std::string file = t.dir + "/shared.py";
  auto version = [&](int n, const std::string& top) {
    WriteModule(file, absl::StrCat("from couch_named_python import version\n", top,
                                   "@version(", n, ")\n"
                                   "def show(doc, req):\n"
                                   "    return {'body': 'shared ", n, " ran'}\n"));
  };
  version(1, "");
  ::chmod(file.c_str(), 0666);
  Reply open = Show(*t.worker, "shared.show|1", "[null, {}]");
  ExpectRefused(open, "shared.show|1");
  EXPECT_THAT(open.failure().message(), HasSubstr("is writable by every user (mode 0666)"));
  EXPECT_THAT(open.failure().message(), HasSubstr("chmod go-w " + file));

  ::chmod(file.c_str(), 0644);
  EXPECT_EQ(Show(*t.worker, "shared.show|1", "[null, {}]").design().reply(),
            R"(["resp",{"body":"shared 1 ran"}])");
  // Its group edits it (a new @version, and top-level code that leaves a marker).
  version(2, absl::StrCat("open('", t.dir, "/marker.shared', 'w').close()\n"));
  ::chmod(file.c_str(), 0664);
  Reply edited = Show(*t.worker, "shared.show|2", "[null, {}]");
  ExpectRefused(edited, "shared.show|2");
  EXPECT_THAT(edited.failure().message(), HasSubstr("is writable by its group (mode 0664)"));
  EXPECT_FALSE(Exists(t.dir + "/marker.shared")) << "the edited module's code ran";
}

// Security review: a symlink in an operator's package to the standard library made that code
// the operator's, so pkg.sp.getoutput (pkg/sp.py -> subprocess.py) ran a document's keys as a
// shell command; a symlink to the standard library's directory did the same. Where the file
// is, as imported and as resolved, decides by the stricter: both are refused, with
// --allow-module naming the package and without any, and nothing runs.
TEST(CodeFileTest, ASymlinkIntoTheStandardLibraryIsTheStandardLibrary) {
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--allow-module=pkg"}, std::vector<std::string>{}}) {
    Fixture t = Start(flags);
    ASSERT_EQ(::symlink("/usr/lib/python3.11/subprocess.py", (t.dir + "/pkg/sp.py").c_str()), 0);
    ASSERT_EQ(::symlink("/usr/lib/python3.11", (t.dir + "/pkg/std").c_str()), 0);
    const std::string marker = t.dir + "/marker.shell";
    const std::string doc = absl::StrCat(R"({"_id":"d","touch )", marker, R"(":1})");
    for (const char* function : {"pkg.sp.getoutput", "pkg.std.subprocess.getoutput"}) {
      Reply reply = t.worker->Call(MapTask({function}, {doc}));
      ExpectRefused(reply, function);
      EXPECT_THAT(reply.failure().message(), HasSubstr("standard library")) << function;
    }
    EXPECT_FALSE(Exists(marker)) << "a shell command ran";
    // The package's own module still runs.
    EXPECT_EQ(Show(*t.worker, "pkg.sub.f", "[null, {}]").design().reply(),
              R"(["resp",{"body":"sub ran"}])");
  }
}

// A package directory below the code directory that its group may write to: whoever may
// write there may add a module, or a symlink to any file of root's, that an allowed module
// then imports. Its modules are refused until it is private again.
TEST(CodeFileTest, APackageDirectoryOthersMayWriteToIsRefused) {
  Fixture t = Start();
  const std::string package = t.dir + "/pkg";
  ASSERT_EQ(::chmod(package.c_str(), 0775), 0);
  Reply open = Show(*t.worker, "pkg.sub.f", "[null, {}]");
  ExpectRefused(open, "pkg.sub.f");
  EXPECT_THAT(open.failure().message(), HasSubstr("whose directory is writable by its group"));
  EXPECT_THAT(open.failure().message(), HasSubstr("chmod go-w " + package));
  ASSERT_EQ(::chmod(package.c_str(), 0755), 0);
  EXPECT_EQ(Show(*t.worker, "pkg.sub.f", "[null, {}]").design().reply(),
            R"(["resp",{"body":"sub ran"}])");
}

}  // namespace
}  // namespace cnp::security::testing
