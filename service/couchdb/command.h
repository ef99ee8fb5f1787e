// The commands CouchDB writes to a query server, each line read once into a type, for every
// reader of the protocol: the query session (query_protocol.h) that the server runs for a
// Session stream and a worker runs for a direct session, and cnp-adapter, which forwards lines
// and must only know which ones to answer itself, to remember for a new stream, or not to retry.
//
// Documents, rows, keys and values stay slices of the line (valid while the line is), never
// parsed into a tree: the protocol forwards them untouched, and a map_doc's document is not even
// scanned here (the worker parses it once, into Python).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/call_limit.h"
#include "service/couchdb/query_config.h"

namespace cnp::couchdb {

enum class CommandKind : uint8_t {
  kReset,
  kAddLib,
  kAddFun,
  kMapDoc,
  kReduce,
  kRereduce,
  kDesignDocNew,   // ["ddoc","new",id,doc]
  kDesignDocCall,  // ["ddoc",id,path,args]
  kListRow,
  kListEnd,
  kUnknown,       // a JSON array starting with a name this protocol does not have
  kNotACommand,   // anything else: not JSON, not an array, no name first
};

// The name CouchDB writes ("map_doc", "ddoc"); empty for kUnknown and kNotACommand.
std::string_view CommandName(CommandKind kind);

// Reads only the head of a line: the command's name and, for "ddoc", whether "new" follows.
// Does not check the rest of the line, so it costs the same for a 1 MB document as for none.
// Whitespace a hand-written line may have is allowed. ParseCommand agrees with it on every line
// that is a command; on a broken line it may say kNotACommand where this names the command.
CommandKind PeekCommand(std::string_view line);

// The section of a design document a ddoc call names first: ["filters","by_town"].
enum class DesignSection : uint8_t {
  kValidateDocUpdate,
  kFilters,
  kViews,  // a view used as a _changes filter
  kShows,
  kUpdates,
  kRewrites,
  kLists,
  kUnknown,
};

// The most functions a reduce or rereduce line may name (common/call_limit.h). A line naming
// more is answered ["error","too_many_functions",..] once that many are read, the rest unread.
inline constexpr size_t kMaxReduceFunctions = kMaxFunctionsPerCall;

namespace command {

// Every reset is one, however broken the rest of the line: the reader has answered it already
// (cnp-adapter, a direct session), so it must never be answered again. A configuration that
// is missing or not an object leaves every setting at its default.
struct Reset {
  QueryConfig config;
};
struct AddLib {
  std::string_view lib;  // "{}" when absent
};
struct AddFun {
  std::string function;
};
struct MapDoc {
  std::string_view doc;  // as CouchDB wrote it, unchecked
};
struct Reduce {
  bool rereduce = false;
  std::vector<std::string> functions;  // empty: reduces to nothing, [true,[]]
  // The raw key/value (or values) array. With ReduceValues::kLeftToTheWorker it is the rest of
  // the line from the array's first byte (its closing bracket, and any arguments after the
  // array, included), not checked as JSON: `values_unchecked` is then set, and `values_offset`
  // says where it starts in the (trimmed) line.
  std::string_view kvs;
  bool values_unchecked = false;
  size_t values_offset = 0;
  size_t names_bytes = 0;  // the functions' names, which the overflow rule leaves out
  size_t line_bytes = 0;   // the whole (trimmed) line
};
struct DesignDocNew {
  std::string id;
  std::string_view doc;
};
struct DesignDocCall {
  std::string id;
  // ["filters","by_town"]; empty when missing or not a list of strings (a fatal error, but only
  // once the design document is known to be cached: couchjs checks that first). A path longer
  // than kMaxDesignFunctionPath (design_functions.h) names no function: the line is
  // BadArguments ("not_found"), its path read no further.
  std::vector<std::string> path;
  DesignSection section = DesignSection::kUnknown;  // of path.front()
  std::string_view args;                            // "[]" when absent
};
struct ListRow {
  std::string_view row;
};
struct ListEnd {};
struct Unknown {
  std::string name;
};
// A known command whose arguments are missing or mistyped. CouchDB gets ["error",id,message]
// and the session goes on.
struct BadArguments {
  CommandKind kind;
  std::string error_id;
  std::string message;
};
// Fatal for a session: a line that is not JSON cannot be trusted to be framed right either.
struct NotACommand {
  std::string reason;
  std::string_view line;  // for messages: what was written instead
};

}  // namespace command

using Command =
    std::variant<command::MapDoc, command::Reset, command::AddLib, command::AddFun,
                 command::Reduce, command::DesignDocNew, command::DesignDocCall, command::ListRow,
                 command::ListEnd, command::Unknown, command::BadArguments, command::NotACommand>;

// How much of a reduce or rereduce line ParseCommand checks as JSON.
enum class ReduceValues : uint8_t {
  // The whole line, as every other line: a line that is not JSON is NotACommand.
  kChecked,
  // The line up to the first byte of its values, when that much is a well-formed reduce head
  // (a name, a non-empty list of function names, then an array or object): the values and the
  // rest of the line are left to the worker that builds Python from them, which checks them in
  // that same walk and reports a broken line with ParseCommand's own reason (LineRestProblem).
  // Any other line is read as with kChecked.
  kLeftToTheWorker,
};

// Reads a whole line. A map_doc's document is taken as the bytes between the name and the
// closing bracket, unchecked (the hot path: the worker's JSON parser checks it); every other
// line is checked to be JSON first (a reduce's values: see ReduceValues), in the same walk that
// finds its elements.
Command ParseCommand(std::string_view line, ReduceValues values = ReduceValues::kChecked);

// Where a reduce line's values were left unchecked (ReduceValues::kLeftToTheWorker): the reason
// ParseCommand(line) would give for the line being NotACommand, judged from `rest`, the part of
// the line that starts `offset` bytes into it, right after a well-formed head that ends in a
// comma (`after_comma`: `rest` starts with the values) or in an element (`rest` is what follows
// the values). nullopt when the line is a command. Offsets in the reason are the line's.
std::optional<std::string> LineRestProblem(std::string_view rest, size_t offset,
                                           bool after_comma);

// A map_doc line's document, when what ParseCommand took for it (the text between the name and
// the closing bracket, unchecked) is the document and then more arguments:
// ["map_doc",{doc},"extra"]. couchjs ignores them (its dispatcher spreads a line's arguments
// over the handler's parameters, and map_doc has one), so the document alone is mapped. nullopt
// when `doc_and_rest` is one value, or is not JSON. Scans the text: for after the worker has
// refused it, never on the hot path.
std::optional<std::string_view> DocumentBeforeExtraArguments(std::string_view doc_and_rest);

// What a command of `kind` whose arguments are missing is answered with: `what` names the
// command or the design function ("'map_doc' is missing arguments").
command::BadArguments MissingArguments(CommandKind kind, std::string_view what);

// The kind of a parsed command (a BadArguments' own kind; kNotACommand, kUnknown as they are).
CommandKind KindOf(const Command& command);

}  // namespace cnp::couchdb
