// A module whose code does not import, asked for by call after call (every document of a view
// build names it): FunctionRegistry imports it once, answers the same error until its files
// change, looks at them at most once a second (on a clock of the test's own) for the calls that
// run functions and at once for Resolve, and runs the fix from the first call that looks after
// it is saved. In process, so the clock is the test's: nothing waits for real time to pass.
#include <Python.h>
#include <sys/stat.h>
#include <utime.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/worker/function_registry.h"
#include "service/worker/interpreter.h"

namespace cnp::worker {
namespace {

using ::testing::HasSubstr;

std::string& CodeDir() {
  static std::string dir;
  return dir;
}

class PythonEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string base = absl::StrCat(tmp ? tmp : "/tmp", "/broken-import-XXXXXX");
    ASSERT_NE(::mkdtemp(base.data()), nullptr);
    CodeDir() = base + "/code";
    ASSERT_EQ(::mkdir(CodeDir().c_str(), 0755), 0);
    absl::StatusOr<std::string> package = FindPackageDir();
    ASSERT_TRUE(package.ok()) << package.status();
    absl::StatusOr<CodeRoots> started =
        StartInterpreter({.package_dir = *package, .python_paths = {CodeDir()}});
    ASSERT_TRUE(started.ok()) << started.status();
    roots_ = *started;
  }
  static CodeRoots roots_;
};
CodeRoots PythonEnvironment::roots_;

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new PythonEnvironment);

// Writes `text` to `relative` in the code directory, with its mtime set to `mtime` seconds:
// each version of a file gets a stamp of its own without waiting for the clock to tick.
void WriteCode(const std::string& relative, const std::string& text, time_t mtime) {
  std::string path = CodeDir() + "/" + relative;
  { std::ofstream(path, std::ios::trunc) << text; }
  utimbuf times{mtime, mtime};
  ASSERT_EQ(::utime(path.c_str(), &times), 0) << path;
}

// Top-level code that appends a line to `<module>.imports` (outside the code directory) each
// time it runs: how many times the module's code was imported.
std::string CountingLine(const std::string& module) {
  return absl::StrCat("open('", CodeDir(), "/../", module, ".imports', 'a').write('import\\n')\n");
}

int Imports(const std::string& module) {
  std::ifstream in(CodeDir() + "/../" + module + ".imports");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return static_cast<int>(std::vector<std::string>(absl::StrSplit(text, '\n', absl::SkipEmpty())).size());
}

// What calling the function with an empty document returns (an int), or -1.
long Returned(const LoadedFunction* function) {
  PyRef doc = PyRef::Steal(PyDict_New());
  PyRef result = PyRef::Steal(PyObject_CallOneArg(function->callable.get(), doc.get()));
  if (!result || !PyLong_Check(result.get())) {
    PyErr_Clear();
    return -1;
  }
  return PyLong_AsLong(result.get());
}

class BrokenImportTest : public ::testing::Test {
 protected:
  FunctionRegistry registry_{ModulePolicy({}, PythonEnvironment::roots_), [this] { return now_; }};
  absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);
};

// A package whose __init__ counts its imports and then imports a submodule that does not compile.
void WriteBrokenPackage(const std::string& package) {
  ASSERT_EQ(::mkdir((CodeDir() + "/" + package).c_str(), 0755), 0);
  WriteCode(package + "/__init__.py",
            absl::StrCat(CountingLine(package), "from ", package, ".impl import f\n"), 1000);
  WriteCode(package + "/impl.py", "def f(doc):\n    return (1\n", 1000);
}

TEST_F(BrokenImportTest, ABrokenModuleIsImportedOnceAndAnswersItsOwnErrorEachCall) {
  WriteBrokenPackage("never_compiles");
  absl::StatusOr<const LoadedFunction*> first = registry_.Load("never_compiles.f");
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kNotFound);
  // The real error, its file and line.
  EXPECT_THAT(first.status().message(), HasSubstr("importing never_compiles: SyntaxError:"));
  EXPECT_THAT(first.status().message(), HasSubstr("impl.py, line 2"));
  EXPECT_EQ(Imports("never_compiles"), 1);
  // A view build's worth of calls, over nine seconds: the disk is looked at once a second, and
  // nothing on it changed.
  for (int call = 0; call < 900; ++call) {
    absl::StatusOr<const LoadedFunction*> again = registry_.Load("never_compiles.f");
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.status(), first.status());
    now_ += absl::Milliseconds(10);
  }
  EXPECT_EQ(Imports("never_compiles"), 1);
  // Resolve (uploads, add_fun) looks at once, and finds the same code.
  EXPECT_EQ(registry_.Resolve(*ParseFunctionName("never_compiles.f")).status(), first.status());
  EXPECT_EQ(Imports("never_compiles"), 1);
}

TEST_F(BrokenImportTest, TheFixIsRunByTheFirstCallThatLooksAfterItIsSaved) {
  WriteBrokenPackage("fixed_later");
  ASSERT_FALSE(registry_.Load("fixed_later.f").ok());
  now_ += absl::Milliseconds(1500);  // a look at the disk: unchanged
  ASSERT_FALSE(registry_.Load("fixed_later.f").ok());
  WriteCode("fixed_later/impl.py", "def f(doc):\n    return 42\n", 2000);
  // Within a second of the last look the failure is answered unlooked...
  now_ += absl::Milliseconds(900);
  absl::StatusOr<const LoadedFunction*> unlooked = registry_.Load("fixed_later.f");
  EXPECT_THAT(unlooked.status().message(), HasSubstr("SyntaxError"));
  EXPECT_EQ(Imports("fixed_later"), 1);
  // ...and the first call a second after it runs the fix.
  now_ += absl::Milliseconds(100);
  absl::StatusOr<const LoadedFunction*> fixed = registry_.Load("fixed_later.f");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(Returned(*fixed), 42);
  EXPECT_EQ(Imports("fixed_later"), 2);
}

TEST_F(BrokenImportTest, ResolveSeesTheFixAtOnce) {
  WriteBrokenPackage("resolved_fix");
  ASSERT_FALSE(registry_.Load("resolved_fix.f").ok());
  WriteCode("resolved_fix/impl.py", "def f(doc):\n    return 7\n", 2000);
  absl::StatusOr<const LoadedFunction*> resolved =
      registry_.Resolve(*ParseFunctionName("resolved_fix.f"));
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(Returned(*resolved), 7);
  // The calls that run it have it too, without waiting for their own look.
  absl::StatusOr<const LoadedFunction*> loaded = registry_.Load("resolved_fix.f");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(Returned(*loaded), 7);
}

// A dotted name whose top package does not exist yet ran no code of the operator's: nothing is
// remembered, and the package, once created, is found by the next call that looks (it waited
// up to 10 s, the bound for failures no stamp shows).
TEST_F(BrokenImportTest, AMissingPackageIsNotRememberedAsAFailedImport) {
  absl::StatusOr<const LoadedFunction*> missing = registry_.Load("not_yet_pkg.views.f");
  ASSERT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_THAT(missing.status().message(), HasSubstr("No module named 'not_yet_pkg'"));
  ASSERT_EQ(::mkdir((CodeDir() + "/not_yet_pkg").c_str(), 0755), 0);
  WriteCode("not_yet_pkg/__init__.py", "", 1000);
  WriteCode("not_yet_pkg/views.py", "def f(doc):\n    return 5\n", 1000);
  // Two seconds on: past any once-a-second look, within the 10 s a remembered failure waits.
  now_ += absl::Seconds(2);
  absl::StatusOr<const LoadedFunction*> found = registry_.Load("not_yet_pkg.views.f");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(Returned(*found), 5);
}

TEST_F(BrokenImportTest, AModuleCreatedNextToTheBrokenOneIsSeen) {
  WriteCode("needs_helper.py",
            absl::StrCat(CountingLine("needs_helper"),
                         "from needs_helper_lib import value\n\ndef f(doc):\n    return value\n"),
            1000);
  absl::StatusOr<const LoadedFunction*> missing = registry_.Load("needs_helper.f");
  EXPECT_THAT(missing.status().message(),
              HasSubstr("ModuleNotFoundError: No module named 'needs_helper_lib'"));
  ASSERT_FALSE(registry_.Load("needs_helper.f").ok());
  EXPECT_EQ(Imports("needs_helper"), 1);
  // The new file changes the directory the broken module lies in; its mtime is set, as the
  // files' are, so that the change does not hang on the file system's clock having ticked.
  WriteCode("needs_helper_lib.py", "value = 5\n", 1000);
  utimbuf later{4000, 4000};
  ASSERT_EQ(::utime(CodeDir().c_str(), &later), 0);
  now_ += absl::Seconds(1);
  absl::StatusOr<const LoadedFunction*> found = registry_.Load("needs_helper.f");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(Returned(*found), 5);
}

TEST_F(BrokenImportTest, AFailureNoStampShowsIsTriedAgainAfterTenSeconds) {
  // What it lacks is a data file outside the code directory, which no stamp covers.
  std::string data = CodeDir() + "/../setting.txt";
  WriteCode("needs_setting.py",
            absl::StrCat(CountingLine("needs_setting"), "SETTING = int(open('", data,
                         "').read())\n\ndef f(doc):\n    return SETTING\n"),
            1000);
  ASSERT_FALSE(registry_.Load("needs_setting.f").ok());
  { std::ofstream(data) << "9"; }
  now_ += kRetryFailedImportAfter - absl::Seconds(1);
  EXPECT_THAT(registry_.Load("needs_setting.f").status().message(), HasSubstr("FileNotFoundError"));
  EXPECT_EQ(Imports("needs_setting"), 1);
  now_ += absl::Seconds(1);
  absl::StatusOr<const LoadedFunction*> retried = registry_.Load("needs_setting.f");
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(Returned(*retried), 9);
}

// An imported package edited with a bumped version, whose new code raises at its top level:
// the new version fails with that error, imported once, not once per call; the old version
// goes on running; the fix is picked up a second later at most.
TEST_F(BrokenImportTest, ABrokenEditOfAnImportedModuleIsNotImportedAgainPerCall) {
  auto module = [](int version, const std::string& tail) {
    return absl::StrCat("from couch_named_python import version\n", CountingLine("edited"),
                        "\n@version(", version, ")\ndef f(doc):\n    return ", version, "\n",
                        tail);
  };
  WriteCode("edited.py", module(1, ""), 1000);
  absl::StatusOr<const LoadedFunction*> v1 = registry_.Load("edited.f|1");
  ASSERT_TRUE(v1.ok()) << v1.status();
  WriteCode("edited.py", module(2, "raise RuntimeError('half-way through an edit')\n"), 2000);
  absl::StatusOr<const LoadedFunction*> broken = registry_.Load("edited.f|2");
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(broken.status().message(),
              HasSubstr("RuntimeError: half-way through an edit (edited.py:7 in <module>)"));
  EXPECT_EQ(Imports("edited"), 2);
  for (int call = 0; call < 500; ++call) {
    EXPECT_EQ(registry_.Load("edited.f|2").status(), broken.status());
    absl::StatusOr<const LoadedFunction*> old = registry_.Load("edited.f|1");
    ASSERT_TRUE(old.ok()) << old.status();
    EXPECT_EQ(Returned(*old), 1);
    now_ += absl::Milliseconds(10);
  }
  EXPECT_EQ(Imports("edited"), 2);
  WriteCode("edited.py", module(2, ""), 3000);
  now_ += absl::Seconds(1);
  absl::StatusOr<const LoadedFunction*> v2 = registry_.Load("edited.f|2");
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(Returned(*v2), 2);
  EXPECT_EQ(Imports("edited"), 3);
}

}  // namespace
}  // namespace cnp::worker
