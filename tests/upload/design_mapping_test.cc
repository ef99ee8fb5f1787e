// YAML -> design document, through the whole Uploader in check mode with a fake worker: the
// documents cnp-upload's README shows, every section, and errors reported all at once with
// file:line.
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/json.h"
#include "service/upload/uploader.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {
namespace {

using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;
using ::testing::IsEmpty;
using ::testing::IsSupersetOf;
using ::testing::SizeIs;
using ::testing::StartsWith;

// Each error as "LINE:COLUMN message".
std::vector<std::string> ErrorsWithPlace(const UploadResult& result) {
  std::vector<std::string> errors;
  for (const auto& e : result.errors()) {
    errors.push_back(absl::StrCat(e.location().line(), ":", e.location().column(), " ",
                                  e.message()));
  }
  return errors;
}

class DesignMappingTest : public ::testing::Test {
 protected:
  UploadResult Check(std::vector<v1::UploadFile> files, std::string language = "") {
    v1::UploadRequest request;
    request.set_check_only(true);
    request.set_language(language);
    for (auto& f : files) *request.add_files() = std::move(f);
    return RunUpload(uploader_, request);
  }

  // Asserts that the checked document `id` is exactly `expected` (member order aside).
  void ExpectDocument(const UploadResult& result, const std::string& id,
                      const std::string& expected) {
    v1::DesignDocOutcome outcome = result.Outcome(id);
    ASSERT_EQ(outcome.action(), v1::DesignDocOutcome::CHECKED) << result.Dump();
    absl::StatusOr<rapidjson::Document> actual = couchdb::ParseJson(outcome.document_json());
    absl::StatusOr<rapidjson::Document> wanted = couchdb::ParseJson(expected);
    ASSERT_TRUE(actual.ok() && wanted.ok());
    EXPECT_TRUE(couchdb::JsonEqual(*actual, *wanted))
        << "got      " << outcome.document_json() << "\nexpected " << expected;
  }

  ::cnp::testing::FakeBlockingTaskRunner runner_;
  Uploader uploader_{runner_};
};

TEST_F(DesignMappingTest, ReadmeLocationExampleGivesTheReadmeDocument) {
  runner_.Define("myviews.townmap", 123);
  runner_.Define("myviews.validate", 21);
  UploadResult result = Check({File("design.yml",
                                    "location:\n"
                                    "    views:\n"
                                    "        towns:\n"
                                    "            map: myviews.townmap\n"
                                    "    validate_doc_update: myviews.validate\n")});
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  ExpectDocument(result, "_design/location",
                 R"({"_id": "_design/location",
                     "views": {"towns": {"map": "myviews.townmap|123"}},
                     "validate_doc_update": "myviews.validate|21",
                     "language": "python"})");
  EXPECT_THAT(result.outcomes(), SizeIs(1));
}

TEST_F(DesignMappingTest, ReadmeShorthandExampleGivesOneDocumentPerName) {
  runner_.Define("module.path", 1);
  runner_.Define("module.other", std::nullopt);
  runner_.Define("module.map", 7);
  runner_.Define("module.reduce", 2);
  UploadResult result = Check({File("design.yml",
                                    "design_a:\n"
                                    "    views:\n"
                                    "        one: module.path\n"
                                    "        two: module.other\n"
                                    "design_b:\n"
                                    "    views:\n"
                                    "        stats:\n"
                                    "            map: module.map\n"
                                    "            reduce: module.reduce\n")});
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  ExpectDocument(result, "_design/design_a",
                 R"({"_id": "_design/design_a", "language": "python",
                     "views": {"one": {"map": "module.path|1"},
                               "two": {"map": "module.other"}}})");
  ExpectDocument(result, "_design/design_b",
                 R"({"_id": "_design/design_b", "language": "python",
                     "views": {"stats": {"map": "module.map|7", "reduce": "module.reduce|2"}}})");
  // Each distinct name is imported once, all in one task.
  EXPECT_EQ(runner_.resolve_tasks(), 1);
}

// CouchDB 3.4 takes a reduce that starts with a builtin's name for that builtin (it saves
// `_sum_by_town` and computes _sum; couch_mrview:validate and builtin_reduce match prefixes): left as
// it is too, not refused as a typo.
TEST_F(DesignMappingTest, BuiltInReducesAreLeftAsTheyAre) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("b.yml",
                                    "d:\n"
                                    "  views:\n"
                                    "    a: {map: m.map, reduce: _sum}\n"
                                    "    b: {map: m.map, reduce: _count}\n"
                                    "    c: {map: m.map, reduce: _stats}\n"
                                    "    e: {map: m.map, reduce: _approx_count_distinct}\n"
                                    "    f: {map: m.map, reduce: _sum_by_town}\n"
                                    "    g: {map: m.map, reduce: _stats2}\n")});
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  ExpectDocument(result, "_design/d",
                 R"({"_id": "_design/d", "language": "python", "views": {
                       "a": {"map": "m.map|1", "reduce": "_sum"},
                       "b": {"map": "m.map|1", "reduce": "_count"},
                       "c": {"map": "m.map|1", "reduce": "_stats"},
                       "e": {"map": "m.map|1", "reduce": "_approx_count_distinct"},
                       "f": {"map": "m.map|1", "reduce": "_sum_by_town"},
                       "g": {"map": "m.map|1", "reduce": "_stats2"}}})");
}

// Anything else that starts with "_" is no builtin of CouchDB 3.4, and no name either: a typo
// such as _cnt would be refused by CouchDB as the design document is saved (400). Each is refused at its
// file:line with the list; CouchDB 3.5's additions are named as such.
TEST_F(DesignMappingTest, AnUnknownBuiltInReduceIsRefusedAtItsLineWithTheList) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("r.yml",
                                    "d:\n"
                                    "  views:\n"
                                    "    a: {map: m.map, reduce: _cnt}\n"
                                    "    b: {map: m.map, reduce: _top_3}\n"
                                    "    c: {map: m.map, reduce: _last}\n"
                                    "    d: {map: m.map, reduce: _sum}\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status << "\n" << result.Dump();
  EXPECT_THAT(result.outcomes(), IsEmpty());
  std::vector<std::string> errors;
  for (const auto& p : result.errors()) {
    errors.push_back(absl::StrCat(p.location().file(), ":", p.location().line(), ":",
                                  p.location().column(), ": ", p.message()));
  }
  const std::string list = "(_sum, _count, _stats, _approx_count_distinct)";
  EXPECT_THAT(errors,
              ElementsAre(AllOf(HasSubstr("r.yml:3:29: reduce \"_cnt\" in view \"a\" is not a "
                                          "builtin reduce of CouchDB 3.4 " + list),
                                Not(HasSubstr("CouchDB 3.5"))),
                          AllOf(HasSubstr("r.yml:4:29: reduce \"_top_3\""), HasSubstr(list),
                                HasSubstr("came with CouchDB 3.5")),
                          AllOf(HasSubstr("r.yml:5:29: reduce \"_last\""),
                                HasSubstr("came with CouchDB 3.5"))));
}

// A file of several YAML documents: the ones after the first were dropped without a word and
// the check said ok (cnp-upload's PyYAML refused such a file). Now an error at the second
// document; a lone `---` (an empty document) is no document and stays harmless.
TEST_F(DesignMappingTest, AFileOfSeveralYamlDocumentsIsRefusedAtTheSecond) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("s.yml",
                                    "a:\n"
                                    "  views: {v: {map: m.map}}\n"
                                    "---\n"
                                    "b:\n"
                                    "  views: {v: {map: m.map}}\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status << "\n" << result.Dump();
  EXPECT_THAT(result.outcomes(), IsEmpty());
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().line(), 4) << result.Dump();
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("this file holds 2 YAML documents"));

  UploadResult leading = Check({File("l.yml",
                                     "---\n"
                                     "---\n"
                                     "b:\n"
                                     "  views: {v: {map: m.map}}\n")});
  EXPECT_TRUE(leading.status.ok()) << leading.status << "\n" << leading.Dump();
  EXPECT_EQ(leading.Outcome("_design/b").action(), v1::DesignDocOutcome::CHECKED)
      << leading.Dump();
}

// `cnp check` said ok to what `cnp upload` refuses without --allow-system-databases (check has
// no such flag): it now warns, at the line, that the upload will refuse it.
TEST_F(DesignMappingTest, ACheckWarnsOfSystemTargetsTheUploadWillRefuse) {
  runner_.Define("m.validate", 1);
  UploadResult result = Check({File("sys.yml",
                                    "_auth:\n"
                                    "  validate_doc_update: m.validate\n"
                                    "guard:\n"
                                    "  databases: [_users, other]\n"
                                    "  validate_doc_update: m.validate\n")});
  EXPECT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  std::vector<std::string> warned;
  for (const auto& w : result.warnings()) {
    EXPECT_THAT(w.message(), HasSubstr("cnp upload will refuse this: "));
    EXPECT_THAT(w.message(), HasSubstr("refused without --allow-system-databases"));
    warned.push_back(absl::StrCat(w.location().file(), ":", w.location().line()));
  }
  EXPECT_THAT(warned, ElementsAre("sys.yml:1", "sys.yml:4")) << result.Dump();
}

// cnp-upload's YAML 1.1 read `yes` and `on` as true; YAML 1.2 keeps them strings, which CouchDB
// would take for set flags whatever they say. A file moved over is warned at each such value.
TEST_F(DesignMappingTest, YesNoOnOffInOptionsAreWarnedOf) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("o.yml",
                                    "d:\n"
                                    "  options: {local_seq: yes, include_design: \"on\"}\n"
                                    "  views:\n"
                                    "    v:\n"
                                    "      map: m.map\n"
                                    "      options: {collation: raw, include_design: Off}\n")});
  EXPECT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  std::vector<std::string> warned;
  for (const auto& w : result.warnings()) {
    warned.push_back(absl::StrCat(w.location().line(), ":", w.location().column(), " ",
                                  w.message()));
  }
  EXPECT_THAT(warned,
              ElementsAre(HasSubstr("2:24 \"local_seq\": yes is the string \"yes\" (YAML 1.2, "
                                    "as cnp reads it); cnp-upload's YAML 1.1 read it as true: "
                                    "write true if that is meant, or quote it if the string is"),
                          HasSubstr("6:49 \"include_design\": Off is the string \"Off\"")))
      << result.Dump();
}

// The warnings of `result` but those about unknown keys, each as "FILE:LINE MESSAGE".
std::vector<std::string> WarningsButUnknownKeys(const UploadResult& result) {
  std::vector<std::string> warned;
  for (const auto& w : result.warnings()) {
    if (absl::StrContains(w.message(), "unknown key")) continue;
    warned.push_back(absl::StrCat(w.location().file(), ":", w.location().line(), " ",
                                  w.message()));
  }
  return warned;
}

// Review: outside `options` the YAML 1.1 readings went unwarned, and a key kept "as it is, as
// cnp-upload did" was not: cnp-upload sent True, False, 8, 31 and inf for these. Each is warned
// of at its line, once however often an alias uses it; 0x1F is YAML 1.2's integer 31 too.
TEST_F(DesignMappingTest, PlainValuesYaml11ReadOtherwiseAreWarnedOfAnywhere) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("y.yml",
                                    "d:\n"
                                    "  views: {v: m.map}\n"
                                    "  settings:\n"
                                    "    enabled: &on yes\n"
                                    "    mode: off\n"
                                    "    perm: 010\n"
                                    "    hex: 0x1F\n"
                                    "    octal: 0o17\n"
                                    "    inf: .inf\n"
                                    "    big: 1e3\n"
                                    "    again: [*on, *on]\n"
                                    "    quoted: \"yes\"\n"
                                    "    same: [10, 1.5, true, null, text, 2024-01-31]\n"
                                    "    tagged: !!int 010\n")});
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  ExpectDocument(result, "_design/d",
                 R"({"_id": "_design/d", "language": "python", "views": {"v": {"map": "m.map|1"}},
                     "settings": {"enabled": "yes", "mode": "off", "perm": 10, "hex": 31,
                                  "octal": 15, "inf": ".inf", "big": 1000.0,
                                  "again": ["yes", "yes"], "quoted": "yes",
                                  "same": [10, 1.5, true, null, "text", "2024-01-31"],
                                  "tagged": 10}})");
  EXPECT_THAT(
      WarningsButUnknownKeys(result),
      ElementsAre(
          "y.yml:4 \"enabled\": yes is the string \"yes\" (YAML 1.2, as cnp reads it); "
          "cnp-upload's YAML 1.1 read it as true: write true if that is meant, or quote it if "
          "the string is",
          "y.yml:5 \"mode\": off is the string \"off\" (YAML 1.2, as cnp reads it); "
          "cnp-upload's YAML 1.1 read it as false: write false if that is meant, or quote it if "
          "the string is",
          "y.yml:6 \"perm\": 010 is the number 10 (YAML 1.2, as cnp reads it); cnp-upload's "
          "YAML 1.1 read it as 8: write 8 if that is meant, or write 10 if that is",
          "y.yml:8 \"octal\": 0o17 is the number 15 (YAML 1.2, as cnp reads it); cnp-upload's "
          "YAML 1.1 read it as the string \"0o17\": quote it if the string is meant",
          "y.yml:9 \"inf\": .inf is the string \".inf\" (YAML 1.2, as cnp reads it); "
          "cnp-upload's YAML 1.1 read it as infinity (a float JSON cannot hold): JSON has no "
          "such number: quote it to keep the string and silence this",
          "y.yml:10 \"big\": 1e3 is the number 1000.0 (YAML 1.2, as cnp reads it); "
          "cnp-upload's YAML 1.1 read it as the string \"1e3\": quote it if the string is "
          "meant",
          "y.yml:14 \"tagged\": 010 is the number 10 (YAML 1.2, as cnp reads it); "
          "cnp-upload's YAML 1.1 read it as 8: write 8 if that is meant, or write 10 if that is"))
      << result.Dump();
}

// Keys too (review): cnp-upload's YAML 1.1 made `on:` the key "true" and `010:` the key "8" (as
// json.dumps writes a boolean or integer key), so a view or a field of a file moved over now
// has another name. Warned at its line; keys both read alike (text, 10, a quoted "on") are not.
TEST_F(DesignMappingTest, KeysYaml11ReadOtherwiseAreWarnedOf) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("k.yml",
                                    "d:\n"
                                    "  views: {on: m.map, \"yes\": m.map, v: m.map}\n"
                                    "  settings: {010: a, 10: b, text: c, Off: d}\n")});
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  EXPECT_THAT(WarningsButUnknownKeys(result),
              ElementsAre("k.yml:2 the key on is the string \"on\" (YAML 1.2, as cnp reads it); "
                          "cnp-upload's YAML 1.1 read it as true: write true if that is meant, "
                          "or quote it if the string is",
                          "k.yml:3 the key 010 is the string \"010\" (YAML 1.2, as cnp reads it); "
                          "cnp-upload's YAML 1.1 read it as 8: write 8 if that is meant, or "
                          "quote it if the string is",
                          HasSubstr("k.yml:3 the key Off is the string \"Off\"")))
      << result.Dump();
}

// A YAML tag asks for something other than the value's text (PyYAML's !!python/object builds
// an object, an !include reads another file); cnp runs no tag, and read the bare text in its
// place without a word. Such tags are refused at their line; core-schema tags that agree with
// the value as cnp reads it are taken.
TEST_F(DesignMappingTest, YamlTagsAreRefusedAtTheirLineUnlessTheyChangeNothing) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("t.yml",
                                    "d:\n"
                                    "  views: !include views.yml\n"
                                    "  options: !!python/object:m.Opts {local_seq: true}\n"
                                    "  shows: {s: !foo m.map}\n"
                                    "  filters: {f: !!bool yes}\n"
                                    "  lists: !!map {l: !!str m.map}\n"
                                    "  autoupdate: !!bool true\n"
                                    "  updates: {u: ! m.map, v: \"m.map\"}\n"
                                    "  big: !!int 123456789012345678901234567890\n"
                                    "  notext: !!str [a, b]\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status << "\n" << result.Dump();
  const std::vector<std::string> refused = ErrorsWithPlace(result);
  EXPECT_THAT(refused, IsSupersetOf({HasSubstr("2:10 the YAML tag !include is not supported"),
                                     HasSubstr("3:12 the YAML tag !!python/object:m.Opts is not "
                                               "supported"),
                                     HasSubstr("4:14 the YAML tag !foo is not supported"),
                                     HasSubstr("5:16 the YAML tag !!bool does not fit its value, "
                                               "\"yes\""),
                                     HasSubstr("10:11 the YAML tag !!str does not fit its value, "
                                               "a list")}))
      << result.Dump();
  // Nothing about the tags that agree with their values (lines 6 to 9; an integer past 64 bits
  // is an integer too).
  for (const std::string& error : refused) {
    EXPECT_THAT(error, Not(AnyOf(StartsWith("6:"), StartsWith("7:"), StartsWith("8:"),
                                 StartsWith("9:"))))
        << error;
  }
}

// A probe: a function given as `!include foo.yml` had its tag refused, then "foo.yml" looked
// up as a module, a second error about a name nobody meant. And an empty string was "found a
// single value".
TEST_F(DesignMappingTest, ARefusedTagIsTheOneErrorOfItsValueAndAnEmptyStringIsCalledSo) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("i.yml",
                                    "d:\n"
                                    "  shows: {s: !include foo.yml}\n"
                                    "  views: {v: {map: m.map}}\n"
                                    "  databases: \"\"\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status << "\n" << result.Dump();
  const std::vector<std::string> refused = ErrorsWithPlace(result);
  EXPECT_THAT(refused, UnorderedElementsAre(
                           HasSubstr("2:14 the YAML tag !include is not supported"),
                           HasSubstr("must be a non-empty string, found an empty string")))
      << result.Dump();
}

// A name with a control character in it (a newline, an escape sequence) is refused at its
// line, and shown escaped: before, it passed here and the worker refused it without saying
// why, after it had been printed raw to the terminal.
TEST_F(DesignMappingTest, ANameWithAControlCharacterIsRefusedAndShownEscaped) {
  UploadResult result = Check({File("c.yml", "d:\n  views: {v: \"m.ma\\u001b[31mp\\n\"}\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status << "\n" << result.Dump();
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().line(), 2);
  EXPECT_THAT(result.errors()[0].message(),
              AllOf(HasSubstr(R"("m.ma\x1b[31mp\n" is not a function name)"),
                    HasSubstr("(it holds a control character)"), Not(HasSubstr("\x1b"))));
}

// A name longer than any worker takes is refused at its line, shown shortened, as is one that
// its |version makes too long; the check said only that it "was not resolved by the worker",
// or passed a name every call would be refused. One of the longest taken goes through.
TEST_F(DesignMappingTest, ANameTooLongForAWorkerIsRefusedAtItsLine) {
  const std::string longest_bare = "m." + std::string(510, 'f');     // 512 bytes
  const std::string longest_versioned = "m." + std::string(508, 'g');  // 512 with "|1"
  runner_.Define(longest_bare, 1);
  runner_.Define(longest_versioned, 1);
  UploadResult result = Check({File("n.yml", absl::StrCat("d:\n  views: {v: ", longest_bare, "}\n",
                                                          "e:\n  views: {v: ", longest_bare, "g}\n",
                                                          "f:\n  views: {v: ", longest_versioned,
                                                          "}\n"))});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status << "\n" << result.Dump();
  ASSERT_THAT(result.errors(), SizeIs(2)) << result.Dump();
  EXPECT_EQ(result.errors()[1].location().line(), 4);
  EXPECT_THAT(result.errors()[1].message(),
              AllOf(HasSubstr("views.v.map: the function name \"m.fff"),
                    HasSubstr("...\" is 513 bytes long; at most 512 are taken")));
  EXPECT_EQ(result.errors()[0].location().line(), 2);
  EXPECT_THAT(result.errors()[0].message(),
              AllOf(HasSubstr("the function name \"m.fff"),
                    HasSubstr("...|1\" is 514 bytes long with its version; at most 512 are "
                              "taken")));
  for (const auto& error : result.errors()) EXPECT_LT(error.message().size(), 200u);
}

// Past the YAML reader's own depth (deeper than cnp's limit, which a walk reports) the message
// was its "bad file".
TEST_F(DesignMappingTest, NestingPastTheReadersDepthIsSaidSo) {
  UploadResult result = Check({File("deep.yml", absl::StrCat("d:\n  x: ", std::string(3000, '['),
                                                             std::string(3000, ']'), "\n"))});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.Dump();
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().line(), 2);
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("nested too deeply")) << result.Dump();
}

TEST_F(DesignMappingTest, EverySectionIsVersionedAndDatabasesIsNotStored) {
  for (const char* name : {"f.filter", "s.show", "l.list", "u.update", "v.validate", "r.rw",
                           "m.map"}) {
    runner_.Define(name, 5);
  }
  UploadResult result = Check(
      {File("all.yml",
            "app:\n"
            "  databases: [accounts, \"account-*\"]\n"
            "  language: python3\n"
            "  views:\n"
            "    by_x:\n"
            "      map: m.map\n"
            "      options: {collation: raw}\n"
            "  validate_doc_update: v.validate\n"
            "  filters: {mine: f.filter}\n"
            "  shows: {page: s.show}\n"
            "  lists: {table: l.list}\n"
            "  updates: {bump: u.update}\n"
            "  rewrites: r.rw\n"
            "  options: {local_seq: true, partitioned: false, limit: 3, ratio: 0.5, note: \"true\"}\n"
            "  autoupdate: false\n")});
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  ExpectDocument(result, "_design/app",
                 R"({"_id": "_design/app", "language": "python3",
                     "views": {"by_x": {"map": "m.map|5", "options": {"collation": "raw"}}},
                     "validate_doc_update": "v.validate|5",
                     "filters": {"mine": "f.filter|5"}, "shows": {"page": "s.show|5"},
                     "lists": {"table": "l.list|5"}, "updates": {"bump": "u.update|5"},
                     "rewrites": "r.rw|5",
                     "options": {"local_seq": true, "partitioned": false, "limit": 3,
                                 "ratio": 0.5, "note": "true"},
                     "autoupdate": false})");
}

TEST_F(DesignMappingTest, ViewServerNameComesFromTheRequest) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("a.yml", "d:\n  views:\n    v: m.map\n")}, "cnp");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  ExpectDocument(result, "_design/d",
                 R"({"_id": "_design/d", "language": "cnp", "views": {"v": {"map": "m.map|1"}}})");
}

// The service refuses CouchDB's own languages for any client of the Upload RPC, not only for
// cnp's command line: as the request's language (cnp's --view-server), and as a YAML
// `language:` at its line, in any case (found by a review).
TEST_F(DesignMappingTest, CouchDbsOwnLanguagesAreRefused) {
  runner_.Define("m.map", 1);
  for (const char* language : {"javascript", "Erlang", "query"}) {
    UploadResult result = Check({File("a.yml", "d:\n  views:\n    v: m.map\n")}, language);
    EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << language << result.Dump();
    EXPECT_THAT(result.status.message(),
                HasSubstr(absl::StrCat("language \"", language,
                                       "\" (cnp's --view-server) is CouchDB's own")));
    EXPECT_THAT(result.outcomes(), IsEmpty()) << result.Dump();
  }
  UploadResult yaml = Check({File("b.yml",
                                  "d:\n"
                                  "  views:\n"
                                  "    v: m.map\n"
                                  "  language: JavaScript\n")});
  EXPECT_FALSE(yaml.status.ok()) << yaml.Dump();
  ASSERT_THAT(yaml.errors(), SizeIs(1)) << yaml.Dump();
  EXPECT_EQ(yaml.errors()[0].location().line(), 4);
  EXPECT_EQ(yaml.errors()[0].location().column(), 13);
  EXPECT_THAT(yaml.errors()[0].message(),
              HasSubstr("language \"JavaScript\" is CouchDB's own JavaScript"));
  EXPECT_THAT(yaml.outcomes(), IsEmpty()) << yaml.Dump();
}

// A language that no query server can be named (a space, a line break: what an unclosed
// quote made of it) is refused, as the request's language and at its YAML line.
TEST_F(DesignMappingTest, ALanguageThatNamesNoQueryServerIsRefused) {
  runner_.Define("m.map", 1);
  UploadResult request = Check({File("a.yml", "d:\n  views:\n    v: m.map\n")}, "py thon");
  EXPECT_TRUE(absl::IsInvalidArgument(request.status)) << request.Dump();
  EXPECT_THAT(request.status.message(),
              HasSubstr("language \"py thon\" (cnp's --view-server) names no query server"));
  UploadResult yaml = Check({File("b.yml",
                                  "d:\n"
                                  "  views:\n"
                                  "    v: m.map\n"
                                  "  language: \"python\\nviews\"\n")});
  EXPECT_FALSE(yaml.status.ok()) << yaml.Dump();
  ASSERT_THAT(yaml.errors(), SizeIs(1)) << yaml.Dump();
  EXPECT_EQ(yaml.errors()[0].location().line(), 4);
  EXPECT_THAT(yaml.errors()[0].message(), HasSubstr("names no query server"));
  EXPECT_THAT(yaml.outcomes(), IsEmpty()) << yaml.Dump();
}

TEST_F(DesignMappingTest, RewriteRulesAreKeptAsJson) {
  UploadResult result = Check({File("a.yml",
                                    "d:\n"
                                    "  rewrites:\n"
                                    "    - {from: /a, to: _show/page}\n")});
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  ExpectDocument(result, "_design/d",
                 R"({"_id": "_design/d", "language": "python",
                     "rewrites": [{"from": "/a", "to": "_show/page"}]})");
  EXPECT_EQ(runner_.resolve_tasks(), 0);
}

TEST_F(DesignMappingTest, AllErrorsAreReportedAtOnceWithFileAndLine) {
  runner_.Define("good.map", 1);
  runner_.Refuse("os.");
  UploadResult result = Check({
      File("one.yml",
           "d1:\n"                                 // 1
           "  views:\n"                            // 2
           "    ok: good.map\n"                    // 3
           "    missing: nowhere.map\n"            // 4
           "    pinned: good.map|3\n"              // 5
           "    odd: {map: good.map, optoins: 1}\n"  // 6
           "  validate_doc_update: os.system\n"    // 7
           "  _rev: 1-abc\n"),                     // 8
      File("two.yml",
           "d1:\n"                                 // 1: the same design doc again
           "  views:\n"
           "    v: good.map\n"),
      File("three.yml", "d3:\n  views: [oops\n"),
  });
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  EXPECT_THAT(result.outcomes(), IsEmpty());

  std::vector<std::string> errors;
  for (const v1::UploadProblem& p : result.errors()) {
    errors.push_back(absl::StrCat(p.location().file(), ":", p.location().line(), ": ",
                                  p.message()));
  }
  // In reading order, whichever step found them.
  EXPECT_THAT(errors, ElementsAre(
                          HasSubstr("one.yml:4: \"nowhere.map\" cannot be used: "
                                    "ModuleNotFoundError"),
                          HasSubstr("one.yml:5: views.pinned.map: \"good.map|3\" already has "
                                    "a |version"),
                          HasSubstr("one.yml:6: unknown key \"optoins\" in view \"odd\"; "
                                    "did you mean \"options\"?"),
                          HasSubstr("one.yml:7: \"os.system\" is refused"),
                          HasSubstr("one.yml:8: key \"_rev\" in design document \"d1\": "
                                    "fields that start with '_' are CouchDB's"),
                          HasSubstr("two.yml:1: design document \"d1\" is also defined at "
                                    "one.yml:1"),
                          HasSubstr("three.yml:2: not valid YAML")))
      << result.Dump();
}

// Found by a review: a view named "" was stored, and no URL reaches it.
TEST_F(DesignMappingTest, AnEmptyNameIsRefusedAtItsLine) {
  runner_.Define("good.map", 1);
  UploadResult result = Check({File("empty.yml",
                                    "d:\n"                      // 1
                                    "  views:\n"                // 2
                                    "    \"\": good.map\n"      // 3
                                    "  shows:\n"                // 4
                                    "    '': good.map\n")});    // 5
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  std::vector<std::string> errors;
  for (const v1::UploadProblem& p : result.errors()) {
    errors.push_back(absl::StrCat(p.location().line(), ": ", p.message()));
  }
  EXPECT_THAT(errors, ElementsAre("3: an empty name in views: no URL reaches it; name it",
                                  "5: an empty name in shows: no URL reaches it; name it"))
      << result.Dump();
}

// Found by a review: a tab in the indentation was "not valid YAML: illegal map value", never
// naming the tab.
TEST_F(DesignMappingTest, ATabInTheIndentationIsNamed) {
  runner_.Define("good.map", 1);
  UploadResult result = Check({File("tab.yml", "d:\n  views:\n\tv: good.map\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_EQ(result.errors().size(), 1u) << result.Dump();
  EXPECT_THAT(result.errors()[0].message(),
              AllOf(HasSubstr("not valid YAML: "),
                    HasSubstr("(line 3 indents with a tab: YAML indents with spaces only)")))
      << result.Dump();
}

// Found by a data-safety probe: yaml-cpp read a string whose closing quote was missing to the
// end of the file, and the upload wrote the first design document with that text as its
// language and never the second, exit status 0. A mapping's last line without its ':' was a
// field of null.
TEST_F(DesignMappingTest, AQuoteNeverClosedOrALineWithoutItsColonIsRefusedAtItsPlace) {
  runner_.Define("good.map", 1);
  UploadResult quote = Check({File("quote.yml",
                                   "first:\n"
                                   "  language: \"python\n"
                                   "  views: {v: good.map}\n"
                                   "second:\n"
                                   "  views: {w: good.map}\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(quote.status)) << quote.status;
  ASSERT_EQ(quote.errors().size(), 1u) << quote.Dump();
  EXPECT_EQ(quote.errors()[0].location().line(), 2) << quote.Dump();
  EXPECT_EQ(quote.errors()[0].location().column(), 13) << quote.Dump();
  EXPECT_THAT(quote.errors()[0].message(),
              HasSubstr("not valid YAML: this quoted string is never closed"));

  UploadResult colon = Check({File("colon.yml", "d:\n  views: {v: good.map}\n  stray line\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(colon.status)) << colon.status;
  ASSERT_EQ(colon.errors().size(), 1u) << colon.Dump();
  EXPECT_EQ(colon.errors()[0].location().line(), 3) << colon.Dump();
  EXPECT_THAT(colon.errors()[0].message(),
              HasSubstr("could not find the ':' after \"stray line\""));
}

// YAML that ends too soon (a flow mapping never closed) is placed at the end of its last line,
// where an editor shows the end of the file; it was placed on the line after the final newline,
// which no editor shows.
TEST_F(DesignMappingTest, YamlThatEndsTooSoonIsPlacedAtTheEndOfItsLastLine) {
  runner_.Define("good.map", 1);
  UploadResult result = Check({File("open.yml", "d:\n  views: {v: {map: good.map}\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_EQ(result.errors().size(), 1u) << result.Dump();
  const v1::UploadProblem problem = result.errors()[0];
  EXPECT_EQ(problem.location().line(), 2) << result.Dump();
  EXPECT_EQ(problem.location().column(), 29) << result.Dump();  // after its 28 characters
  EXPECT_THAT(problem.message(), HasSubstr("not valid YAML: "));
  EXPECT_THAT(problem.message(), HasSubstr(" by the end of the file"));
  // Windows line ends, blank lines after, and a byte-order mark change none of it.
  UploadResult crlf = Check(
      {File("open.yml", "\xEF\xBB\xBF" "d:\r\n  views: {v: {map: good.map}\r\n\r\n  \n")});
  ASSERT_EQ(crlf.errors().size(), 1u) << crlf.Dump();
  const v1::UploadProblem crlf_problem = crlf.errors()[0];
  EXPECT_EQ(crlf_problem.location().line(), 2) << crlf.Dump();
  EXPECT_EQ(crlf_problem.location().column(), 29) << crlf.Dump();
  EXPECT_THAT(crlf_problem.message(), HasSubstr(" by the end of the file"));
}

// A misspelt key is an error that names the key it most likely meant: kept as a field, the
// section it was meant to be would be missing without a word.
TEST_F(DesignMappingTest, AMisspeltKeyIsToldTheKeyItMeant) {
  runner_.Define("good.map", 1);
  UploadResult result = Check({File("typo.yml",
                                    "d1:\n"
                                    "  veiws:\n"
                                    "    v: good.map\n"
                                    "  views:\n"
                                    "    w: {map: good.map, redcue: _sum}\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  std::vector<std::string> errors;
  for (const v1::UploadProblem& p : result.errors()) errors.push_back(p.message());
  EXPECT_THAT(errors, ElementsAre(HasSubstr("unknown key \"veiws\" in design document \"d1\"; "
                                            "did you mean \"views\"? (known: "),
                                  HasSubstr("unknown key \"redcue\" in view \"w\"; did you "
                                            "mean \"reduce\"? (known: map, reduce, options)")))
      << result.Dump();
}

// A key like no known one is kept as it is, with a warning, as cnp-upload kept it: YAML written
// for cnp-upload uploads unchanged.
TEST_F(DesignMappingTest, AKeyLikeNoKnownOneIsKeptWithAWarning) {
  runner_.Define("good.map", 1);
  UploadResult result = Check({File("extra.yml",
                                    "d1:\n"
                                    "  views:\n"
                                    "    w: {map: good.map, collation_note: {by: town}}\n"
                                    "  colour: blue\n")});
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  ExpectDocument(result, "_design/d1",
                 R"({"_id": "_design/d1", "language": "python", "colour": "blue",
                     "views": {"w": {"map": "good.map|1",
                                     "collation_note": {"by": "town"}}}})");
  std::vector<std::string> warnings;
  for (const v1::UploadProblem& p : result.warnings()) {
    warnings.push_back(absl::StrCat(p.location().line(), ": ", p.message()));
  }
  EXPECT_THAT(warnings,
              UnorderedElementsAre(
                  AllOf(HasSubstr("3: unknown key \"collation_note\" in view \"w\": kept in "
                                  "the design document, as cnp-upload kept it"),
                        Not(HasSubstr("did you mean"))),
                  HasSubstr("4: unknown key \"colour\" in design document \"d1\": kept")))
      << result.Dump();
}

TEST_F(DesignMappingTest, ShapeErrorsNameWhatWasExpected) {
  UploadResult result = Check({File("s.yml",
                                    "- a list\n")});
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("expected a mapping"));

  result = Check({File("s.yml",
                       "d:\n"
                       "  views:\n"
                       "    v: {reduce: _sum}\n"
                       "  shows:\n"
                       "    s: [a, b]\n"
                       "  filters: nope\n")});
  std::vector<std::string> messages;
  for (const auto& p : result.errors()) {
    messages.push_back(absl::StrCat(p.location().line(), ": ", p.message()));
  }
  EXPECT_THAT(messages, ElementsAre(HasSubstr("3: view \"v\" has no map"),
                                    HasSubstr("5: shows.s is a list of lines"),
                                    HasSubstr("6: filters must be a mapping")));
}

// Kazoo writes a JavaScript function as an array of its lines; here a function is a name.
TEST_F(DesignMappingTest, AFunctionGivenAsLinesIsRefusedAtItsLine) {
  runner_.Define("faxes.listing", 1);
  UploadResult result = Check({File("faxes.yml",
                                    "faxes:\n"
                                    "  views:\n"
                                    "    crossbar_listing:\n"
                                    "      map:\n"
                                    "        - \"function(doc) {\"\n"
                                    "        - \"  emit(doc._id, null);\"\n"
                                    "        - \"}\"\n"
                                    "    by_id: faxes.listing\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  const v1::UploadProblem error = result.errors()[0];
  EXPECT_EQ(error.location().file(), "faxes.yml");
  EXPECT_EQ(error.location().line(), 5);
  EXPECT_THAT(error.message(), HasSubstr("views.crossbar_listing.map is a list of lines"));
  EXPECT_THAT(error.message(), HasSubstr("named functions are names: write module.function"));
}

TEST_F(DesignMappingTest, ANameGivenTwiceInOneFileIsAnError) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("twice.yml",
                                    "d:\n"
                                    "  views: {v: m.map}\n"
                                    "d:\n"
                                    "  views: {}\n"
                                    "e:\n"
                                    "  views: {w: m.map, w: m.map}\n")});
  std::vector<std::string> messages;
  for (const auto& p : result.errors()) {
    messages.push_back(absl::StrCat(p.location().line(), ":", p.location().column(), ": ",
                                    p.message()));
  }
  EXPECT_THAT(messages, ElementsAre("3:1: \"d\" is given twice", "6:21: \"w\" is given twice"))
      << result.Dump();
}

TEST_F(DesignMappingTest, SameDesignDocForDifferentDatabasesIsFine) {
  runner_.Define("m.map", 1);
  UploadResult result = Check({File("a.yml", "d:\n  databases: one\n  views: {v: m.map}\n"),
                               File("b.yml", "d:\n  databases: two\n  views: {v: m.map}\n")});
  EXPECT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_THAT(result.outcomes(), SizeIs(2));
}

// A name CouchDB would refuse to create, or a pattern only such names match, could only ever
// match nothing at upload: the check refuses it at its line, for `databases:` and
// classifications alike. CouchDB's own names ('_' first) and patterns that can match pass.
TEST_F(DesignMappingTest, DatabasesNoCouchDbNameCanMatchAreRefusedAtTheirLine) {
  runner_.Define("m.map", 1);
  UploadResult result =
      Check({File("dbs.yml",
                  "d:\n"
                  "  databases: [\"5\", \"Accounts-*\", \"acct-*\", _users, \"[a-z]*\", ok]\n"
                  "  views: {v: m.map}\n"
                  "e:\n"
                  "  classification: towns\n"
                  "  views: {v: m.map}\n"
                  "classifications:\n"
                  "  towns: [\"Town-*\", \"town-*\"]\n")});
  EXPECT_THAT(
      ErrorsWithPlace(result),
      ElementsAre(AllOf(StartsWith("2:15 \"5\" can never name a CouchDB database: "),
                        HasSubstr("starts with a lowercase letter")),
                  StartsWith("2:20 the pattern \"Accounts-*\" can never match a CouchDB database"),
                  StartsWith("8:11 the pattern \"Town-*\" can never match a CouchDB database")))
      << result.Dump();
}

TEST_F(DesignMappingTest, WorkersThatCannotBeReachedFailTheCheck) {
  runner_.Define("m.map", 1);
  runner_.BreakWith(absl::UnavailableError("the pool is shutting down"));
  UploadResult result = Check({File("a.yml", "d:\n  views: {v: m.map}\n")});
  EXPECT_TRUE(absl::IsUnavailable(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("could not resolve"));
}

// OK means every design document reached its state, so files that together hold none fail
// INVALID_ARGUMENT (one error naming them) in every mode, rather than passing a pipeline that
// uploaded nothing; one empty file among others is only a warning.
TEST_F(DesignMappingTest, FilesThatHoldNoDesignDocumentAreAnError) {
  runner_.Define("m.map", 1);
  UploadResult empty = Check({File("empty.yml", "")});
  EXPECT_TRUE(absl::IsInvalidArgument(empty.status)) << empty.status;
  EXPECT_THAT(empty.status.message(), HasSubstr("empty.yml holds no design document"));
  ASSERT_THAT(empty.errors(), SizeIs(1)) << empty.Dump();
  EXPECT_EQ(empty.errors()[0].message(), empty.status.message());

  std::vector<v1::UploadFile> many;
  for (int i = 0; i < 10'000; ++i) {
    many.push_back(File(absl::StrCat("f", i, ".yml"), i % 3 == 0   ? "# views: {}\n"
                                                      : i % 3 == 1 ? "{}\n"
                                                                   : "classifications: {}\n"));
  }
  for (int mode = 0; mode < 3; ++mode) {
    v1::UploadRequest request;
    for (const v1::UploadFile& file : many) *request.add_files() = file;
    if (mode == 0) request.set_check_only(true);
    if (mode >= 1) request.set_couchdb_url("http://127.0.0.1:1");
    if (mode == 1) request.set_database("db");
    if (mode == 2) request.set_register_database("registry");
    UploadResult result = RunUpload(uploader_, request);
    EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << mode << ": " << result.status;
    EXPECT_THAT(result.status.message(),
                HasSubstr("none of the 10000 files holds a design document: f0.yml, f1.yml, "
                          "f2.yml and 9997 more"));
    EXPECT_THAT(result.status.message(), HasSubstr(mode == 0   ? "nothing was checked"
                                                   : mode == 1 ? "nothing was written"
                                                               : "nothing was registered"));
    EXPECT_THAT(result.errors(), SizeIs(1));
    EXPECT_THAT(result.warnings(), IsEmpty());
    EXPECT_THAT(result.outcomes(), IsEmpty());
  }

  UploadResult among = Check({File("d.yml", "d:\n  views: {v: m.map}\n"), File("e.yml", "")});
  EXPECT_TRUE(among.status.ok()) << among.status << among.Dump();
  EXPECT_THAT(among.outcomes(), SizeIs(1));
  ASSERT_THAT(among.warnings(), SizeIs(1));
  EXPECT_EQ(among.warnings()[0].location().file(), "e.yml");
  EXPECT_THAT(among.warnings()[0].message(), HasSubstr("no design documents in this file"));
}

// Numbers go to CouchDB as it keeps them: an integer past 64 bits digit for digit (a double
// rounded it), and a scalar tagged !!str is the string.
TEST_F(DesignMappingTest, NumbersAreWrittenAsCouchDbKeepsThem) {
  UploadResult result = Check({File("n.yml",
                                    "d:\n"
                                    "  options: {big: 123456789012345678901234567890, "
                                    "neg: -18446744073709551616, u: 18446744073709551615, "
                                    "plus: +98765432109876543210, half: 0.5, t: !!str 123, "
                                    "zeros: 000123456789012345678901234567890, "
                                    "negzeros: -00018446744073709551616}\n")});
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_THAT(result.Outcome("_design/d").document_json(),
              HasSubstr(R"("options":{"big":123456789012345678901234567890,)"
                        R"("neg":-18446744073709551616,"u":18446744073709551615,)"
                        R"("plus":98765432109876543210,"half":0.5,"t":"123",)"
                        R"("zeros":123456789012345678901234567890,)"
                        R"("negzeros":-18446744073709551616})"))
      << result.Dump();
}

// JSON in CouchDB has no number past a double's range: such a number is refused at its line
// (it was written as JSON cut off before it, which cnp check called ok).
TEST_F(DesignMappingTest, ANumberPastADoublesRangeIsRefusedAtItsLine) {
  runner_.Define("good.map", 1);
  UploadResult result = Check({File("inf.yml",
                                    "d:\n"
                                    "  views: {v: good.map}\n"
                                    "  options:\n"
                                    "    big: -1e999\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.Dump();
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().line(), 4);
  EXPECT_THAT(result.errors()[0].message(),
              HasSubstr("-1e999 is a number beyond what JSON's numbers hold in CouchDB"));
}

// yaml-cpp takes "<<" for a plain key, so a merge would have been written as a "<<" member.
// `null:` as a view's name reads as YAML's null: it was "a key must be a plain name", of a
// key written as a plain word (found by a robustness probe).
TEST_F(DesignMappingTest, ANullKeyIsSaidToBeYamlsNull) {
  runner_.Define("good.map", 1);
  UploadResult result = Check({File("null.yml",
                                    "d:\n"
                                    "  views:\n"
                                    "    null: good.map\n"
                                    "    ~: good.map\n"
                                    "    \"null\": good.map\n"
                                    "    [a, b]: good.map\n")});
  EXPECT_THAT(ErrorsWithPlace(result),
              ElementsAre(HasSubstr("3:5 this key reads as YAML's null (null, ~ or nothing)"),
                          HasSubstr("4:5 this key reads as YAML's null"),
                          "6:5 a key must be a plain name, not a list or a mapping"))
      << result.Dump();
}

TEST_F(DesignMappingTest, AMergeKeyIsRefusedAtItsLine) {
  runner_.Define("good.map", 1);
  UploadResult result = Check({File("merge.yml",
                                    "d:\n"
                                    "  views: {v: good.map}\n"
                                    "  options: &o {local_seq: true}\n"
                                    "e:\n"
                                    "  views: {v: good.map}\n"
                                    "  options:\n"
                                    "    <<: *o\n"
                                    "    collation: raw\n")});
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.Dump();
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().line(), 7);
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("YAML merge keys (<<) are not supported"));
}

}  // namespace
}  // namespace cnp::upload::testing
