// What cnp upload, check and sync print comes partly from CouchDB (database names, ids, fields
// of stored design documents) and from registry entries anyone with write access fills: a
// control character in it is escaped, never written to the terminal (found by a review with a
// server answering for CouchDB: an ESC sequence and a forged second line went through).
#include <algorithm>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli/event_printer.h"
#include "gtest/gtest.h"

namespace cnp::cli {
namespace {

// Text with a terminal escape sequence, a bell, and a line of its own.
constexpr char kHostile[] = "x\x1b]0;pwned\x07\x1b[31mRED\n\rforged: created _users/_design/_auth";

std::string Printed(const v1::UploadEvent& event) {
  std::ostringstream out;
  UploadTally tally;
  PrintEvent(event, {}, out, out, tally);
  return out.str();
}

void ExpectOneSafeLine(const std::string& text) {
  EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
  EXPECT_EQ(text.find('\x07'), std::string::npos) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  // The forged line stays on the line of the text it came in.
  EXPECT_EQ(text.find("\nforged"), std::string::npos) << text;
  EXPECT_NE(text.find("forged: created"), std::string::npos) << text;
}

TEST(EventPrinterTest, AProblemFromARegistryEntryCannotForgeALine) {
  v1::UploadEvent event;
  event.mutable_problem()->set_severity(v1::UploadProblem::WARNING);
  event.mutable_problem()->set_database(kHostile);
  event.mutable_problem()->set_message(absl::StrCat("registry entry \"", kHostile, "\" lacks a name"));
  const std::string text = Printed(event);
  ExpectOneSafeLine(text);
  EXPECT_EQ(text.back(), '\n');
}

TEST(EventPrinterTest, AnOutcomeWithCouchDbsTextIsEscaped) {
  v1::UploadEvent event;
  v1::DesignDocOutcome& outcome = *event.mutable_outcome();
  outcome.set_action(v1::DesignDocOutcome::UPDATED);
  outcome.set_database(kHostile);
  outcome.set_id("_design/towns");
  outcome.add_kept_fields(kHostile);
  const std::string text = Printed(event);
  ExpectOneSafeLine(text);
  // Its two lines: the outcome and the kept field, each ended by the printer itself.
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;
}

// cnp sync compares a stored design document with the registry's copy, not with a YAML file
// (a CLI probe read "kept extra (in CouchDB but not in the YAML ...)" from cnp sync).
TEST(EventPrinterTest, KeptAndDroppedFieldsNameWhatTheyAreComparedWith) {
  v1::UploadEvent event;
  v1::DesignDocOutcome& outcome = *event.mutable_outcome();
  outcome.set_action(v1::DesignDocOutcome::UPDATED);
  outcome.set_database("db");
  outcome.set_id("_design/towns");
  outcome.add_kept_fields("extra");
  outcome.add_dropped_fields("old");
  std::ostringstream out;
  UploadTally tally;
  PrintEvent(event, {}, out, out, tally);
  EXPECT_NE(out.str().find("kept extra (in CouchDB but not in the YAML; "), std::string::npos)
      << out.str();
  std::ostringstream synced;
  PrintEvent(event, {.compared_with = "the registry's copy"}, synced, synced, tally);
  EXPECT_NE(synced.str().find("kept extra (in CouchDB but not in the registry's copy; "),
            std::string::npos)
      << synced.str();
  EXPECT_NE(synced.str().find("dropped old (in CouchDB but not in the registry's copy)"),
            std::string::npos)
      << synced.str();
}

}  // namespace
}  // namespace cnp::cli
