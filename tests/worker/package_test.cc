// couch_named_python outside the worker: user modules must import it (to be unit-tested by
// their authors, or resolved by tools), and the helpers that need the worker must say so.
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/spawn.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

// Runs Debian's Python 3.11 (isolated) on `script` with the package on its path; returns
// everything it printed, stderr included.
std::string RunPython(const std::string& script) {
  return ::cnp::testing::RunWithInput(
             {"/usr/bin/python3.11", "-I", "-c",
              absl::StrCat("import sys; sys.path.insert(0, \"", Runfile("service/python"), "\")\n",
                           script)},
             "", ::cnp::testing::Output::kTogether)
      .out;
}

TEST(PackageTest, OldAndNewNamesImport) {
  EXPECT_EQ(RunPython(R"(
from couch_named_python import Unauthorized, Forbidden, version
from couch_named_python import ForbiddenError, UnauthorizedError, NotFound, NotFoundError, Redirect
print(ForbiddenError is Forbidden, UnauthorizedError is Unauthorized, NotFoundError is NotFound)

@version("12")
def f(doc):
    pass
print(f._cnp_version, Redirect("/x").response(), Redirect("/y", permanent=True).response()["code"])
)"),
            "True True True\n12 {'code': 302, 'headers': {'Location': '/x'}} 301\n");
}

TEST(PackageTest, HelpersExplainThatTheyNeedTheWorker) {
  EXPECT_EQ(RunPython(R"(
from couch_named_python import emit, get_row, log
for call in (lambda: emit(1, 2), get_row):
    try:
        call()
    except RuntimeError as e:
        print(e, file=sys.stderr)
log("to stderr")
)"),
            "emit() only works while cnp-worker runs a map function\n"
            "get_row() only works while cnp-worker runs a list or show function\n"
            "to stderr\n");
}

}  // namespace
}  // namespace cnp::worker::testing
