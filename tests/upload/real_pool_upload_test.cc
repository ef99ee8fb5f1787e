// The Uploader with the real worker pool (cnp-worker processes importing tests/upload/pyfns):
// versions come from the functions' own @version, and import problems are the worker's.
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/pool/async_worker_pool.h"
#include "service/pool/blocking_task_runner.h"
#include "service/pool/process_worker.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/json.h"
#include "service/upload/uploader.h"
#include "tests/support/pouchdb_server.h"
#include "tests/support/runfiles.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {

using ::cnp::testing::PouchDbServer;
using ::cnp::testing::Runfile;

namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

class RealPoolUploadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pool::PoolOptions options;
    options.workers = 1;
    control_ = new asio::io_context(1);
    pool_ = new pool::AsyncWorkerPool(
        options,
        std::make_unique<pool::ProcessWorkerFactory>(pool::WorkerCommand{
            Runfile("service/worker/cnp-worker"),
            {"--fd=3", absl::StrCat("--python-path=", Runfile("tests/upload/pyfns"))}}),
        *control_);
    absl::Status started = pool_->Start();
    ASSERT_TRUE(started.ok()) << started;
    guard_ = new asio::executor_work_guard<asio::io_context::executor_type>(
        control_->get_executor());
    control_thread_ = new std::thread([] { control_->run(); });
    runner_ = new pool::BlockingTaskRunner(*pool_, *control_);
  }

  static void TearDownTestSuite() {
    if (pool_ != nullptr) pool_->Shutdown();
    delete guard_;
    if (control_thread_ != nullptr) {
      control_->stop();
      control_thread_->join();
    }
    delete control_thread_;
    delete runner_;
    delete pool_;
    delete control_;
  }

  UploadResult Check(const std::string& yaml) {
    v1::UploadRequest request;
    request.set_check_only(true);
    *request.add_files() = File("design.yml", yaml);
    Uploader uploader(*runner_);
    return RunUpload(uploader, request);
  }

  static asio::io_context* control_;
  static pool::AsyncWorkerPool* pool_;
  static pool::BlockingTaskRunner* runner_;
  static asio::executor_work_guard<asio::io_context::executor_type>* guard_;
  static std::thread* control_thread_;
};

asio::io_context* RealPoolUploadTest::control_ = nullptr;
pool::AsyncWorkerPool* RealPoolUploadTest::pool_ = nullptr;
pool::BlockingTaskRunner* RealPoolUploadTest::runner_ = nullptr;
asio::executor_work_guard<asio::io_context::executor_type>* RealPoolUploadTest::guard_ = nullptr;
std::thread* RealPoolUploadTest::control_thread_ = nullptr;

TEST_F(RealPoolUploadTest, TheReadmeExampleGetsTheFunctionsOwnVersions) {
  UploadResult result = Check(
      "location:\n"
      "    views:\n"
      "        towns:\n"
      "            map: uploadfns.townmap\n"
      "        ids: uploadfns.plain_map\n"
      "        counted: {map: uploadfns.townmap, reduce: uploadfns.count_towns}\n"
      "        summed: {map: uploadfns.townmap, reduce: _sum}\n"
      "    validate_doc_update: uploadfns.validate\n");
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  absl::StatusOr<rapidjson::Document> doc =
      couchdb::ParseJson(result.Outcome("_design/location").document_json());
  absl::StatusOr<rapidjson::Document> expected = couchdb::ParseJson(
      R"({"_id": "_design/location", "language": "python",
          "views": {"towns": {"map": "uploadfns.townmap|123"},
                    "ids": {"map": "uploadfns.plain_map"},
                    "counted": {"map": "uploadfns.townmap|123", "reduce": "uploadfns.count_towns|4"},
                    "summed": {"map": "uploadfns.townmap|123", "reduce": "_sum"}},
          "validate_doc_update": "uploadfns.validate|21"})");
  ASSERT_TRUE(doc.ok() && expected.ok());
  EXPECT_TRUE(couchdb::JsonEqual(*doc, *expected)) << result.Outcome("_design/location").document_json();
}

TEST_F(RealPoolUploadTest, ImportProblemsAreReportedAtTheirLines) {
  UploadResult result = Check(
      "d:\n"                                        // 1
      "  views:\n"                                  // 2
      "    a: nosuchmodule.fn\n"                    // 3
      "    b: uploadfns.nosuchfn\n"                 // 4
      "    c: uploadfns_broken.fn\n"                // 5
      "    d: os.system\n"                          // 6
      "    e: uploadfns.not_a_function\n"           // 7
      "    ok: uploadfns.townmap\n");               // 8
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  std::vector<int> lines;
  for (const v1::UploadProblem& p : result.errors()) lines.push_back(p.location().line());
  EXPECT_THAT(lines, UnorderedElementsAre(3, 4, 5, 6, 7)) << result.Dump();
  for (const v1::UploadProblem& p : result.errors()) {
    if (p.location().line() == 5) {
      EXPECT_THAT(p.message(), HasSubstr("broken on purpose"));
    } else if (p.location().line() == 6) {
      EXPECT_THAT(p.message(), HasSubstr("is refused"));
    }
  }
}

TEST_F(RealPoolUploadTest, FunctionsThatWouldRunNoneOfTheirBodyAreRefusedWhereTheyServe) {
  UploadResult result = Check(
      "d:\n"                                           // 1
      "  views:\n"                                     // 2
      "    yields: uploadfns.townmap\n"                // 3 a generator map: fine
      "    awaits: uploadfns.async_map\n"              // 4
      "    summed: {map: uploadfns.townmap, reduce: uploadfns.generator_reduce}\n"  // 5
      "  filters:\n"                                   // 6
      "    oslo: uploadfns.generator_filter\n"         // 7
      "  lists:\n"                                     // 8
      "    rows: uploadfns.generator_list\n"           // 9 the generator form: fine
      "    later: uploadfns.async_list\n"              // 10
      "  shows:\n"                                     // 11
      "    town: uploadfns.generator_filter\n");       // 12
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  std::vector<int> lines;
  for (const v1::UploadProblem& p : result.errors()) {
    lines.push_back(p.location().line());
    EXPECT_THAT(p.message(), HasSubstr("without running its body")) << result.Dump();
    EXPECT_THAT(p.message(), HasSubstr("take out its yield or async")) << result.Dump();
    if (p.location().line() == 7) {
      EXPECT_THAT(p.message(),
                  HasSubstr("\"uploadfns.generator_filter\" returns a generator (it has a "
                            "yield) without running its body, so as a filter it would filter "
                            "nothing"));
    } else if (p.location().line() == 4) {
      EXPECT_THAT(p.message(), HasSubstr("a coroutine (it is async def)"));
      EXPECT_THAT(p.message(), HasSubstr("as a map function it would emit nothing"));
    } else if (p.location().line() == 5) {
      EXPECT_THAT(p.message(), HasSubstr("as a reduce function"));
    }
  }
  EXPECT_THAT(lines, UnorderedElementsAre(4, 5, 7, 10, 12)) << result.Dump();
}

TEST_F(RealPoolUploadTest, UploadsToPouchDbWithRealVersions) {
  absl::StatusOr<std::unique_ptr<PouchDbServer>> couch = PouchDbServer::Start();
  ASSERT_TRUE(couch.ok()) << couch.status();
  couchdb::CouchClient client({.base_url = (*couch)->url()});
  ASSERT_EQ(client.Put("/real", "")->status, 201);

  v1::UploadRequest request;
  request.set_couchdb_url((*couch)->url());
  request.set_database("real");
  *request.add_files() = File("design.yml",
                              "location:\n"
                              "    views:\n"
                              "        towns:\n"
                              "            map: uploadfns.townmap\n"
                              "    validate_doc_update: uploadfns.validate\n");
  Uploader uploader(*runner_);
  UploadResult first = RunUpload(uploader, request);
  ASSERT_TRUE(first.status.ok()) << first.status << "\n" << first.Dump();
  EXPECT_EQ(first.Outcome("_design/location", "real").action(), v1::DesignDocOutcome::CREATED);
  absl::StatusOr<couchdb::HttpResponse> stored = client.Get("/real/_design/location");
  ASSERT_TRUE(stored.ok());
  EXPECT_THAT(stored->body, HasSubstr("\"uploadfns.townmap|123\""));
  EXPECT_THAT(stored->body, HasSubstr("\"uploadfns.validate|21\""));

  UploadResult second = RunUpload(uploader, request);
  ASSERT_TRUE(second.status.ok()) << second.Dump();
  EXPECT_EQ(second.Outcome("_design/location", "real").action(),
            v1::DesignDocOutcome::UNCHANGED);
}

}  // namespace
}  // namespace cnp::upload::testing
