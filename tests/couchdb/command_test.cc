// The protocol library: every line read once into a typed command, and the cheap head reading
// cnp-adapter uses agreeing with it.
#include "service/couchdb/command.h"

#include <string>
#include <string_view>
#include <variant>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::couchdb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

template <typename T>
T As(std::string_view line) {
  Command command = ParseCommand(line);
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

TEST(ParseCommandTest, ResetIsAlwaysAReset) {
  EXPECT_EQ(As<command::Reset>(R"(["reset",{"timeout":2500,"reduce_limit":"log"}])")
                .config.timeout,
            absl::Milliseconds(2500));
  EXPECT_EQ(As<command::Reset>(R"(["reset",{"reduce_limit":true}])").config.reduce_limit,
            QueryConfig::ReduceLimit::kOn);
  // Answered already by whoever read it: a broken configuration is the defaults, never an error
  // that would be a second answer.
  EXPECT_FALSE(As<command::Reset>(R"(["reset",{"timeout":)").config.timeout.has_value());
  EXPECT_FALSE(As<command::Reset>(R"(["reset"])").config.timeout.has_value());
}

TEST(ParseCommandTest, AddFunAndAddLib) {
  EXPECT_EQ(As<command::AddFun>(R"(["add_fun","m.f|2"])").function, "m.f|2");
  EXPECT_EQ(As<command::BadArguments>(R"(["add_fun",3])").error_id, "compilation_error");
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
  EXPECT_THAT(As<command::BadArguments>(R"(["reduce",[],[]])").message,
              HasSubstr("expects a list of function names"));
  EXPECT_EQ(As<command::BadArguments>(R"(["reduce",["f"]])").kind, CommandKind::kReduce);
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
  EXPECT_THAT(As<command::NotACommand>(R"({"not":"an array"})").reason,
              HasSubstr("expected a command"));
  EXPECT_THAT(As<command::NotACommand>("[]").reason, HasSubstr("expected a command"));
  // A map_doc cut inside its document but ending in ']' is still the hot path's: the worker's
  // parser refuses the bytes. Cut elsewhere, it is no command.
  EXPECT_EQ(As<command::MapDoc>(R"(["map_doc",{"_id":"a","tags":[1,2])").doc,
            R"({"_id":"a","tags":[1,2)");
  As<command::NotACommand>(R"(["map_doc",{"_id":"a")");
}

}  // namespace
}  // namespace cnp::couchdb
