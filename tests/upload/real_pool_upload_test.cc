// The Uploader with the real worker pool (cnp-worker processes importing tests/upload/pyfns):
// versions come from the functions' own @version, and import problems are the worker's.
#include <map>
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

// Found by a review: a reduce or a validate_doc_update named as a map passed the check, and the
// view stayed empty (each document's call failed with a TypeError). What each kind is passed is
// fixed; a function whose parameters cannot take it is refused where it is named.
TEST_F(RealPoolUploadTest, FunctionsWhoseParametersCannotTakeWhatTheirKindIsPassedAreRefused) {
  UploadResult result = Check(
      "d:\n"                                                                       // 1
      "  views:\n"                                                                 // 2
      "    reduce_as_map: uploadfns.count_towns\n"                                 // 3
      "    validate_as_map: uploadfns.validate\n"                                  // 4
      "    none: uploadfns.no_parameters\n"                                        // 5
      "    keyword: uploadfns.needs_keyword\n"                                     // 6
      "    defaulted: uploadfns.map_with_default\n"                                // 7 fine
      "    anything: uploadfns.takes_anything\n"                                   // 8 fine
      "    two: {map: uploadfns.plain_map, reduce: uploadfns.two_value_reduce}\n"  // 9 fine
      "    one: {map: uploadfns.plain_map, reduce: uploadfns.one_parameter}\n"     // 10
      "  validate_doc_update: uploadfns.one_parameter\n"                           // 11 fine: (new)
      "  filters:\n"                                                               // 12
      "    oslo: uploadfns.validate\n"                                             // 13
      "  shows:\n"                                                                 // 14
      "    town: uploadfns.map_with_default\n"                                     // 15 fine
      "  lists:\n"                                                                 // 16
      "    four: uploadfns.validate\n"                                             // 17
      "    rows: uploadfns.generator_list\n"                                       // 18 fine
      "    head: uploadfns.one_parameter\n"                                        // 19 fine
      "  rewrites: uploadfns.count_towns\n");                                      // 20
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  std::map<int, std::string> problems;
  for (const v1::UploadProblem& p : result.errors()) problems[p.location().line()] = p.message();
  EXPECT_THAT(problems, ::testing::ElementsAre(::testing::Key(3), ::testing::Key(4),
                                               ::testing::Key(5), ::testing::Key(6),
                                               ::testing::Key(10), ::testing::Key(13),
                                               ::testing::Key(17), ::testing::Key(20)))
      << result.Dump();
  EXPECT_THAT(problems[3], HasSubstr("\"uploadfns.count_towns\": as a map function it is given 1 "
                                     "argument (the document), but it requires 3 (its positional "
                                     "parameters without a default): every call would fail with a "
                                     "TypeError"));
  EXPECT_THAT(problems[5], HasSubstr("as a map function it is given 1 argument (the document), but "
                                     "it takes none"));
  EXPECT_THAT(problems[6], HasSubstr("its keyword-only parameters without a default (town) are "
                                     "never given"));
  EXPECT_THAT(problems[10], HasSubstr("as a reduce function it is given 3 arguments (keys, values, "
                                      "rereduce), but it takes 1"));
  EXPECT_THAT(problems[13], HasSubstr("as a filter it is given 2 arguments (the document, the "
                                      "request), but it requires 4"));
  // Found by a README walkthrough: lists and rewrites were not checked, and were uploaded to
  // fail every request with a render_error.
  EXPECT_THAT(problems[17], HasSubstr("as a list function it is given 2 arguments (the head, the "
                                      "request), but it requires 4"));
  EXPECT_THAT(problems[20], HasSubstr("as a rewrite function it is given 1 argument (the "
                                      "request), but it requires 3"));
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
