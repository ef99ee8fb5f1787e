// cnp-server end to end: real server binary, real workers, real Python modules, real gRPC.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "grpcpp/generic/generic_stub.h"
#include "tests/support/docs.h"
#include "tests/support/files.h"
#include "tests/support/server_process.h"
#include "tests/support/session_stream.h"
#include "tests/support/worker_pids.h"

namespace cnp {
namespace {

using ::cnp::testing::Doc;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::WriteFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;
using ::testing::SizeIs;
using ::testing::StartsWith;

std::string FunctionsDir() { return testing::Runfile("tests/functions/server"); }

TEST(ServerTest, MapsABatchAcrossWorkersInOrder) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  std::vector<std::string> docs;
  const char* towns[] = {"Oslo", "Kyoto", "Lima"};
  for (int i = 0; i < 1000; ++i) {
    docs.push_back(Doc(absl::StrCat("d", i), absl::StrCat(R"("town":")", towns[i % 3], R"(","n":)", i)));
  }
  auto response = client->Map({"svc_fns.by_town|7"}, docs);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 1000);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(response->results(i).rows(),
              absl::StrCat(R"([[[")", towns[i % 3], R"(",)", i, "]]]"));
  }
}

TEST(ServerTest, AMapOfNoDocumentsAnswersNoResults) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  auto response = client->Map({"svc_fns.by_town|7"}, {});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->results_size(), 0);
}

TEST(ServerTest, PerItemErrorsAndLogsAreData) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  auto response = client->Map({"svc_fns.picky", "svc_fns.doubled"},
                              {Doc("a", R"("n":1)"), Doc("b", R"("n":3)")});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->results(0).rows(), R"([[[1,null]],[["a",2]]])");
  EXPECT_EQ(response->results(0).errors_size(), 0);
  EXPECT_THAT(response->results(0).logs(), ::testing::ElementsAre("doubling a"));
  // The raising function contributes [] for that document only, and says why.
  EXPECT_EQ(response->results(1).rows(), R"([[],[["b",6]]])");
  ASSERT_EQ(response->results(1).errors_size(), 1);
  const v1::FunctionError& e = response->results(1).errors(0);
  EXPECT_EQ(e.function(), "svc_fns.picky");
  EXPECT_EQ(e.doc_id(), "b");
  EXPECT_EQ(e.type(), "ValueError");
  // The message, then where the function raised it.
  EXPECT_THAT(e.message(), ::testing::MatchesRegex(
                               R"(no multiples of three: 3 \(svc_fns\.py:[0-9]+ in picky\))"));
}

TEST(ServerTest, ReducesAndRereduces) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  auto reduced = client->Reduce({"svc_fns.total", "svc_fns.broken_reduce"},
                                R"([[["a","d1"],2],[["b","d2"],5]])", false);
  ASSERT_TRUE(reduced.ok()) << reduced.status();
  EXPECT_THAT(reduced->results(), ::testing::ElementsAre("7", "null"));
  ASSERT_EQ(reduced->errors_size(), 1);
  EXPECT_EQ(reduced->errors(0).type(), "RuntimeError");
  auto rereduced = client->Reduce({"svc_fns.total"}, "[7,8,9]", true);
  ASSERT_TRUE(rereduced.ok()) << rereduced.status();
  EXPECT_THAT(rereduced->results(), ::testing::ElementsAre("24"));
}

TEST(ServerTest, ValidateDistinguishesEveryOutcome) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  auto validate = [&](const std::string& reject) {
    v1::ValidateRequest request;
    request.set_function("svc_fns.guard|3");
    request.set_new_doc(Doc("x", reject.empty() ? "" : absl::StrCat(R"("reject":")", reject, "\"")));
    request.set_user_ctx(R"({"db":"db","name":"bob","roles":[]})");
    auto response = client->Validate(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : v1::ValidateResponse();
  };
  EXPECT_EQ(validate("").outcome(), v1::ValidateResponse::OK);
  v1::ValidateResponse forbidden = validate("forbidden");
  EXPECT_EQ(forbidden.outcome(), v1::ValidateResponse::FORBIDDEN);
  EXPECT_EQ(forbidden.message(), "not this one");
  v1::ValidateResponse unauthorized = validate("unauthorized");
  EXPECT_EQ(unauthorized.outcome(), v1::ValidateResponse::UNAUTHORIZED);
  EXPECT_EQ(unauthorized.message(), "who are you");
  v1::ValidateResponse error = validate("error");
  EXPECT_EQ(error.outcome(), v1::ValidateResponse::ERROR);
  EXPECT_EQ(error.error().type(), "KeyError");
}

TEST(ServerTest, VersionMismatchFailsInBothDirectionsWithTheOldMessage) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  auto wrong = client->Map({"svc_fns.by_town|8"}, {Doc("a", "")});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(wrong.status().message(),
              HasSubstr("ValueError: Loaded version 7 did not match expected version 8"));
  auto missing = client->Map({"svc_fns.by_town"}, {Doc("a", "")});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("Loaded version 7 did not match expected version None"));
  auto undecorated = client->Map({"svc_fns.doubled|1"}, {Doc("a", R"("n":1)")});
  EXPECT_EQ(undecorated.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(undecorated.status().message(), HasSubstr("Loaded version None did not match expected version 1"));
}

TEST(ServerTest, CodeUpdatedOnDiskIsPickedUpByTheVersionRetry) {
  std::string dir = testing::MakeTempDir("code");
  WriteFile(dir + "/evolving.py",
            "from couch_named_python import version\n"
            "@version(1)\ndef f(doc):\n    yield 'old', 1\n");
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server", dir}, 1);
  auto client = server->Connect();
  auto first = client->Map({"evolving.f|1"}, {Doc("a", "")});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->results(0).rows(), R"([[["old",1]]])");
  WriteFile(dir + "/evolving.py",
            "from couch_named_python import version\n"
            "@version(2)\ndef f(doc):\n    yield 'new code', 2\n");
  auto second = client->Map({"evolving.f|2"}, {Doc("a", "")});
  ASSERT_TRUE(second.ok()) << second.status() << server->Log();
  EXPECT_EQ(second->results(0).rows(), R"([[["new code",2]]])");
}

// live.py as the code on disk says: f emits [label, its worker's pid] (testing::PidsByLabel).
std::string LiveCode(const std::string& label) {
  return absl::StrCat("import os\n\ndef f(doc):\n    yield '", label, "', os.getpid()\n");
}

TEST(ServerTest, SighupReloadsEveryWorkerWithoutFailingACall) {
  constexpr size_t kWorkers = 2;  // StartServer's
  std::string dir = testing::MakeTempDir("code");
  WriteFile(dir + "/live.py", LiveCode("before"));
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server", dir}, 2);
  auto client = server->Connect();
  // Every worker imports the code as it is now: one that never ran live.f would import whatever
  // is on disk at its first call, reloaded or not.
  auto before = testing::PidsByLabel(*client, "live.f");
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_THAT(*before, ElementsAre(Pair("before", SizeIs(kWorkers))));
  WriteFile(dir + "/live.py", LiveCode("after the reload"));
  server->Signal(SIGHUP);
  // Call continuously while the workers are replaced one by one: no call may fail.
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  int calls = 0;
  while (!absl::StrContains(server->Log(), "reload finished") && absl::Now() < give_up) {
    auto r = client->Map({"live.f"}, {Doc("a", "")});
    ASSERT_TRUE(r.ok()) << "call " << calls << " failed during the reload: " << r.status();
    ++calls;
  }
  ASSERT_THAT(server->Log(), HasSubstr("reload finished"));
  std::cerr << calls << " calls during the reload\n";
  // Then every worker answers with the new code, and none of them is a process from before.
  auto after = testing::PidsByLabel(*client, "live.f");
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_THAT(*after, ElementsAre(Pair("after the reload", SizeIs(kWorkers)))) << server->Log();
  for (int pid : after->at("after the reload")) {
    EXPECT_FALSE(before->at("before").contains(pid)) << "worker " << pid << " was not replaced";
  }
}

TEST(ServerTest, ACrashFailsOnlyThatCallAndTheWorkerComesBack) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 1);
  auto client = server->Connect();
  auto exited = client->Map({"svc_fns.exits"}, {Doc("a", "")});
  EXPECT_EQ(exited.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(exited.status().message(), HasSubstr("exited with status 3"));
  auto segfault = client->Map({"svc_fns.segfaults"}, {Doc("a", "")});
  EXPECT_EQ(segfault.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(segfault.status().message(), HasSubstr("killed by signal 11"));
  auto fine = client->Map({"svc_fns.doubled"}, {Doc("a", R"("n":2)")});
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->results(0).rows(), R"([[["a",4]]])");
}

TEST(ServerTest, AnEndlessLoopHitsTheDeadlineAndTheWorkerIsReplaced) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/functions/server"}, 1, {"--call-timeout=1s"});
  auto client = server->Connect();
  auto spun = client->Map({"svc_fns.spins"}, {Doc("a", "")});
  EXPECT_EQ(spun.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(spun.status().message(), HasSubstr("did not finish before the deadline"));
  // Whose deadline, told by the RPC (the pool, which a CouchDB session shares, says what ran
  // out; the session names CouchDB's timeout instead).
  EXPECT_THAT(spun.status().message(),
              HasSubstr("(the call's deadline: the client's, or cnp-server's --call-timeout, "
                        "1s, whichever came first)"));
  auto fine = client->Map({"svc_fns.doubled"}, {Doc("a", R"("n":5)")});
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->results(0).rows(), R"([[["a",10]]])");
}

TEST(ServerTest, AMemoryBlowUpIsAnErrorForThatDocumentOnly) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/functions/server"}, 1, {"--worker-memory-mb=400"});
  auto client = server->Connect();
  auto hoarded = client->Map({"svc_fns.hoards"}, {Doc("a", "")});
  ASSERT_TRUE(hoarded.ok()) << hoarded.status();
  ASSERT_EQ(hoarded->results(0).errors_size(), 1);
  EXPECT_EQ(hoarded->results(0).errors(0).type(), "MemoryError");
  EXPECT_EQ(hoarded->results(0).rows(), "[[]]");
  auto fine = client->Map({"svc_fns.doubled"}, {Doc("a", R"("n":1)")});
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_THAT(server->Log(), HasSubstr("ran out of memory"));
}

// Memory a function takes outside Python and keeps (a C library's leak, ctypes) fills the
// worker's cap without a MemoryError: the worker is replaced, before the next call, whoever's,
// finds nothing left to allocate. Before, the watch compared the worker's resident size with
// the cap, which it can never pass (the cap is on the address space), and the next call sent
// there failed with MemoryError (found by a robustness probe).
TEST(ServerTest, AWorkerFilledOutsidePythonIsReplacedBeforeTheNextCall) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/functions/server"}, 1, {"--worker-memory-mb=256"});
  auto client = server->Connect();
  auto filled = client->Map({"svc_fns.fills_outside_python"}, {Doc("a", "")});
  ASSERT_TRUE(filled.ok()) << filled.status();
  EXPECT_EQ(filled->results(0).errors_size(), 0);
  EXPECT_THAT(filled->results(0).rows(), HasSubstr(R"("taken_mib")"));
  ASSERT_TRUE(server->WaitForLog("MiB a call may need: replacing it", absl::Seconds(30)))
      << server->Log();
  auto next = client->Map({"svc_fns.takes_32_mib"}, {Doc("b", "")});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->results(0).errors_size(), 0) << next->results(0).errors(0).message();
  EXPECT_EQ(next->results(0).rows(), R"([[["b",33554432]]])");
}

// On the Session stream (CouchDB's remote path) the same MemoryError cannot be a row: "[[]]"
// would tell CouchDB the document emits nothing, and the view would miss it for good. The line
// is an error, as a direct session's is, and the session goes on on a fresh worker.
TEST(ServerTest, AMemoryBlowUpInASessionIsAnErrorLineNeverAnEmptyRow) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/functions/server"}, 1, {"--worker-memory-mb=400"});
  testing::SessionStream stream(*server);
  auto ask = [&](const std::string& line) {
    return stream.Ask(line).value_or(std::vector<std::string>{});
  };
  ASSERT_THAT(ask(R"(["add_fun","svc_fns.hoards"])"), ElementsAre("true"));
  EXPECT_THAT(ask(R"(["map_doc",{"_id":"a"}])"),
              ElementsAre(HasSubstr("MemoryError"),
                          StartsWith(R"(["error","memory_error","cnp-server: MemoryError)")));
  ASSERT_TRUE(stream.Send("[\"reset\"]"));  // answered by the adapter, not the server
  ASSERT_THAT(ask(R"(["add_fun","svc_fns.doubled"])"), ElementsAre("true"));
  EXPECT_THAT(ask(R"(["map_doc",{"_id":"b","n":2}])"),
              ElementsAre(R"(["log","doubling b"])", R"([[["b",4]]])"));
  EXPECT_THAT(server->Log(), HasSubstr("ran out of memory"));
  EXPECT_TRUE(stream.Finish().ok());
}

// The design documents every Session stream holds, together, are bounded by
// --max-session-design-memory: a stream that would pass it is answered with an error for that
// ddoc, and a stream that ends gives its share back.
TEST(ServerTest, SessionStreamsShareTheDesignDocumentBudget) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 1,
                                                  {"--max-session-design-memory=1000000"});
  auto ddoc = [](const std::string& id, size_t bytes) {
    return absl::StrCat(R"(["ddoc","new","_design/)", id, R"(",{"_id":"_design/)", id,
                        R"(","filters":{"f":"svc_fns.)", std::string(bytes, 'x'), R"("}}])");
  };
  testing::SessionStream first(*server);
  EXPECT_THAT(first.Ask(ddoc("a", 700000)).value_or(std::vector<std::string>{}),
              ElementsAre("true"));
  testing::SessionStream second(*server);
  EXPECT_THAT(second.Ask(ddoc("b", 500000)).value_or(std::vector<std::string>{}),
              ElementsAre(AllOf(StartsWith(R"(["error","query_protocol_error",)"),
                                HasSubstr("--max-session-design-memory"))));
  EXPECT_TRUE(first.Finish().ok());
  // The server destroys a stream's session before it sends the stream's status, so the share
  // is back by the time Finish returns.
  EXPECT_THAT(second.Ask(ddoc("b", 500000)).value_or(std::vector<std::string>{}),
              ElementsAre("true"));
  EXPECT_TRUE(second.Finish().ok());
}

// A worker leads a process group of its own, so that a signal to the server's group does not
// reach it, and leaves the signals a function's own processes inherit at their defaults (with
// SIGTERM ignored instead, a subprocess a function started could not be terminated).
TEST(ServerTest, WorkersHaveTheirOwnProcessGroupAndDefaultSignals) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 1);
  auto client = server->Connect();
  auto response = client->Map({"svc_fns.process_group"}, {Doc("a", "")});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->results(0).rows(),
            R"([[["own_group",true],["SIGTERM","not ignored"],["SIGINT","not ignored"],)"
            R"(["SIGQUIT","not ignored"]]])");
}

TEST(ServerTest, RecyclesAWorkerAfterItsCallAllowance) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 1,
                                                  {"--max-calls-per-worker=2"});
  auto client = server->Connect();
  std::vector<std::string> pids;
  for (int i = 0; i < 6; ++i) {
    auto r = client->Map({"svc_fns.pid"}, {Doc("a", "")});
    ASSERT_TRUE(r.ok()) << "call " << i << ": " << r.status();
    pids.push_back(r->results(0).rows());
  }
  // Two calls per process: three processes served the six calls, none of them failed.
  EXPECT_EQ(pids[0], pids[1]);
  EXPECT_NE(pids[1], pids[2]);
  EXPECT_EQ(pids[2], pids[3]);
  EXPECT_NE(pids[3], pids[4]);
  EXPECT_EQ(pids[4], pids[5]);
  EXPECT_THAT(server->Log(), HasSubstr("reached --max-calls-per-worker"));
}

TEST(ServerTest, RefusesModulesTheOperatorDidNotAllow) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/functions/server"}, 2, {"--allow-module=svc_fns"});
  auto client = server->Connect();
  // os.system re-exported through an allowed module is still os.system.
  auto reexported = client->Map({"svc_fns.system"}, {Doc("a", "")});
  EXPECT_EQ(reexported.status().code(), absl::StatusCode::kPermissionDenied);
  auto stdlib = client->Map({"os.system"}, {Doc("a", "")});
  EXPECT_EQ(stdlib.status().code(), absl::StatusCode::kPermissionDenied);
  auto allowed = client->Map({"svc_fns.doubled"}, {Doc("a", R"("n":1)")});
  EXPECT_TRUE(allowed.ok()) << allowed.status();
}

TEST(ServerTest, MalformedJsonAndBadNamesAreInvalidArguments) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  auto malformed = client->Map({"svc_fns.doubled"}, {R"({"_id":"a", "n": )"});
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(malformed.status().message(), "document 0: invalid JSON at byte 17: Invalid value.");
  // A call run in parts (here three, on two workers) names the document by its place in the
  // call, not in the part the worker ran.
  std::vector<std::string> docs;
  for (int i = 0; i < 200; ++i) docs.push_back(Doc(absl::StrCat("d", i), R"("n":1)"));
  docs[150] = R"({"_id":"d150", "n": )";
  auto malformed_in_part = client->Map({"svc_fns.doubled"}, docs);
  EXPECT_EQ(malformed_in_part.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(malformed_in_part.status().message(), HasSubstr("document 150: invalid JSON"));
  auto bad_name = client->Map({"nodots"}, {Doc("a", "")});
  EXPECT_EQ(bad_name.status().code(), absl::StatusCode::kInvalidArgument);
  auto missing = client->Map({"no_such_module.f"}, {Doc("a", "")});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto none = client->Map({}, {Doc("a", "")});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ServerTest, MapsAVeryLargeDocument) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  std::string blob(40 << 20, 'x');
  auto response = client->Map({"svc_fns.size_of"}, {Doc("big", absl::StrCat(R"("blob":")", blob, "\""))});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->results(0).rows(), absl::StrCat(R"([[["big",)", blob.size(), "]]]"));
}

TEST(ServerTest, ServesConcurrentClients) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto client = server->Connect();
      for (int i = 0; i < 100; ++i) {
        int n = t * 1000 + i;
        auto r = client->Map({"svc_fns.doubled"}, {Doc(absl::StrCat("t", t), absl::StrCat(R"("n":)", n))});
        if (!r.ok() || r->results(0).rows() != absl::StrCat(R"([[["t)", t, R"(",)", 2 * n, "]]]")) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

// A call parked inside a worker until the test lets it go.
class ParkedCall {
 public:
  ParkedCall(client::Client& client, const std::string& id) {
    std::string dir = testing::MakeTempDir("fifo");
    ready_ = dir + "/ready";
    release_ = dir + "/release";
    ::mkfifo(ready_.c_str(), 0600);
    ::mkfifo(release_.c_str(), 0600);
    result_ = std::async(std::launch::async, [&client, id, this] {
      return client.Map({"svc_fns.waits"},
                        {Doc(id, absl::StrCat(R"("ready":")", ready_, R"(","release":")", release_, "\""))});
    });
    // Opening the read end returns once the function opened the write end: it is running.
    int fd = ::open(ready_.c_str(), O_RDONLY);
    ::close(fd);
  }
  absl::StatusOr<v1::MapResponse> Release() {
    int fd = ::open(release_.c_str(), O_WRONLY);
    ::close(fd);
    return result_.get();
  }

 private:
  std::string ready_, release_;
  std::future<absl::StatusOr<v1::MapResponse>> result_;
};

TEST(ServerTest, AFullQueueIsResourceExhausted) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 1, {"--max-queue=0"});
  auto client = server->Connect();
  ParkedCall parked(*client, "p");
  auto refused = client->Map({"svc_fns.doubled"}, {Doc("a", R"("n":1)")});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("--workers"));
  auto released = parked.Release();
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->results(0).rows(), R"([[["released","p"]]])");
}

TEST(ServerTest, ASlowCallDoesNotHoldUpOtherCallsOnItsConnection) {
  // Two workers: one for the parked call, one for the rest.
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto client = server->Connect();
  ParkedCall parked(*client, "p");
  for (int i = 0; i < 20; ++i) {
    auto other = client->Map({"svc_fns.doubled"}, {Doc("a", absl::StrCat(R"("n":)", i))},
                             absl::Seconds(10));
    ASSERT_TRUE(other.ok()) << "call " << i << " waited behind the parked one: " << other.status();
    EXPECT_EQ(other->results(0).rows(), absl::StrCat(R"([[["a",)", 2 * i, "]]]"));
  }
  auto released = parked.Release();
  ASSERT_TRUE(released.ok()) << released.status();
}

TEST(ServerTest, SigtermLetsTheCallInFlightFinish) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 1);
  auto client = server->Connect();
  ParkedCall parked(*client, "p");
  server->Signal(SIGTERM);
  auto released = parked.Release();
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->results(0).rows(), R"([[["released","p"]]])");
  int status = server->WaitForExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("stopped")) << server->Log();
}

TEST(ServerTest, AnswersHealthChecksAndStreams) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  auto channel = grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials());
  // grpc.health.v1.Health/Check, spoken as bytes: an empty HealthCheckRequest asks about the
  // whole server, and a HealthCheckResponse of SERVING (1) encodes as field 1 = 1: 08 01.
  grpc::GenericStub health(channel);
  grpc::ClientContext context;
  grpc::Slice nothing;
  grpc::ByteBuffer request(&nothing, 1), response;
  grpc::Status status;
  grpc::CompletionQueue cq;
  auto call = health.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  call->Finish(&response, &status, &cq);
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));

  auto stub = v1::Functions::NewStub(channel);
  grpc::ClientContext stream_context;
  auto stream = stub->MapStream(&stream_context);
  for (int i = 0; i < 5; ++i) {
    v1::MapRequest map;
    map.add_functions("svc_fns.doubled");
    map.add_docs(Doc("s", absl::StrCat(R"("n":)", i)));
    ASSERT_TRUE(stream->Write(map));
    v1::MapResponse answer;
    ASSERT_TRUE(stream->Read(&answer));
    EXPECT_EQ(answer.results(0).rows(), absl::StrCat(R"([[["s",)", 2 * i, "]]]"));
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

// The health service is the server's own, on its completion queues: gRPC's default one runs on
// gRPC's callback API, whose completion queue comes with two threads of its own that poll
// every connection and hand what they read over (health_service.h).
TEST(ServerTest, RunsNoThreadsForGrpcsCallbackApi) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2);
  std::vector<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator(
           absl::StrCat("/proc/", server->pid(), "/task"))) {
    std::string name;
    std::getline(std::ifstream(task.path() / "comm"), name);
    names.push_back(name);
  }
  ASSERT_FALSE(names.empty());
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("nexting_thread")))
      << absl::StrJoin(names, ", ");
}

// One ServerReflectionInfo exchange, spoken as bytes (grpc.reflection.v1alpha): the response
// to `request`, serialized.
std::string AskReflection(const std::string& target, const std::string& request) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context,
                               "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  auto step = [&](void* expected) {
    return cq.Next(&tag, &ok) && ok && tag == expected;
  };
  std::string bytes;
  call->StartCall(reinterpret_cast<void*>(1));
  grpc::Slice request_bytes(request);
  grpc::ByteBuffer request_buffer(&request_bytes, 1);
  grpc::ByteBuffer response;
  std::vector<grpc::Slice> slices;
  if (step(reinterpret_cast<void*>(1)) &&
      (call->Write(request_buffer, reinterpret_cast<void*>(2)), step(reinterpret_cast<void*>(2))) &&
      (call->Read(&response, reinterpret_cast<void*>(3)), step(reinterpret_cast<void*>(3))) &&
      response.Dump(&slices).ok()) {
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  context.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  return bytes;
}

TEST(ServerTest, ListsItsServicesThroughReflection) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2, {"--reflection"});
  // A ServerReflectionRequest with list_services = "" (field 7) encodes as 3a 00.
  const std::string bytes = AskReflection(server->target(), std::string("\x3a\x00", 2));
  EXPECT_THAT(bytes, HasSubstr("cnp.v1.Functions"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
}

// What grpcurl does before it calls a method it has no .proto for (given --reflection): it resolves the method through
// reflection, so the health service's descriptor must be there (gRPC's own health service,
// which cnp-server used before it served its own, carried none: "Symbol not found").
TEST(ServerTest, DescribesTheHealthServiceThroughReflection) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2, {"--reflection"});
  // file_containing_symbol (field 4) = "grpc.health.v1.Health".
  const std::string symbol = "grpc.health.v1.Health";
  const std::string bytes = AskReflection(
      server->target(), absl::StrCat("\x22", std::string(1, static_cast<char>(symbol.size())), symbol));
  // A file_descriptor_response (field 4 of the response, tag 0x22) holding the service and its
  // request message, not an error_response (field 7, tag 0x3a).
  EXPECT_THAT(bytes, HasSubstr("grpc/health/v1/health.proto"));
  EXPECT_THAT(bytes, HasSubstr("HealthCheckRequest"));
  EXPECT_THAT(bytes, Not(HasSubstr("not found")));
}

TEST(ServerTest, ReadsItsSettingsFromAYamlFile) {
  std::string dir = testing::MakeTempDir("config");
  WriteFile(dir + "/cnp.yml", absl::StrCat("python-path:\n  - ", FunctionsDir(),
                                           "\nallow-module: [svc_fns]\nworkers: 1\n"
                                           "call-timeout: 1s\n"));
  auto server = ServerProcess::Start({"--config=" + dir + "/cnp.yml"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = (*server)->Connect();
  auto fine = client->Map({"svc_fns.doubled"}, {Doc("a", R"("n":1)")});
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(client->Map({"svc_fns.spins"}, {Doc("a", "")}).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(client->Map({"svc_fns.system"}, {Doc("a", "")}).status().code(),
            absl::StatusCode::kPermissionDenied);

  WriteFile(dir + "/typo.yml", "workers: 1\nwokers: 2\n");
  auto typo = ServerProcess::Start({"--config=" + dir + "/typo.yml"});
  ASSERT_FALSE(typo.ok());
  EXPECT_THAT(typo.status().message(),
              HasSubstr("typo.yml:2:1: wokers: unknown setting; did you mean 'workers'?"));
}

TEST(ServerTest, ListensOnTcpToo) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/functions/server"}, 2, {"--listen=127.0.0.1:0"});
  std::string log = server->Log();
  size_t at = log.find("listening on 127.0.0.1:0 (port ");
  ASSERT_NE(at, std::string::npos) << log;
  std::string port = log.substr(at + 31, log.find(')', at) - at - 31);
  auto client = client::Client::Connect("127.0.0.1:" + port);
  ASSERT_TRUE(client.ok()) << client.status();
  auto r = (*client)->Map({"svc_fns.doubled"}, {Doc("t", R"("n":21)")});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->results(0).rows(), R"([[["t",42]]])");
}

TEST(ServerTest, ATcpOnlyReplicaKeepsNoSessionWorker) {
  // Direct sessions come only through a unix socket: a replica behind a load balancer would
  // otherwise keep a spare session worker (a Python process) that nothing can ever use.
  auto server = ServerProcess::Launch(
      {.args = {"--python-path=" + FunctionsDir(), "--workers=1", "--listen=127.0.0.1:0"},
       .fresh_socket = false});
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("no direct sessions: they come through a unix --listen"));
  auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", server->Port()));
  ASSERT_TRUE(client.ok()) << client.status();
  auto r = (*client)->Map({"svc_fns.doubled"}, {Doc("t", R"("n":21)")});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->results(0).rows(), R"([[["t",42]]])");
  server->Signal(SIGTERM);
  EXPECT_THAT(server->Log(), Not(HasSubstr("session worker")));
}

TEST(ServerTest, KeepsItsLogFileToLogMaxBytes) {
  // An adapter-started server logs to a file nothing rotated. Here the workers print about
  // 250 KB to it (svc_fns.prints writes each document's id to stdout and stderr; what a second's
  // budget of printed lines lets through): past --log-max-bytes the file is copied to FILE.1
  // and emptied, and everyone's lines go on at its start.
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 1,
                                                  {"--log-max-bytes=65536"});
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  std::vector<std::string> docs;
  for (int i = 0; i < 1000; ++i) docs.push_back(Doc(absl::StrCat(i, "-", std::string(1200, 'x')), ""));
  auto response = client->Map({"svc_fns.prints"}, docs);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_TRUE(server->WaitForLog("the log was over --log-max-bytes (65536)", absl::Seconds(30)))
      << server->Log().size();
  const std::string old_path = server->log_path() + ".1";
  const std::string old = testing::ReadFile(old_path);
  EXPECT_GT(old.size(), 65536u);
  EXPECT_THAT(old, HasSubstr("to stderr 0-x"));
  EXPECT_THAT(old, HasSubstr("starting 1 workers"));
  // Emptied, then written from its start: no hole where the copied lines were.
  const std::string now = server->Log();
  EXPECT_LT(now.size(), 65536u);
  EXPECT_EQ(now.find('\0'), std::string::npos);
  EXPECT_THAT(now, HasSubstr("its lines so far are in " + old_path));
  // The workers write on into the emptied file: printed again until a line gets through (the
  // worker's budget of printed lines may still be spent for the second of the flood).
  bool written = false;
  for (int attempt = 0; attempt < 60 && !written; ++attempt) {
    auto again = client->Map({"svc_fns.prints"}, {Doc("after-the-rotation", "")});
    ASSERT_TRUE(again.ok()) << again.status();
    written = server->WaitForLog("to stderr after-the-rotation", absl::Milliseconds(500));
  }
  EXPECT_TRUE(written) << server->Log();
  // And the next second's first printed line said how many the flood's second left out.
  EXPECT_THAT(testing::ReadFile(old_path) + server->Log(),
              HasSubstr("printed lines of functions were left out"));
}

TEST(ServerTest, RejectsBadFlagsWithAMessage) {
  auto server = ServerProcess::Start({"--workers=1", "--python-path=/no/such/dir"});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("/no/such/dir is not a directory"));
}

TEST(ServerTest, AMissingVirtualenvIsAUsageErrorBeforeAnyWorkerStarts) {
  testing::ServerOptions options;
  options.args = {"--workers=1", "--virtualenv=/no/such/venv"};
  auto server = ServerProcess::Launch(options);
  ASSERT_FALSE(server->ready());
  EXPECT_EQ(server->ExitCode(), 2) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("--virtualenv /no/such/venv is not a directory"));
  EXPECT_THAT(server->Log(), Not(HasSubstr("started (pid")));
}

}  // namespace
}  // namespace cnp
