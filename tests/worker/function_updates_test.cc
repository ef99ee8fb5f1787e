// What a long-lived worker makes of a module the operator edits while it runs: a function added
// to a module the worker imported already is found (by Resolve, which upload and add_fun use,
// and by the tasks that run functions).
#include <stdlib.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::testing::HasSubstr;

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

  cnp::v1::ResolvedFunction Resolve(const std::string& name) {
    Reply reply = worker_->Call(ResolveTask({name}));
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
  EXPECT_EQ(Resolve("revmod.brand_new|3").error(), "");
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

}  // namespace
}  // namespace cnp::worker::testing
