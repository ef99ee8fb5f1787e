// The cnp command line against a real cnp-server: what a user types and what they see.
#include <string>
#include <vector>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/server_process.h"
#include "tests/support/spawn.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct CliRun {
  int exit_code;
  std::string out;  // stdout and stderr together
};

// Runs cnp with `args` (split at spaces, no shell) and `input` on its stdin.
CliRun Cnp(const std::string& args, const std::string& input = "") {
  std::vector<std::string> argv = {testing::Runfile("client/cli/cnp")};
  for (absl::string_view arg : absl::StrSplit(args, ' ', absl::SkipEmpty())) argv.emplace_back(arg);
  testing::ProcessResult run = testing::RunWithInput(argv, input, testing::Output::kTogether);
  return {run.exit_code, run.out};
}

class CnpCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::ServerProcess::Start(
        {"--python-path=" + testing::Runfile("tests/functions/server"), "--workers=1"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    target_ = "--target=" + server_->target();
  }
  std::unique_ptr<testing::ServerProcess> server_;
  std::string target_;
};

// Every command's --help names the default target the same way, as words, never as the path of
// whoever runs it: the installer writes these texts to share/doc/cnp/cnp.txt, which said
// unix:/tmp/cnp-0/cnp.sock (root's) for upload, check and derive but cnp-<uid> for the rest.
TEST(CnpHelpTest, NamesTheDefaultTargetTheSameWayForEveryone) {
  for (const char* command :
       {"", "map", "reduce", "validate", "resolve", "upload", "check", "derive", "sync"}) {
    CliRun help = Cnp(absl::StrCat(command, " --help"));
    EXPECT_EQ(help.exit_code, 0) << command;
    for (size_t at = 0; (at = help.out.find("/tmp/cnp-", at)) != std::string::npos;) {
      at += 9;
      EXPECT_FALSE(at < help.out.size() && absl::ascii_isdigit(help.out[at]))
          << "cnp " << command << " --help names a uid's own socket:\n" << help.out;
    }
    if (absl::string_view(command) != "sync") {  // sync talks to CouchDB alone
      EXPECT_THAT(help.out, HasSubstr("$CNP_TARGET")) << command;
      EXPECT_THAT(help.out, HasSubstr("unix:/tmp/cnp-<uid>/cnp.sock")) << command;
    }
  }
}

// `cnp help map` is `cnp map --help`: it printed the list of commands (a CLI probe).
TEST(CnpHelpTest, HelpWithACommandIsThatCommandsHelp) {
  for (const char* command : {"map", "derive", "sync"}) {
    CliRun asked = Cnp(absl::StrCat("help ", command));
    CliRun flag = Cnp(absl::StrCat(command, " --help"));
    EXPECT_EQ(asked.exit_code, 0) << command;
    EXPECT_EQ(asked.out, flag.out) << command;
  }
  CliRun unknown = Cnp("help mapp");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.out, HasSubstr("unknown command 'mapp'"));
}

// Every command that reaches cnp-server says how to reach one in plaintext beyond loopback: a
// probe was told by `cnp check` to add --insecure, which its --help did not name, and upload's
// and derive's named it for CouchDB's credentials alone.
TEST(CnpHelpTest, EveryCommandThatReachesTheServiceNamesInsecureForItsTarget) {
  for (const char* command :
       {"map", "reduce", "validate", "resolve", "upload", "check", "derive"}) {
    CliRun help = Cnp(absl::StrCat(command, " --help"));
    EXPECT_EQ(help.exit_code, 0) << command;
    const size_t at = help.out.find("  --insecure");
    ASSERT_NE(at, std::string::npos) << "cnp " << command << " --help:\n" << help.out;
    const std::string option = help.out.substr(at, help.out.find("\n  -", at + 1) - at);
    EXPECT_THAT(option, ::testing::ContainsRegex("--target|TCP target")) << option;
  }
}

TEST_F(CnpCliTest, MapsNdjsonAndKeepsNumbersExactlyAsWritten) {
  CliRun run = Cnp(absl::StrCat("map ", target_, " svc_fns.doubled,svc_fns.picky"),
                "{\"_id\":\"a\",\"n\":1}\n{\"_id\":\"b\",\"n\":3}\n");
  // A function raised on a document: every line printed, and exit status 3 (as cnp reduce and
  // cnp validate), so that a script does not take that document's [] for its rows.
  EXPECT_EQ(run.exit_code, 3) << run.out;
  EXPECT_THAT(run.out, HasSubstr(R"({"id":"a","rows":[[["a",2]],[[1,null]]],"logs":["doubling a"]})"));
  EXPECT_THAT(run.out, HasSubstr(R"("errors":[{"function":"svc_fns.picky","doc_id":"b","type":"ValueError")"));
  EXPECT_THAT(run.out, HasSubstr("1 function error(s)"));

  // A JSON array is spread into documents; a number beyond 64 bits reaches Python intact.
  CliRun big = Cnp(absl::StrCat("map ", target_, " svc_fns.doubled -"),
                R"([{"_id":"big","n":123456789012345678901234567890}])");
  EXPECT_EQ(big.exit_code, 0) << big.out;
  EXPECT_THAT(big.out, HasSubstr(R"([["big",246913578024691357802469135780]])"));

  // One past a double's range too (401 digits, which CouchDB stores): before, rapidjson refused
  // the input ("Number too big to be stored in double").
  const std::string huge = "1" + std::string(400, '2');
  CliRun past = Cnp(absl::StrCat("map ", target_, " svc_fns.doubled -"),
                    absl::StrCat(R"([{"_id":"huge","n":)", huge, "}]"));
  EXPECT_EQ(past.exit_code, 0) << past.out;
  EXPECT_THAT(past.out, HasSubstr(absl::StrCat(R"({"id":"huge","rows":[[["huge",2)", std::string(400, '4'), "]]]")));
  CliRun valid = Cnp(absl::StrCat("validate ", target_, " svc_fns.guard|3 -"),
                     absl::StrCat(R"({"_id":"huge","n":)", huge, "}"));
  EXPECT_EQ(valid.exit_code, 0) << valid.out;
  EXPECT_THAT(valid.out, HasSubstr(R"({"outcome":"ok"})"));
}

// An input past the server's --max-call-bytes is mapped in several calls, its lines in the
// input's order: before, it was refused whole (found by a robustness probe: a 69 MB NDJSON
// file). cnp map sends 8 MiB per call; this server takes far less, and fewer documents per
// call, which cnp map learns from its refusals.
TEST(CnpMapCallsTest, AnInputPastTheServersLimitsIsMappedInSeveralCalls) {
  auto server = testing::ServerProcess::Start(
      {"--python-path=" + testing::Runfile("tests/functions/server"), "--workers=1",
       "--max-call-bytes=300000", "--max-docs-per-call=70"});
  ASSERT_TRUE(server.ok()) << server.status();
  constexpr int kDocs = 400;  // 2 KB each: 800 KB in all
  std::string input;
  for (int i = 0; i < kDocs; ++i) {
    absl::StrAppend(&input, R"({"_id":"d)", i, R"(","n":)", i, R"(,"pad":")",
                    std::string(2000, 'x'), "\"}\n");
  }
  CliRun run = Cnp(absl::StrCat("map --target=", (*server)->target(), " svc_fns.doubled -"), input);
  EXPECT_EQ(run.exit_code, 0) << run.out.substr(0, 2000);
  size_t at = 0;
  for (int i = 0; i < kDocs; ++i) {
    const std::string line = absl::StrCat(R"({"id":"d)", i, R"(","rows":[[["d)", i, R"(",)",
                                          2 * i, R"(]]],"logs":["doubling d)", i, "\"]}\n");
    at = run.out.find(line, at);
    ASSERT_NE(at, std::string::npos) << "document " << i << " missing or out of order";
  }
  // A call that fails for something else still fails, after the lines of the calls before.
  CliRun broken = Cnp(absl::StrCat("map --target=", (*server)->target(), " svc_fns.no_such -"),
                      input);
  EXPECT_EQ(broken.exit_code, 1) << broken.out.substr(0, 2000);
}

TEST_F(CnpCliTest, ReducesValidatesAndResolves) {
  CliRun reduce = Cnp(absl::StrCat("reduce ", target_, " svc_fns.total"), R"([[["k","d1"],4],[["k","d2"],5]])");
  EXPECT_EQ(reduce.exit_code, 0) << reduce.out;
  EXPECT_THAT(reduce.out, HasSubstr(R"({"results":[9]})"));
  CliRun rereduce = Cnp(absl::StrCat("reduce --rereduce ", target_, " svc_fns.total"), "[1,2,3]");
  EXPECT_THAT(rereduce.out, HasSubstr(R"({"results":[6]})"));
  // A reduce that raised is null in "results", as CouchDB shows it, and said on stderr as cnp
  // map says it and in the exit status as cnp validate does (a README walkthrough found a
  // script checking the status took the null for the answer).
  CliRun raised =
      Cnp(absl::StrCat("reduce ", target_, " svc_fns.total"), R"([[["k","d1"],"x"]])");
  EXPECT_EQ(raised.exit_code, 3) << raised.out;
  EXPECT_THAT(raised.out, HasSubstr(R"({"results":[null],"errors":[{"function":"svc_fns.total")"));
  EXPECT_THAT(raised.out, HasSubstr("cnp: 1 function error(s); see \"errors\""));

  CliRun ok = Cnp(absl::StrCat("validate ", target_, " svc_fns.guard|3 -"), R"({"_id":"x"})");
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_THAT(ok.out, HasSubstr(R"({"outcome":"ok"})"));
  CliRun rejected = Cnp(absl::StrCat("validate ", target_, " svc_fns.guard|3 -"),
                     R"({"_id":"x","reject":"forbidden"})");
  EXPECT_EQ(rejected.exit_code, 3);
  EXPECT_THAT(rejected.out, HasSubstr(R"({"outcome":"forbidden","message":"not this one"})"));

  CliRun resolve = Cnp(absl::StrCat("resolve ", target_, " svc_fns.by_town svc_fns.nothing"));
  EXPECT_EQ(resolve.exit_code, 3);
  EXPECT_THAT(resolve.out, HasSubstr("svc_fns.by_town\tsvc_fns.by_town|7"));
  EXPECT_THAT(resolve.out, HasSubstr("svc_fns.nothing\tERROR: AttributeError"));
}

TEST_F(CnpCliTest, SaysWhatIsWrong) {
  CliRun version = Cnp(absl::StrCat("map ", target_, " svc_fns.by_town|6"), R"({"_id":"a"})");
  EXPECT_EQ(version.exit_code, 1);
  EXPECT_THAT(version.out, HasSubstr("Loaded version 7 did not match expected version 6"));

  CliRun bad_json = Cnp(absl::StrCat("map ", target_, " svc_fns.doubled"), "{\"_id\":\n \"a\",,}");
  EXPECT_EQ(bad_json.exit_code, 2);
  EXPECT_THAT(bad_json.out, HasSubstr("invalid JSON at line 2"));

  // A document must be an object: said of the element itself, not as "invalid JSON at byte 0".
  CliRun not_object =
      Cnp(absl::StrCat("map ", target_, " svc_fns.doubled"), R"([{"_id":"a"},"s"])");
  EXPECT_EQ(not_object.exit_code, 2);
  EXPECT_THAT(not_object.out, HasSubstr(R"(document 1 is not a JSON object: "s")"));

  // The timeout that ran out, not gRPC's bare "Deadline Exceeded"; named too when the server,
  // which was given the same deadline, answers first with its own words for it.
  CliRun slow = Cnp(absl::StrCat("map ", target_, " --timeout=300ms svc_fns.spins"), R"({"_id":"a"})");
  EXPECT_EQ(slow.exit_code, 1);
  EXPECT_THAT(slow.out, HasSubstr("300ms (--timeout; the default is 60s)"));
  CliRun zero = Cnp("map --timeout=0 svc_fns.doubled", R"({"_id":"a"})");
  EXPECT_EQ(zero.exit_code, 2);
  EXPECT_THAT(zero.out, HasSubstr("--timeout=0 is not a positive duration"));
  // Said before the input is read: an empty stdin does not come first.
  CliRun zero_first = Cnp("map --timeout=0 svc_fns.doubled");
  EXPECT_EQ(zero_first.exit_code, 2);
  EXPECT_THAT(zero_first.out, Not(HasSubstr("no documents")));
  EXPECT_THAT(zero_first.out, HasSubstr("--timeout=0 is not a positive duration"));
  // Which argument is wrong, before the usage.
  CliRun extra = Cnp("validate svc_fns.picky new.json extra");
  EXPECT_EQ(extra.exit_code, 2);
  EXPECT_THAT(extra.out, HasSubstr("unexpected argument \"extra\" (at most 2)"));
  // A document, as CouchDB passes: the new one an object, the old one an object or null.
  CliRun not_doc = Cnp(absl::StrCat("validate ", target_, " svc_fns.picky -"), "[1]");
  EXPECT_EQ(not_doc.exit_code, 2);
  EXPECT_THAT(not_doc.out, HasSubstr("the new document is not a JSON object: [1]"));
  CliRun few = Cnp("validate svc_fns.picky");
  EXPECT_EQ(few.exit_code, 2);
  EXPECT_THAT(few.out, HasSubstr("1 argument missing"));

  CliRun typo = Cnp(absl::StrCat("map --tagret=x svc_fns.doubled"));
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_THAT(typo.out, HasSubstr("unknown option --tagret"));

  // An empty value (an unset variable) is not the default: --target= went to the default
  // socket, with gRPC's own log lines about an empty DNS name.
  for (const char* empty : {"map --target= svc_fns.doubled", "map --tls-ca= svc_fns.doubled",
                            "upload --view-server= http://127.0.0.1:9 db x.yml"}) {
    CliRun run = Cnp(empty, R"({"_id":"a"})");
    EXPECT_EQ(run.exit_code, 2) << empty;
    EXPECT_THAT(run.out, HasSubstr(" was given no value; give it one, or leave the option out"))
        << empty;
  }

  CliRun down = Cnp("map --target=unix:/tmp/cnp-no-such-dir/cnp.sock svc_fns.doubled", R"({"_id":"a"})");
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_THAT(down.out, HasSubstr("no cnp-server answers at unix:/tmp/cnp-no-such-dir/cnp.sock"));
  // Replicas are started one per address, not as one server listening on the list.
  CliRun replicas_down = Cnp("map --target=127.0.0.1:9,127.0.0.1:10 --timeout=5s svc_fns.doubled",
                             R"({"_id":"a"})");
  EXPECT_EQ(replicas_down.exit_code, 1);
  EXPECT_THAT(replicas_down.out, HasSubstr("no cnp-server answers at any of 127.0.0.1:9,127.0.0.1:10"));
  EXPECT_THAT(replicas_down.out, HasSubstr("start a replica at each address"));
  EXPECT_THAT(replicas_down.out, ::testing::Not(HasSubstr("--listen=127.0.0.1:9,")));

  // A file that cannot be read is bad input (exit status 2), and the message says why.
  CliRun missing = Cnp("map svc_fns.doubled /nonexistent/docs.json");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.out, HasSubstr("cannot read /nonexistent/docs.json: No such file or directory"));
  CliRun folder = Cnp("validate svc_fns.picky /");
  EXPECT_EQ(folder.exit_code, 2);
  EXPECT_THAT(folder.out, HasSubstr("cannot read /: Is a directory"));
  // Found by a review: input was read whole however large (/dev/zero until memory ran out);
  // more than one call can carry is bad input now.
  CliRun endless = Cnp("map svc_fns.doubled /dev/zero");
  EXPECT_EQ(endless.exit_code, 2);
  EXPECT_THAT(endless.out, HasSubstr("/dev/zero is larger than 256 MiB, more than one call to "
                                     "cnp-server can carry"));
  CliRun no_declaration = Cnp("derive http://127.0.0.1:9 /nonexistent/derive.yml");
  EXPECT_EQ(no_declaration.exit_code, 2);
  EXPECT_THAT(no_declaration.out,
              HasSubstr("cannot read /nonexistent/derive.yml: No such file or directory"));

  CliRun help = Cnp("map --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("usage: cnp map FUNCTION"));
  // How a @version function is named, and where to learn the name.
  for (const char* command : {"map", "validate"}) {
    CliRun names = Cnp(absl::StrCat(command, " --help"));
    EXPECT_THAT(names.out, HasSubstr("@version(N)")) << command;
    EXPECT_THAT(names.out, HasSubstr("module.function|N")) << command;
    EXPECT_THAT(names.out, HasSubstr("`cnp resolve module.function` prints")) << command;
  }
  CliRun unknown = Cnp("mapp");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.out, HasSubstr("unknown command 'mapp'"));

  // The hint once, not twice.
  for (const char* command : {"upload", "check", "sync"}) {
    CliRun bogus = Cnp(absl::StrCat(command, " --bogus"));
    EXPECT_EQ(bogus.exit_code, 2) << command;
    EXPECT_THAT(bogus.out, HasSubstr("unknown option --bogus (see --help)\n")) << bogus.out;
  }
  // A single dash and a letter is no positional but an option cnp does not have (a probe:
  // `cnp upload -x URL DB FILE` said "-x" is not a CouchDB URL).
  for (const char* command : {"upload", "map", "sync"}) {
    CliRun dash = Cnp(absl::StrCat(command, " -x http://127.0.0.1:5984 db f.yml"));
    EXPECT_EQ(dash.exit_code, 2) << command;
    EXPECT_THAT(dash.out, HasSubstr("unknown option -x: cnp's options are written --name"))
        << dash.out;
  }
  // absl's own flags are no options of cnp's, on any command (cnp-server and cnp-adapter
  // accepted them past their own checks).
  for (const char* command :
       {"map", "reduce", "validate", "resolve", "upload", "check", "derive", "sync"}) {
    for (const char* absl_own : {"--undefok=x", "--flagfile=/dev/null", "--fromenv=x"}) {
      CliRun run = Cnp(absl::StrCat(command, " ", absl_own));
      EXPECT_EQ(run.exit_code, 2) << command << " " << absl_own << ": " << run.out;
      EXPECT_THAT(run.out, HasSubstr("unknown option")) << command << " " << absl_own;
    }
  }
  // A misspelt option is told with the one it most likely meant, as cnp-server's and
  // cnp-adapter's are (found by a README walkthrough).
  CliRun misspelt = Cnp("map --taget=unix:/x svc_fns.doubled -");
  EXPECT_EQ(misspelt.exit_code, 2);
  EXPECT_THAT(misspelt.out,
              HasSubstr("unknown option --taget; did you mean --target? (see --help)"));
  CliRun once = Cnp("derive --onse http://127.0.0.1:9 d.yml");
  EXPECT_THAT(once.out, HasSubstr("unknown option --onse; did you mean --once?"));
  CliRun far = Cnp("map --colour svc_fns.doubled -");
  EXPECT_THAT(far.out, HasSubstr("unknown option --colour (see --help)"));
  // What is missing, not the whole usage.
  CliRun derive = Cnp("derive http://127.0.0.1:9");
  EXPECT_EQ(derive.exit_code, 2);
  EXPECT_THAT(derive.out, HasSubstr("needs COUCHDB_URL and DECLARATION.yml, got 1 argument"));
  EXPECT_THAT(derive.out, ::testing::Not(HasSubstr("Usage:")));
  // A lease of a millisecond lapsed between two renewals, and the run failed later without
  // naming the flag (found by a review).
  CliRun brief_lease = Cnp("derive --lease-timeout=1ms http://127.0.0.1:9 /nonexistent/d.yml");
  EXPECT_EQ(brief_lease.exit_code, 2);
  EXPECT_THAT(brief_lease.out, HasSubstr("--lease-timeout=1ms is too short"));
  // The arguments in cnp upload's order (file, then URL): said so, where it said it could not
  // read a file named http://... (found by a README walkthrough).
  CliRun swapped = Cnp("derive --once /nonexistent/d.yml http://127.0.0.1:9");
  EXPECT_EQ(swapped.exit_code, 2) << swapped.out;
  EXPECT_THAT(swapped.out, HasSubstr("the CouchDB URL comes first: cnp derive COUCHDB_URL "
                                     "DECLARATION.yml (given \"/nonexistent/d.yml\" first)"));
  // A duration with its unit like every other timeout: a bare number was taken as seconds here
  // alone, where --timeout=90 is refused (found by a review).
  for (const char* settle : {"soon", "90"}) {
    CliRun settle_bad = Cnp(absl::StrCat("upload --staged --staged-settle-timeout=", settle,
                                         " http://127.0.0.1:9 db x.yml"));
    EXPECT_EQ(settle_bad.exit_code, 2) << settle;
    EXPECT_THAT(settle_bad.out,
                HasSubstr(absl::StrCat("--staged-settle-timeout=", settle,
                                       " is not a duration of at least 1s, like 60s or 2m")));
  }
  for (const char* settle : {"2m", "90s"}) {
    CliRun ok = Cnp(absl::StrCat("upload --staged --staged-settle-timeout=", settle,
                                 " http://127.0.0.1:9 db no-such-file.yml"));
    EXPECT_THAT(ok.out, ::testing::Not(HasSubstr("staged-settle-timeout"))) << ok.out;
    EXPECT_THAT(ok.out, HasSubstr("no-such-file.yml")) << ok.out;
  }
  // The usual form with --register added: "cannot read mydb" said nothing of why (a probe).
  CliRun database = Cnp("upload --register reg http://127.0.0.1:9 mydb x.yml");
  EXPECT_EQ(database.exit_code, 2);
  EXPECT_THAT(database.out, HasSubstr("cannot read mydb"));
  EXPECT_THAT(database.out, HasSubstr("with --register no DATABASE follows COUCHDB_URL"));
  // Taken and ignored without --staged, it let a user believe the upload would wait so long
  // (found by a probe).
  CliRun unstaged = Cnp("upload --staged-settle-timeout=2m http://127.0.0.1:9 db x.yml");
  EXPECT_EQ(unstaged.exit_code, 2);
  EXPECT_THAT(unstaged.out, HasSubstr("--staged-settle-timeout has no effect without --staged"));
}

// Bytes that are not UTF-8 reached protobuf, which printed "[libprotobuf ERROR ...] String
// field 'cnp.v1.UploadFile.text' contains invalid UTF-8" and a message without the file, its
// line or the argument (found by a review). Now said before anything is sent.
TEST_F(CnpCliTest, TextThatIsNotUtf8IsNamedWhereItIs) {
  const std::string yaml = absl::StrCat(std::getenv("TEST_TMPDIR"), "/latin1.yml");
  testing::WriteFile(yaml, "location:\n  views:\n    towns: svc_fns.caf\xe9\n", 0644);
  for (const char* command : {"check", "upload --dry-run http://127.0.0.1:9 db"}) {
    CliRun run = Cnp(absl::StrCat(command, " ", target_, " ", yaml));
    EXPECT_EQ(run.exit_code, 2) << command << run.out;  // bad input, as for every cnp command
    EXPECT_THAT(run.out, HasSubstr(absl::StrCat(yaml, ":3:23: not UTF-8 (byte 0xe9)"))) << command;
    EXPECT_THAT(run.out, ::testing::Not(HasSubstr("libprotobuf"))) << command;
  }

  CliRun resolve = Cnp(absl::StrCat("resolve ", target_, " svc_fns.by_town svc_fns.\xff"));
  EXPECT_EQ(resolve.exit_code, 2) << resolve.out;
  EXPECT_THAT(resolve.out, HasSubstr("the function name \"svc_fns.\\xff\" (argument 2) is not "
                                     "UTF-8 (byte 0xff at byte 9)"));
  EXPECT_THAT(resolve.out, ::testing::Not(HasSubstr("libprotobuf")));
  for (const char* command : {"map", "reduce", "validate"}) {
    CliRun run = Cnp(absl::StrCat(command, " ", target_, " svc_fns.\xc3 -"), R"({"_id":"a"})");
    EXPECT_EQ(run.exit_code, 2) << command << run.out;
    EXPECT_THAT(run.out, HasSubstr("the function name \"svc_fns.\\xc3\" (argument 1) is not "
                                   "UTF-8"))
        << command;
    EXPECT_THAT(run.out, ::testing::Not(HasSubstr("libprotobuf"))) << command;
  }
}

// Found by a probe: `cnp map f,,g` ran two functions without a word, `cnp resolve ""` was a
// function's error (exit 3), and `_count` was "Invalid function path".
TEST_F(CnpCliTest, EmptyNamesAndCouchDbsBuiltinReducesAreUsageErrors) {
  CliRun map =
      Cnp(absl::StrCat("map ", target_, " svc_fns.doubled,,svc_fns.picky -"), R"({"_id":"a"})");
  EXPECT_EQ(map.exit_code, 2) << map.out;
  EXPECT_THAT(map.out, HasSubstr("holds an empty function name")) << map.out;
  // One name per argument: a comma is no list there.
  for (const char* names :
       {"resolve svc_fns.doubled ,", "validate svc_fns.doubled,svc_fns.picky -"}) {
    const std::vector<std::string> words = absl::StrSplit(names, absl::MaxSplits(' ', 1));
    CliRun run = Cnp(absl::StrCat(words[0], " ", target_, " ", words[1]), R"({"_id":"a"})");
    EXPECT_EQ(run.exit_code, 2) << names << run.out;
    EXPECT_THAT(run.out, HasSubstr("is not a function name: give one module.function per argument"))
        << names;
  }
  CliRun builtin = Cnp(absl::StrCat("reduce ", target_, " svc_fns.doubled,_count -"), "[]");
  EXPECT_EQ(builtin.exit_code, 2) << builtin.out;
  EXPECT_THAT(builtin.out, HasSubstr("_count is one of CouchDB's built-in reduces"));
}

// "-" reads the YAML from standard input, as cnp map's "-" reads documents: a generated
// file need not be written to disk first. It is named "stdin" where a problem is.
TEST_F(CnpCliTest, CheckAndUploadReadYamlFromStdin) {
  CliRun check = Cnp(absl::StrCat("check ", target_, " -"),
                     "location:\n  views:\n    towns: svc_fns.by_town\n");
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_THAT(check.out, HasSubstr("_design/location")) << check.out;
  EXPECT_THAT(check.out, HasSubstr("svc_fns.by_town|")) << check.out;

  CliRun wrong = Cnp(absl::StrCat("check ", target_, " -"),
                     "location:\n  views:\n    towns: svc_fns.no_such_function\n");
  EXPECT_EQ(wrong.exit_code, 1) << wrong.out;
  EXPECT_THAT(wrong.out, HasSubstr("stdin:3:")) << wrong.out;

  CliRun twice = Cnp(absl::StrCat("upload --dry-run ", target_, " http://127.0.0.1:9 db - -"), "");
  EXPECT_EQ(twice.exit_code, 2) << twice.out;
  EXPECT_THAT(twice.out, HasSubstr("- (standard input) is named more than once")) << twice.out;
  // A file named twice: each of its design documents was "also defined" at its own line.
  const std::string dir = testing::MakeTempDir("twice");
  testing::WriteFile(dir + "/d.yml", "location:\n  views:\n    towns: svc_fns.by_town\n");
  CliRun same = Cnp(absl::StrCat("check ", target_, " ", dir, "/d.yml ", dir, "/d.yml"));
  EXPECT_EQ(same.exit_code, 2) << same.out;
  EXPECT_THAT(same.out, HasSubstr("/d.yml is named more than once")) << same.out;
  EXPECT_THAT(same.out, Not(HasSubstr("also defined"))) << same.out;
}

// No documents printed nothing and exited 0: a pipeline step upstream that produced nothing
// went unnoticed (found by a review). An empty batch is legal, so the status stays 0, with a
// warning; the functions are still imported, so a wrong name still fails.
TEST_F(CnpCliTest, MapWithoutDocumentsWarns) {
  for (const char* input : {"", "[]", " \n"}) {
    CliRun run = Cnp(absl::StrCat("map ", target_, " svc_fns.doubled"), input);
    EXPECT_EQ(run.exit_code, 0) << run.out;
    EXPECT_EQ(run.out, "cnp: warning: no documents read from stdin\n");
  }
  const std::string empty = absl::StrCat(std::getenv("TEST_TMPDIR"), "/empty.json");
  testing::WriteFile(empty, "[]", 0644);
  CliRun file = Cnp(absl::StrCat("map ", target_, " svc_fns.doubled ", empty));
  EXPECT_EQ(file.exit_code, 0) << file.out;
  EXPECT_THAT(file.out, HasSubstr(absl::StrCat("no documents read from ", empty)));
  CliRun wrong = Cnp(absl::StrCat("map ", target_, " svc_fns.by_town|6"), "[]");
  EXPECT_EQ(wrong.exit_code, 1) << wrong.out;
  CliRun help = Cnp("map --help");
  EXPECT_THAT(help.out, HasSubstr("No documents (empty input, or []) print nothing but a warning"));
}

// --user and --security: a JSON error did not say which option held it, and a value that is
// not an object (CouchDB always passes objects: userCtx, the _security object) reached the
// function, which failed with its own TypeError (found by a review).
TEST_F(CnpCliTest, ValidateOptionsAreNamedAndMustBeObjects) {
  const std::string validate = absl::StrCat("validate ", target_, " svc_fns.guard|3 - ");
  CliRun bad_user = Cnp(validate + "--user={bad", R"({"_id":"x"})");
  EXPECT_EQ(bad_user.exit_code, 2) << bad_user.out;
  EXPECT_THAT(bad_user.out, HasSubstr("cnp: --user: invalid JSON at line 1, column 2"));
  CliRun bad_security = Cnp(validate + "--security=x", R"({"_id":"x"})");
  EXPECT_EQ(bad_security.exit_code, 2) << bad_security.out;
  EXPECT_THAT(bad_security.out, HasSubstr("cnp: --security: invalid JSON at line 1, column 1"));
  for (const char* value : {"[1]", "null", "\"bob\"", "3"}) {
    CliRun user = Cnp(absl::StrCat(validate, "--user=", value), R"({"_id":"x"})");
    EXPECT_EQ(user.exit_code, 2) << value << user.out;
    EXPECT_THAT(user.out, HasSubstr(absl::StrCat("cnp: --user is not a JSON object: ", value)));
    CliRun security = Cnp(absl::StrCat(validate, "--security=", value), R"({"_id":"x"})");
    EXPECT_EQ(security.exit_code, 2) << value << security.out;
    EXPECT_THAT(security.out,
                HasSubstr(absl::StrCat("cnp: --security is not a JSON object: ", value)));
  }
  CliRun objects = Cnp(validate + R"(--user={"db":"d","name":"bob","roles":[]} --security={})",
                       R"({"_id":"x"})");
  EXPECT_EQ(objects.exit_code, 0) << objects.out;
  EXPECT_THAT(objects.out, HasSubstr(R"({"outcome":"ok"})"));
  // Both documents from stdin: the new one takes it, and the error says --old found it empty.
  CliRun both_stdin = Cnp(validate + "--old=-", R"({"_id":"x"})");
  EXPECT_EQ(both_stdin.exit_code, 2) << both_stdin.out;
  EXPECT_THAT(both_stdin.out, HasSubstr("cnp: --old: expected one JSON value, found 0 (stdin was "
                                        "read for the new document)"));
}

// CouchDB's URL given where cnp-server's address belongs is a usage error said before stdin is
// read (a command waiting on a terminal for documents would hide it), and the message never
// shows its password.
TEST(CnpCliLimitsTest, ATargetThatIsAUrlIsRefusedAsUsageWithoutItsPassword) {
  for (const char* command : {"map m.f", "reduce m.f", "validate m.f -",
                              "upload http://localhost:5984 db x.yml"}) {
    CliRun run = Cnp(absl::StrCat(command, " --target=http://admin:s3cret@localhost:5984"),
                     R"({"_id":"a"})");
    EXPECT_EQ(run.exit_code, 2) << command << ": " << run.out;
    EXPECT_THAT(run.out, HasSubstr("is a URL")) << command;
    EXPECT_THAT(run.out, HasSubstr("http://localhost:5984")) << command;
    EXPECT_THAT(run.out, Not(HasSubstr("s3cret"))) << command;
  }
}

// A token, certificate or key file that cannot be read is a usage error (exit 2, as --help
// says), said as the flags are read, before stdin is read or a connection tried.
TEST(CnpCliLimitsTest, AnUnreadableCredentialFileIsRefusedAsUsage) {
  for (const char* flag :
       {"--auth-token-file=/nonexistent/token", "--tls-ca=/nonexistent/ca.pem"}) {
    for (const char* command : {"map m.f", "reduce m.f", "upload http://localhost:5984 db x.yml"}) {
      CliRun run = Cnp(absl::StrCat(command, " --target=127.0.0.1:1 ", flag), R"({"_id":"a"})");
      EXPECT_EQ(run.exit_code, 2) << command << " " << flag << ": " << run.out;
      EXPECT_THAT(run.out, HasSubstr("/nonexistent/")) << command << " " << flag;
    }
  }
}

}  // namespace
}  // namespace cnp

namespace cnp {
namespace {

// A request over the server's --max-call-bytes is refused by gRPC in its own words; the command
// line says which setting that is.
TEST(CnpCliLimitsTest, ARequestOverTheServersByteLimitNamesTheFlag) {
  auto server = testing::ServerProcess::Start({"--python-path=" + testing::Runfile("tests/functions/server"),
                                               "--workers=1", "--max-call-bytes=65536"});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string doc = absl::StrCat(R"({"_id":"big","pad":")", std::string(100'000, 'x'), R"("})");
  CliRun run = Cnp(absl::StrCat("map --target=", (*server)->target(), " svc_fns.doubled -"), doc);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.out, HasSubstr("--max-call-bytes"));
}

// Each command with each TLS option and `target` exits 2 (a usage error), its message holding
// every one of `words`.
void ExpectRefusedAsUsage(const std::vector<std::string>& commands,
                          const std::vector<std::string>& tls_options, const std::string& target,
                          const std::vector<std::string>& words) {
  for (const std::string& tls : tls_options) {
    for (const std::string& command : commands) {
      CliRun run = Cnp(absl::StrCat(command, " ", tls, " ", target, " m.f"), R"({"_id":"a"})");
      EXPECT_EQ(run.exit_code, 2) << command << " " << tls << ": " << run.out;
      for (const std::string& word : words) EXPECT_THAT(run.out, HasSubstr(word)) << command;
    }
  }
}

// TLS checks a certificate against the target's name, and a comma-separated list is not one:
// every connection would fail, reported as "no cnp-server answers". Refused as a usage error
// with the way out, before the input is read or a connection tried; with dns:/// the same
// options go on to connect (and fail there, with nothing listening).
TEST(CnpCliLimitsTest, TlsWithAnAddressListIsRefusedAsUsage) {
  ExpectRefusedAsUsage({"map", "reduce", "upload"},
                       {"--tls", "--tls-ca=/nonexistent/ca.pem", "--tls-cert=c.pem"},
                       "--target=127.0.0.1:1,127.0.0.2:1",
                       {"list of addresses", "--target=dns:///NAME:PORT"});
  CliRun one_name = Cnp("map --tls --target=dns:///localhost:1 --timeout=1s m.f", R"({"_id":"a"})");
  EXPECT_THAT(one_name.out, ::testing::Not(HasSubstr("list of addresses"))) << one_name.out;
}

// --version prints it; with a value it is told it takes none (it read "unknown command").
TEST(CnpCliLimitsTest, VersionTakesNoValue) {
  CliRun version = Cnp("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_THAT(version.out, ::testing::StartsWith("cnp "));
  CliRun valued = Cnp("--version=1");
  EXPECT_EQ(valued.exit_code, 2);
  EXPECT_THAT(valued.out, HasSubstr("--version takes no value"));
}

// A unix socket never uses TLS: TLS options for one were taken and ignored (a CLI probe:
// --tls-cert=/nonexistent passed, and `map --tls` ran in plaintext), letting a user believe
// the connection was TLS. Refused as a usage error, before anything is read or sent.
TEST(CnpCliLimitsTest, TlsWithAUnixTargetIsRefusedAsUsage) {
  ExpectRefusedAsUsage({"map", "check", "derive --once"},
                       {"--tls", "--tls-ca=/nonexistent/ca.pem", "--tls-cert=/nonexistent/c.pem"},
                       "--target=unix:/nonexistent/cnp.sock",
                       {"is a unix socket, which never uses it"});
}

}  // namespace
}  // namespace cnp
