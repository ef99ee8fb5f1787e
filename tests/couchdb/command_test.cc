// The protocol library: every line read once into a typed command, and the cheap head reading
// cnp-adapter uses agreeing with it.
#include "service/couchdb/command.h"

#include <sys/resource.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "service/couchdb/json_text.h"
#include "common/couchdb/large_numbers.h"

namespace cnp::couchdb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

template <typename T>
T As(std::string_view line, ReduceValues values = ReduceValues::kChecked) {
  Command command = ParseCommand(line, values);
  EXPECT_TRUE(std::holds_alternative<T>(command)) << line << " is kind "
                                                  << static_cast<int>(KindOf(command));
  if (!std::holds_alternative<T>(command)) return T{};
  return std::get<T>(std::move(command));
}

TEST(PeekCommandTest, ReadsTheCommandName) {
  EXPECT_EQ(PeekCommand(R"(["reset",{"timeout":5000}])"), CommandKind::kReset);
  EXPECT_EQ(PeekCommand(R"(["reset"])"), CommandKind::kReset);
  EXPECT_EQ(PeekCommand(" [ \"reset\" ] \n"), CommandKind::kReset);
  EXPECT_EQ(PeekCommand(R"(["resets"])"), CommandKind::kUnknown);
  EXPECT_EQ(PeekCommand(R"(["add_lib",{}])"), CommandKind::kAddLib);
  EXPECT_EQ(PeekCommand(R"(["add_fun","m.f|1"])"), CommandKind::kAddFun);
  EXPECT_EQ(PeekCommand(R"(["map_doc",{"reset":1}])"), CommandKind::kMapDoc);
  EXPECT_EQ(PeekCommand(R"(["reduce",["f"],[]])"), CommandKind::kReduce);
  EXPECT_EQ(PeekCommand(R"(["rereduce",["f"],[]])"), CommandKind::kRereduce);
  EXPECT_EQ(PeekCommand(R"(["ddoc","new","_design/x",{}])"), CommandKind::kDesignDocNew);
  EXPECT_EQ(PeekCommand(R"(["ddoc","_design/x",["filters","f"],[]])"),
            CommandKind::kDesignDocCall);
  EXPECT_EQ(PeekCommand(R"(["ddoc","newer",["filters","f"],[]])"), CommandKind::kDesignDocCall);
  EXPECT_EQ(PeekCommand(R"(["list_row",{}])"), CommandKind::kListRow);
  EXPECT_EQ(PeekCommand(R"(["list_end"])"), CommandKind::kListEnd);
  EXPECT_EQ(PeekCommand("not json"), CommandKind::kNotACommand);
  EXPECT_EQ(PeekCommand(R"(["unterminated)"), CommandKind::kNotACommand);
  EXPECT_EQ(PeekCommand(R"(["reset"x])"), CommandKind::kNotACommand);
  // Escapes are decoded: every reader sees the same name.
  EXPECT_EQ(PeekCommand(R"(["res\u0065t"])"), CommandKind::kReset);
  EXPECT_EQ(KindOf(ParseCommand(R"(["res\u0065t"])")), CommandKind::kReset);
}

TEST(PeekCommandTest, AgreesWithTheWholeParseOnCommands) {
  for (std::string_view line :
       {R"(["reset",{"timeout":5000}])", R"(["add_lib",{"a":1}])", R"(["add_fun","m.f"])",
        R"(["map_doc",{"_id":"a"}])", R"([ "map_doc" , {"_id":"a"} ])",
        R"(["reduce",["m.f"],[[1,2]]])", R"(["rereduce",["m.f"],[3]])",
        R"(["ddoc","new","_design/x",{"_id":"_design/x"}])",
        R"(["ddoc","_design/x",["shows","s"],[null,{}]])", R"(["list_row",{"key":1}])",
        R"(["list_end"])", R"(["index_doc",{}])"}) {
    EXPECT_EQ(PeekCommand(line), KindOf(ParseCommand(line))) << line;
  }
}

TEST(ParseCommandTest, MapDocKeepsTheDocumentsBytes) {
  EXPECT_EQ(As<command::MapDoc>(R"(["map_doc",{"_id":"a", "x":[1,2]}])").doc,
            R"({"_id":"a", "x":[1,2]})");
  // Not the hot path's exact spelling: read as JSON, same result.
  EXPECT_EQ(As<command::MapDoc>(R"([ "map_doc", {"_id":"a"} ])").doc, R"({"_id":"a"})");
  command::BadArguments missing = As<command::BadArguments>(R"(["map_doc"])");
  EXPECT_EQ(missing.kind, CommandKind::kMapDoc);
  EXPECT_EQ(missing.message, "'map_doc' is missing arguments");
}

TEST(ParseCommandTest, ResetIsAResetWhenItIsJson) {
  EXPECT_EQ(As<command::Reset>(R"(["reset",{"timeout":2500,"reduce_limit":"log"}])")
                .config.timeout,
            absl::Milliseconds(2500));
  EXPECT_EQ(As<command::Reset>(R"(["reset",{"reduce_limit":true}])").config.reduce_limit,
            QueryConfig::ReduceLimit::kOn);
  EXPECT_FALSE(As<command::Reset>(R"(["reset"])").config.timeout.has_value());
  // A configuration that is JSON but not one is the defaults.
  EXPECT_FALSE(As<command::Reset>(R"(["reset",{"timeout":"soon"}])").config.timeout.has_value());
  // A threshold past size_t's range is clamped, not converted (undefined behaviour).
  EXPECT_EQ(As<command::Reset>(R"(["reset",{"reduce_limit_threshold":1e308}])").config.reduce_limit_threshold,
            size_t{std::numeric_limits<uint32_t>::max()});
  // A configuration far larger than any of CouchDB's is not built in memory (a 63 MB one of
  // `{}`s took 1.26 GB): the defaults, as for one that is not an object.
  std::string huge = R"(["reset",{"timeout":2500,"pad":[)";
  for (size_t i = 0; huge.size() <= QueryConfig::kMaxJsonBytes + 64; ++i) huge += i == 0 ? "{}" : ",{}";
  huge += "]}]";
  EXPECT_FALSE(As<command::Reset>(huge).config.timeout.has_value());
  // A line that is not JSON is no reset, as in couchjs, which parses every line first and exits
  // (the adapter answers only a reset that is JSON itself, so this is the only answer).
  As<command::NotACommand>(R"(["reset",{"timeout":)");
  // Nor is one with text after it (a probe: `["reset"] x` was answered true, where couchjs's
  // JSON.parse refuses the line and every other command's was refused).
  EXPECT_EQ(As<command::NotACommand>(R"(["reset"] x)").reason,
            "text after the command at byte 9: a line holds one JSON array and nothing else");
  As<command::NotACommand>(R"(["reset"]["reset"])");
}

// The peak resident memory of this process, in bytes.
int64_t PeakBytes() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return int64_t{usage.ru_maxrss} << 10;
}

// Found by a review: the walk kept a slice (16 bytes) of every top-level element, so one line
// of 32 MB made of 16 million tiny elements took the reader past 350 MB, several times what
// the line is counted as. No command reads past its fourth element; the rest are walked only.
TEST(ParseCommandTest, ALineOfMillionsOfElementsCostsNoMoreThanItsBytes) {
  constexpr int kElements = 8'000'000;
  std::string line = R"(["list_row",{"key":"a"})";
  line.reserve(line.size() + 2 * kElements + 2);
  for (int i = 0; i < kElements; ++i) line += ",0";
  line += "]";
  std::string reset = R"(["reset",{"timeout":5000})";
  reset.reserve(reset.size() + 2 * kElements + 2);
  for (int i = 0; i < kElements; ++i) reset += ",0";
  reset += "]";
  const int64_t before = PeakBytes();

  EXPECT_EQ(As<command::ListRow>(line).row, R"({"key":"a"})");
  EXPECT_TRUE(std::holds_alternative<command::Reset>(ParseCommand(reset)));
  absl::StatusOr<std::vector<std::string_view>> split = SplitJsonArray(reset, 2);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_THAT(*split, ElementsAre(R"("reset")", R"({"timeout":5000})"));

  // Kept, 8 million slices would be 128 MB (more as the vector grows); each line is 16 MB.
  EXPECT_LT(PeakBytes() - before, int64_t{16} << 20);
}

TEST(ParseCommandTest, AddFunAndAddLib) {
  EXPECT_EQ(As<command::AddFun>(R"(["add_fun","m.f|2"])").function, "m.f|2");
  EXPECT_EQ(As<command::BadArguments>(R"(["add_fun",3])").error_id, "compilation_error");
  // A name that is not UTF-8 would go into the worker's task as a protobuf string it cannot
  // read ("the frame is not a Task"): refused here, and in a reduce's list of names.
  EXPECT_EQ(As<command::BadArguments>("[\"add_fun\",\"m.\xff\"]").error_id, "compilation_error");
  EXPECT_EQ(As<command::BadArguments>("[\"reduce\",[\"m.\xc3\"],[]]").kind, CommandKind::kReduce);
  EXPECT_EQ(As<command::AddLib>(R"(["add_lib",{"x":"y"}])").lib, R"({"x":"y"})");
  EXPECT_EQ(As<command::AddLib>(R"(["add_lib"])").lib, "{}");
}

TEST(ParseCommandTest, ReduceNamesItsFunctionsAndKeepsTheValues) {
  const std::string line = R"(["rereduce",["m.sum","m.count|1"],[1, 2,3]])";
  command::Reduce reduce = As<command::Reduce>(line);
  EXPECT_TRUE(reduce.rereduce);
  EXPECT_THAT(reduce.functions, ElementsAre("m.sum", "m.count|1"));
  EXPECT_EQ(reduce.kvs, "[1, 2,3]");
  EXPECT_EQ(reduce.names_bytes, 5u + 9u);
  EXPECT_EQ(reduce.line_bytes, line.size());
  // No functions at all is a reduce to nothing (couchjs answers [true,[]]); a list that is not
  // of names is still refused.
  EXPECT_THAT(As<command::Reduce>(R"(["reduce",[],[[[1,"a"],2]]])").functions, IsEmpty());
  EXPECT_THAT(As<command::Reduce>(R"(["rereduce",[],[]])").functions, IsEmpty());
  EXPECT_THAT(As<command::BadArguments>(R"(["reduce",[1],[]])").message,
              HasSubstr("expects a list of function names"));
  EXPECT_EQ(As<command::BadArguments>(R"(["reduce",["f"]])").kind, CommandKind::kReduce);
}

// A reduce line of n function names "m.f".
std::string ReduceLine(size_t n, std::string_view after_names = "") {
  std::string line = R"(["reduce",[)";
  for (size_t i = 0; i < n; ++i) line += i == 0 ? R"("m.f")" : R"(,"m.f")";
  line.append(after_names);
  line.append(R"(],[[["k","id"],1]]])");
  return line;
}

// Each name became a string of its own: 10 million of them (a 63 MB line) took 1.56 GB of a
// server's memory on a gRPC thread. A line may name as many functions as a session may hold.
TEST(ParseCommandTest, AReduceNamesAtMostAsManyFunctionsAsASessionHolds) {
  for (ReduceValues values : {ReduceValues::kChecked, ReduceValues::kLeftToTheWorker}) {
    EXPECT_EQ(As<command::Reduce>(ReduceLine(kMaxReduceFunctions), values).functions.size(),
              kMaxReduceFunctions);
    command::BadArguments refused =
        As<command::BadArguments>(ReduceLine(kMaxReduceFunctions + 1), values);
    EXPECT_EQ(refused.kind, CommandKind::kReduce);
    EXPECT_EQ(refused.error_id, "too_many_functions");
    EXPECT_THAT(refused.message, HasSubstr("more than 4096 functions"));
    // The names past the limit are not read: one that is not UTF-8 is never reached.
    EXPECT_EQ(As<command::BadArguments>(ReduceLine(kMaxReduceFunctions + 1, ",\"m.\xff\""),
                                        values)
                  .error_id,
              "too_many_functions");
  }
}

// CouchDB's design functions are at most three names deep (["views","v","map"]); a path of ten
// million names (40 MB) took 695 MB of a server's memory.
TEST(ParseCommandTest, ADesignFunctionPathHasAtMostThreeNames) {
  EXPECT_THAT(As<command::DesignDocCall>(R"(["ddoc","_design/v",["views","v","map"],[[{}]]])")
                  .path,
              ElementsAre("views", "v", "map"));
  command::BadArguments refused =
      As<command::BadArguments>(R"(["ddoc","_design/v",["views","v","map","x"],[[{}]]])");
  EXPECT_EQ(refused.kind, CommandKind::kDesignDocCall);
  EXPECT_EQ(refused.error_id, "not_found");
  EXPECT_THAT(refused.message, HasSubstr("_design/v"));
  EXPECT_THAT(refused.message, HasSubstr("at most 3 names"));
  // Read no further than the fourth name: what follows it is never decoded.
  EXPECT_EQ(As<command::BadArguments>("[\"ddoc\",\"_design/v\",[\"s\",\"s\",\"s\",\"s\","
                                      "\"\xff\"],[]]")
                .error_id,
            "not_found");
}

// couchjs maps the document of ["map_doc",{doc},"extra"] and ignores the rest; the hot path
// takes all of it for the document, so the rest is told apart when the worker refuses that.
TEST(ParseCommandTest, FindsTheDocumentBeforeAMapDocsExtraArguments) {
  EXPECT_EQ(As<command::MapDoc>(R"(["map_doc",{"_id":"a"},"extra"])").doc,
            R"({"_id":"a"},"extra")");
  EXPECT_EQ(DocumentBeforeExtraArguments(R"({"_id":"a","x":[1,","]},"extra",{"y":2})"),
            R"({"_id":"a","x":[1,","]})");
  EXPECT_EQ(DocumentBeforeExtraArguments(R"( {"_id":"a"} , 1)"), R"({"_id":"a"})");
  // One value, or text that is not JSON, is no document with extra arguments.
  EXPECT_EQ(DocumentBeforeExtraArguments(R"({"_id":"a"})"), std::nullopt);
  EXPECT_EQ(DocumentBeforeExtraArguments(R"({"_id":"a"},)"), std::nullopt);
  EXPECT_EQ(DocumentBeforeExtraArguments(R"({"_id":"a"} "x")"), std::nullopt);
  EXPECT_EQ(DocumentBeforeExtraArguments(R"({"_id":"a",},1)"), std::nullopt);
}

TEST(ParseCommandTest, DesignDocs) {
  command::DesignDocNew ddoc = As<command::DesignDocNew>(R"(["ddoc","new","_design\/v",{"a":1}])");
  EXPECT_EQ(ddoc.id, "_design/v");
  EXPECT_EQ(ddoc.doc, R"({"a":1})");
  EXPECT_EQ(As<command::BadArguments>(R"(["ddoc","new","_design/v"])").kind,
            CommandKind::kDesignDocNew);

  command::DesignDocCall call =
      As<command::DesignDocCall>(R"(["ddoc","_design/v",["lists","rows"],[{},{"q":1}]])");
  EXPECT_EQ(call.id, "_design/v");
  EXPECT_THAT(call.path, ElementsAre("lists", "rows"));
  EXPECT_EQ(call.section, DesignSection::kLists);
  EXPECT_EQ(call.args, R"([{},{"q":1}])");
  EXPECT_EQ(As<command::DesignDocCall>(R"(["ddoc","_design/v",["validate_doc_update"]])").args,
            "[]");
  EXPECT_EQ(As<command::DesignDocCall>(R"(["ddoc","_design/v",["nope","x"],[]])").section,
            DesignSection::kUnknown);
  // A path that is not a list of names is empty (the session decides how fatal that is).
  EXPECT_TRUE(As<command::DesignDocCall>(R"(["ddoc","_design/v",[1],[]])").path.empty());
}

TEST(ParseCommandTest, ListSteps) {
  EXPECT_EQ(As<command::ListRow>(R"(["list_row",{"key":"a"}])").row, R"({"key":"a"})");
  As<command::ListEnd>(R"(["list_end"])");
  EXPECT_EQ(As<command::BadArguments>(R"(["list_row"])").kind, CommandKind::kListRow);
}

TEST(ParseCommandTest, WhatIsNotACommand) {
  EXPECT_EQ(As<command::Unknown>(R"(["index_doc",{}])").name, "index_doc");
  EXPECT_THAT(As<command::NotACommand>("hello").reason, HasSubstr("invalid JSON at byte 0"));
  EXPECT_EQ(As<command::NotACommand>(R"(["add_lib",{}] trailing)").line,
            R"(["add_lib",{}] trailing)");
  // Said as what it is, not as a line that is no array (a probe found that misleading).
  EXPECT_EQ(As<command::NotACommand>(R"(["map_doc",{"_id":"a"}] junk)").reason,
            "text after the command at byte 23: a line holds one JSON array and nothing else");
  EXPECT_THAT(As<command::NotACommand>(R"({"not":"an array"})").reason,
              HasSubstr("expected a command"));
  EXPECT_THAT(As<command::NotACommand>("[]").reason, HasSubstr("expected a command"));
  // A map_doc cut inside its document but ending in ']' is still the hot path's: the worker's
  // parser refuses the bytes. Cut elsewhere, it is no command.
  EXPECT_EQ(As<command::MapDoc>(R"(["map_doc",{"_id":"a","tags":[1,2])").doc,
            R"({"_id":"a","tags":[1,2)");
  As<command::NotACommand>(R"(["map_doc",{"_id":"a")");
}

// Lines of every command, and broken versions of them: cut at every byte, and with a bad
// escape, a stray byte or bracket, trailing text, a byte that is not UTF-8, a number too big
// for a double, spliced in at every byte.
std::vector<std::string> Corpus() {
  const std::vector<std::string> lines = {
      R"(["reduce",["m.sum","m.count|1"],[[["a","d1"],1],[["b","d2"],2.5e3]]])",
      R"(["rereduce",["m.sum"],[1,-2,{"x":[true,false,null]}],"ctx"])",
      R"([ "reduce" , [ "m.f" ] , [ [ [ "k\u00e9\n" , "id" ] , "v\"" ] ] ])",
      R"(["reduce",["m.f"],{"not":"an array"}])",
      R"(["reduce",[1],[[["a","d1"],1]]])",
      R"(["ddoc","_design/v",["shows","s"],[{"a":1},{"q":"x"}]])",
      R"(["ddoc","new","_design/v",{"_id":"_design/v","shows":{"s":"m.f"}}])",
      R"(["list_row",{"key":"a","value":[1,2]}])",
      R"(["add_lib",{"x":"y"}])",
      R"(["add_fun","m.f|2"])",
      R"([ "map_doc", {"_id":"a"}])",
      R"(["list_end"])",
  };
  const std::vector<std::string> splices = {"\\q", "\"", ",", "]", "}", "[", "x", " ",
                                            "\xff", "1e400", "-", ":", "\\u12"};
  std::vector<std::string> corpus;
  for (const std::string& line : lines) {
    corpus.push_back(line);
    for (size_t at = 0; at < line.size(); ++at) {
      corpus.push_back(line.substr(0, at));
      for (const std::string& splice : splices) {
        corpus.push_back(absl::StrCat(line.substr(0, at), splice, line.substr(at)));
      }
    }
    for (const std::string& splice : splices) corpus.push_back(line + splice);
  }
  return corpus;
}

// What ParseCommand said of a line before it found a line's elements in the walk that checks
// it: rapidjson's check of the first value, then a split of the array. The reason for a line
// that is no command, or the line's elements.
std::variant<std::string, std::vector<std::string_view>> CheckThenSplit(std::string_view line) {
  line = TrimJsonText(line);
  rapidjson::MemoryStream stream(line.data(), line.size());
  rapidjson::BaseReaderHandler<> ignore;
  rapidjson::Reader reader;
  rapidjson::ParseResult result = reader.Parse<rapidjson::kParseStopWhenDoneFlag>(stream, ignore);
  size_t end = stream.Tell();
  if (result.Code() == rapidjson::kParseErrorNumberTooBig) {
    // Numbers past a double's range are JSON too (large_numbers.h): checked with them quoted.
    const QuotedNumbers quoted = QuoteLargeNumbers(line);
    rapidjson::MemoryStream again(quoted.text.data(), quoted.text.size());
    result = reader.Parse<rapidjson::kParseStopWhenDoneFlag>(again, ignore);
    end = again.Tell();
  }
  if (result.IsError()) {
    return absl::StrCat("invalid JSON at byte ", result.Offset(), ": ",
                        rapidjson::GetParseError_En(result.Code()));
  }
  if (line.starts_with('[') && end < line.size()) {
    return absl::StrCat("text after the command at byte ", end,
                        ": a line holds one JSON array and nothing else");
  }
  absl::StatusOr<std::vector<std::string_view>> elements = SplitJsonArray(line);
  if (!elements.ok() || elements->empty() || !elements->front().starts_with('"')) {
    return std::string("expected a command: a JSON array starting with a string");
  }
  return *std::move(elements);
}

// The raw slice a command carries, and which element of the line it must be.
std::optional<std::pair<std::string_view, size_t>> Slice(const Command& command) {
  if (const auto* c = std::get_if<command::MapDoc>(&command)) return {{c->doc, 1}};
  if (const auto* c = std::get_if<command::Reduce>(&command)) return {{c->kvs, 2}};
  if (const auto* c = std::get_if<command::DesignDocNew>(&command)) return {{c->doc, 3}};
  if (const auto* c = std::get_if<command::ListRow>(&command)) return {{c->row, 1}};
  return std::nullopt;
}

TEST(ParseCommandTest, OneWalkReadsEveryLineAsTheCheckThenTheSplitDid) {
  size_t broken = 0;
  for (const std::string& line : Corpus()) {
    if (PeekCommand(line) == CommandKind::kReset) continue;  // read as before, by its own rule
    const std::string_view trimmed = TrimJsonText(line);
    if (trimmed.starts_with(R"(["map_doc",)") && trimmed.ends_with(']')) continue;  // unread
    const Command command = ParseCommand(line);
    auto before = CheckThenSplit(line);
    if (const auto* reason = std::get_if<std::string>(&before)) {
      ++broken;
      ASSERT_TRUE(std::holds_alternative<command::NotACommand>(command)) << line;
      EXPECT_EQ(std::get<command::NotACommand>(command).reason, *reason) << line;
      continue;
    }
    const auto& elements = std::get<std::vector<std::string_view>>(before);
    ASSERT_FALSE(std::holds_alternative<command::NotACommand>(command))
        << line << ": " << std::get<command::NotACommand>(command).reason;
    if (auto slice = Slice(command)) {
      ASSERT_LT(slice->second, elements.size()) << line;
      EXPECT_EQ(slice->first, elements[slice->second]) << line;
    }
  }
  EXPECT_GT(broken, 1000u);  // the corpus does break lines
}

TEST(ParseCommandTest, LeavesAReducesValuesToTheWorker) {
  const std::string line = R"(["rereduce",["m.sum","m.count|1"],[1, 2,3],"ctx"] )";
  command::Reduce reduce = As<command::Reduce>(line, ReduceValues::kLeftToTheWorker);
  EXPECT_TRUE(reduce.rereduce);
  EXPECT_THAT(reduce.functions, ElementsAre("m.sum", "m.count|1"));
  EXPECT_TRUE(reduce.values_unchecked);
  EXPECT_EQ(reduce.kvs, R"([1, 2,3],"ctx"])");
  EXPECT_EQ(reduce.values_offset, line.find("[1"));
  EXPECT_EQ(reduce.names_bytes, 5u + 9u);
  EXPECT_EQ(reduce.line_bytes, line.size() - 1);
  // The values are not read: broken ones are the worker's to find.
  EXPECT_EQ(As<command::Reduce>(R"(["reduce",["m.f"],[[["a" "d1"],1]])",
                                ReduceValues::kLeftToTheWorker)
                .kvs,
            R"([[["a" "d1"],1]])");
  // A head that is not a reduce's is read whole, as ever.
  EXPECT_THAT(As<command::NotACommand>(R"(["reduce",[1],[}])", ReduceValues::kLeftToTheWorker)
                  .reason,
              HasSubstr("invalid JSON at byte 15"));
  EXPECT_EQ(As<command::BadArguments>(R"(["reduce",[1],[]])", ReduceValues::kLeftToTheWorker)
                .kind,
            CommandKind::kReduce);
  // A reduce of no functions runs no worker, so nobody else would check its values: the line
  // is read whole, and a broken one is no command.
  EXPECT_FALSE(As<command::Reduce>(R"(["reduce",[],[[[1,"a"],2]]])",
                                   ReduceValues::kLeftToTheWorker)
                   .values_unchecked);
  EXPECT_THAT(As<command::NotACommand>(R"(["rereduce",[],[1 2]])", ReduceValues::kLeftToTheWorker)
                  .reason,
              HasSubstr("invalid JSON"));
  EXPECT_FALSE(As<command::Reduce>(R"(["reduce",["m.f"],1])", ReduceValues::kLeftToTheWorker)
                   .values_unchecked);
  EXPECT_FALSE(
      As<command::Reduce>(R"(["rereduce",["m.f"],[1]])", ReduceValues::kChecked).values_unchecked);
}

// Security review: rapidjson refuses a number past a double's range (CouchDB stores 401-digit
// integers), so a filter or validate line holding one was no command: a fatal error that ended
// the session, every time CouchDB sent that document. Such lines are commands now, their
// elements slices of the line as written; what is not JSON around them still is not.
TEST(ParseCommandTest, NumbersPastADoubleAreJson) {
  const std::string huge = "1" + std::string(400, '0');
  const std::string doc = R"({"_id":"b","s":"a\"b","v":)" + huge + R"(,"w":[-)" + huge + "e5]}";
  const std::string args = "[[" + doc + R"(],{"query":{}}])";
  // The command's parts are views into its line, which must outlive them.
  const std::string filter_line = R"(["ddoc","_design/x",["filters","f"],)" + args + "]";
  command::DesignDocCall filter = As<command::DesignDocCall>(filter_line);
  EXPECT_THAT(filter.path, ElementsAre("filters", "f"));
  EXPECT_EQ(filter.args, args);
  // Not the hot path's spelling, so read as JSON: the document's own bytes.
  EXPECT_EQ(As<command::MapDoc>(R"([ "map_doc", )" + doc + " ]").doc, doc);
  EXPECT_EQ(As<command::MapDoc>(R"(["map_doc",)" + doc + "]").doc, doc);
  // A reduce whose values are left to the worker, and one read whole.
  const std::string reduce_line = R"(["reduce",["m.f"],[[["a","d1"],)" + huge + "]]]";
  EXPECT_EQ(As<command::Reduce>(reduce_line, ReduceValues::kChecked).kvs,
            R"([[["a","d1"],)" + huge + "]]");
  EXPECT_EQ(As<command::Reduce>(reduce_line, ReduceValues::kLeftToTheWorker).kvs,
            R"([[["a","d1"],)" + huge + "]]]");
  // A large number where a name must be, and a broken line after one: the same errors, at
  // the same bytes, as a line with a small number in its place.
  const std::string small(huge.size(), '2');
  for (const std::string& broken : {R"(["ddoc","_design/x",["filters","f"],[[{"v":1,)" + huge +
                                        ":2}],{}]])",
                                    R"(["ddoc","_design/x",["filters","f"],[[{"v":)" + huge +
                                        "}] {}]]"}) {
    std::string same_shape = broken;
    same_shape.replace(broken.find(huge), huge.size(), small);
    EXPECT_EQ(As<command::NotACommand>(broken).reason,
              As<command::NotACommand>(same_shape).reason);
  }
  EXPECT_THAT(As<command::NotACommand>("[ \"map_doc\", " + huge + "x]").reason,
              HasSubstr("invalid JSON at byte " + std::to_string(13 + huge.size())));
}

TEST(QuoteLargeNumbersTest, QuotesOnlyWhatRapidjsonMightRefuseInAValuesPlace) {
  const std::string huge = "1" + std::string(400, '0');
  const std::string json = R"({"a":[1,1e300,-)" + huge + R"(,"1e999",2.5e-999,)" + huge +
                           R"(.5e1],"b":1E+308,"c":{"d":)" + huge + "}}";
  const QuotedNumbers quoted = QuoteLargeNumbers(json);
  ASSERT_EQ(quoted.text.size(), json.size());
  ASSERT_EQ(quoted.spans.size(), 5u);
  std::string expected = json;
  for (const NumberSpan& span : quoted.spans) {
    const std::string_view token = std::string_view(json).substr(span.begin, span.end - span.begin);
    EXPECT_TRUE(token == "1e300" || token == "-" + huge || token == huge + ".5e1" ||
                token == "1E+308" || token == huge)
        << token;
    expected[span.begin] = '"';
    expected[span.end - 1] = '"';
  }
  EXPECT_EQ(quoted.text, expected);
  EXPECT_EQ(quoted.spans[1].begin, json.find("-1"));
  // An object's key place, and what is not a number, stay as they are.
  for (const std::string& left :
       {"{" + huge + ":1}", "[" + huge + ".]", std::string("[-]"), "[\"" + huge}) {
    EXPECT_EQ(QuoteLargeNumbers(left).text, left);
  }
}

// Where the first JSON value of `text` ends, as the worker's parser finds it; nullopt when it
// is not JSON.
std::optional<size_t> EndOfValue(std::string_view text) {
  rapidjson::MemoryStream stream(text.data(), text.size());
  rapidjson::BaseReaderHandler<> ignore;
  rapidjson::Reader reader;
  if (reader.Parse<rapidjson::kParseStopWhenDoneFlag>(stream, ignore).IsError()) {
    return std::nullopt;
  }
  return stream.Tell();
}

// The worker's verdict on a line whose values it was left (reduce_task.cc), which must be the
// session's on the whole line, to the byte.
TEST(LineRestProblemTest, JudgesTheRestOfALineAsTheWholeLineIsJudged) {
  size_t judged = 0, broken = 0;
  for (const std::string& line : Corpus()) {
    const Command head = ParseCommand(line, ReduceValues::kLeftToTheWorker);
    const auto* reduce = std::get_if<command::Reduce>(&head);
    if (reduce == nullptr || !reduce->values_unchecked) {
      // Read whole: the same command as a checked read.
      EXPECT_EQ(KindOf(head), KindOf(ParseCommand(line))) << line;
      continue;
    }
    ++judged;
    const Command whole = ParseCommand(line);
    std::optional<std::string> expected;
    if (const auto* not_a_command = std::get_if<command::NotACommand>(&whole)) {
      expected = not_a_command->reason;
      ++broken;
    }
    // The values did not parse: the rest is judged from them on.
    std::optional<size_t> end = EndOfValue(reduce->kvs);
    if (!end.has_value()) {
      EXPECT_EQ(LineRestProblem(reduce->kvs, reduce->values_offset, /*after_comma=*/true),
                expected)
          << line;
      continue;
    }
    // They did: what follows them is.
    EXPECT_EQ(LineRestProblem(reduce->kvs.substr(*end), reduce->values_offset + *end,
                              /*after_comma=*/false),
              expected)
        << line;
    // And either way gives the same verdict.
    EXPECT_EQ(LineRestProblem(reduce->kvs, reduce->values_offset, /*after_comma=*/true), expected)
        << line;
    if (!expected.has_value()) {
      EXPECT_EQ(reduce->kvs.substr(0, *end), std::get<command::Reduce>(whole).kvs) << line;
    }
  }
  EXPECT_GT(judged, 500u);
  EXPECT_GT(broken, 200u);
}


// A line nested a million deep (any client of the Session stream can send one) is read without
// recursing a million times on the reading thread's stack, and a broken one is refused.
TEST(ParseCommandTest, ALineNestedAMillionDeepIsReadWithoutRecursion) {
  constexpr size_t kDepth = 1'000'000;
  for (const std::string& head : {std::string(R"(["map_doc",)"), std::string(R"(["reduce",["f"],)"),
                                  std::string(R"(["ddoc","_design/x",["validate_doc_update"],)")}) {
    std::string deep = head + std::string(kDepth, '[') + std::string(kDepth, ']') + "]";
    std::string broken = head + std::string(kDepth, '[') + "x";
    // Well formed: whatever it is taken for, it is read without recursion (the worker's own
    // parse then refuses values nested too deep, as a bad_input error).
    (void)ParseCommand(deep);
    (void)ParseCommand(deep, ReduceValues::kLeftToTheWorker);
    const Command command = ParseCommand(broken);
    ASSERT_EQ(KindOf(command), CommandKind::kNotACommand) << head;
    EXPECT_THAT(std::get<command::NotACommand>(command).reason, HasSubstr("nested deeper than"))
        << head;
  }
}

}  // namespace
}  // namespace cnp::couchdb
