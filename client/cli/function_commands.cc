#include "client/cli/function_commands.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/cli/arguments.h"
#include "client/cli/json_input.h"
#include "client/lib/cnp_client.h"
#include "common/call_limit.h"
#include "common/couchdb/json.h"
#include "common/default_target.h"
#include "common/printable_text.h"
#include "common/utf8_text.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cnp::cli {
namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr int kUsageError = 2;
constexpr int kCallFailed = 1;

const std::string kCommonOptions =
    std::string(kConnectionHelp) +
    "  --timeout=DUR     give up after this long (default 60s; e.g. 500ms, 2m)\n";

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "cnp: %s\n", std::string(status.message()).c_str());
  return absl::IsInvalidArgument(status) ? kUsageError : kCallFailed;
}

int Usage(const char* text, bool asked) {
  std::fprintf(asked ? stdout : stderr, "%s\nOptions:\n%s", text, kCommonOptions.c_str());
  return asked ? 0 : kUsageError;
}

// A JSON value's first 40 bytes, for a message.
std::string Start(absl::string_view json) {
  return absl::StrCat(json.substr(0, 40), json.size() > 40 ? "..." : "");
}

// The positional arguments are not what `usage` asks for: says what is wrong with them (an
// argument too many, by name, or how many are missing) before the usage.
int WrongArguments(const char* usage, const Arguments& args, size_t at_least, size_t at_most) {
  const size_t given = args.positional.size();
  if (given > at_most) {
    std::fprintf(stderr, "cnp: unexpected argument \"%s\" (at most %zu)\n",
                 args.positional[at_most].c_str(), at_most);
  } else {
    std::fprintf(stderr, "cnp: %zu argument%s missing\n", at_least - given,
                 at_least - given == 1 ? "" : "s");
  }
  return Usage(usage, false);
}

struct Connection {
  std::unique_ptr<client::Client> client;
  absl::Duration timeout;  // --timeout, for messages
  absl::Time deadline;     // --timeout from when the command began connecting

  // What a call may take: what is left of --timeout after the wait for the server.
  absl::Duration Remaining() const {
    return std::max(deadline - absl::Now(), absl::Milliseconds(1));
  }

  // A call's failure, with gRPC's bare "Deadline Exceeded" said as the timeout that ran out.
  // The server may answer first, with its own words for the deadline it was given: the
  // timeout is named then too.
  int Fail(const absl::Status& status) const {
    if (absl::IsDeadlineExceeded(status) && status.message() == "Deadline Exceeded") {
      return ::cnp::cli::Fail(absl::DeadlineExceededError(absl::StrCat(
          "no answer within ", absl::FormatDuration(timeout),
          " (--timeout; the default is 60s): raise it, or find out why the function is slow "
          "or the server busy (a call's time includes its wait for a free worker; "
          "cnp-server's --call-timeout also bounds each call)")));
    }
    if (absl::IsDeadlineExceeded(status)) {
      return ::cnp::cli::Fail(absl::DeadlineExceededError(absl::StrCat(
          status.message(), "; a call may take ", absl::FormatDuration(timeout),
          " (--timeout; the default is 60s) or cnp-server's --call-timeout, whichever is "
          "shorter, counted from the call's arrival, its wait for a free worker included: "
          "raise it, or find out why the function is slow or the server busy (more workers)")));
    }
    return ::cnp::cli::Fail(status);
  }
};

absl::StatusOr<absl::Duration> CallTimeout(const Arguments& args) {
  absl::Duration timeout = absl::Seconds(60);
  if (args.Has("timeout") &&
      (!absl::ParseDuration(args.Get("timeout"), &timeout) || timeout <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--timeout=", args.Get("timeout"), " is not a positive duration like 500ms or 2m"));
  }
  return timeout;
}

absl::StatusOr<Connection> Connect(const Arguments& args) {
  absl::StatusOr<absl::Duration> timeout = CallTimeout(args);
  if (!timeout.ok()) return timeout.status();
  // --timeout bounds the connection and the call together, the wait for the server included
  // (the call had the whole of it again after up to 5 s of connecting).
  const absl::Time deadline = absl::Now() + *timeout;
  auto client = client::Client::Connect(args.Get("target", DefaultTarget()),
                                        ConnectionSecurity(args),
                                        std::min(*timeout, absl::Seconds(5)));
  if (!client.ok()) return client.status();
  return Connection{std::move(*client), *timeout, deadline};
}

// The arguments a command can check before it reads its input: a bad --timeout must not wait
// for a whole stdin first (found by a review). protobuf refuses a request whose string field is
// not UTF-8 with a log line of its own ("[libprotobuf ERROR ...] String field
// 'cnp.v1.ResolveRequest.functions' contains invalid UTF-8") that does not say which argument.
// `lists`: the names are comma-separated lists (map, reduce); else one name each.
absl::Status CheckArguments(const Arguments& args, size_t count, bool lists) {
  if (absl::StatusOr<absl::Duration> timeout = CallTimeout(args); !timeout.ok()) {
    return timeout.status();
  }
  for (size_t i = 0; i < count && i < args.positional.size(); ++i) {
    const std::string& arg = args.positional[i];
    if (std::optional<Utf8Error> bad = FindInvalidUtf8(arg)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the function name \"%s\" (argument %d) is not UTF-8 (byte 0x%02x at byte %d)",
          EscapeInvalidUtf8(arg), i + 1, static_cast<unsigned char>(arg[bad->offset]),
          bad->offset + 1));
    }
    if (!lists && (arg.empty() || absl::StrContains(arg, ','))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "argument %d, \"%s\", is not a function name: give one module.function per argument",
          i + 1, Printable(arg)));
    }
    // Dropped, an empty name ran one function fewer than asked for without a word.
    for (absl::string_view name : absl::StrSplit(arg, ',')) {
      if (name.empty()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "argument %d, \"%s\", holds an empty function name: name each function as "
            "module.function, separated by single commas",
            i + 1, Printable(arg)));
      }
      if (name == "_sum" || name == "_count" || name == "_stats" ||
          name == "_approx_count_distinct") {
        return absl::InvalidArgumentError(absl::StrCat(
            name, " is one of CouchDB's built-in reduces, which CouchDB runs itself; cnp runs "
            "named Python functions (module.function)"));
      }
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> Functions(const std::string& list) {
  return absl::StrSplit(list, ',', absl::SkipEmpty());
}

// All of `text`: Writer::String(const char*) would stop at a NUL, which a document id or a
// message may hold.
void WriteString(JsonWriter& w, const std::string& text) {
  w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
}

void WriteError(JsonWriter& w, const v1::FunctionError& e) {
  w.StartObject();
  w.Key("function"); WriteString(w, e.function());
  if (!e.doc_id().empty()) { w.Key("doc_id"); WriteString(w, e.doc_id()); }
  w.Key("type"); WriteString(w, e.type());
  w.Key("message"); WriteString(w, e.message());
  w.EndObject();
}

template <class Errors, class Logs>
void WriteErrorsAndLogs(JsonWriter& w, const Errors& errors, const Logs& logs) {
  if (!errors.empty()) {
    w.Key("errors");
    w.StartArray();
    for (const auto& e : errors) WriteError(w, e);
    w.EndArray();
  }
  if (!logs.empty()) {
    w.Key("logs");
    w.StartArray();
    for (const auto& l : logs) WriteString(w, l);
    w.EndArray();
  }
}

// How many bytes of documents cnp map sends in one call; a document larger than this goes alone.
constexpr size_t kDocumentBytesPerCall = 8 << 20;

void PrintLine(const rapidjson::StringBuffer& buffer) {
  std::fwrite(buffer.GetString(), 1, buffer.GetSize(), stdout);
  std::fputc('\n', stdout);
}

// The _id of a raw document, for labelling its output; empty when it has none.
std::string DocId(const std::string& doc) {
  // Read with every number kept (a 401-digit integer would make rapidjson refuse the whole
  // document, and its label); an _id that is not a string, a kept number included, is none.
  absl::StatusOr<rapidjson::Document> d = couchdb::ParseJsonExact(doc);
  return d.ok() ? std::string(couchdb::StringMember(*d, "_id")) : "";
}

}  // namespace

int RunMapCommand(int argc, char** argv) {
  const char* usage =
      "usage: cnp map FUNCTION[,FUNCTION...] [FILE|-]\n\n"
      "Runs map functions (module.function or module.function|version) on documents read from\n"
      "FILE or stdin: one JSON object, a JSON array of objects, or one object per line.\n"
      "Prints one JSON line per document: {\"id\", \"rows\": [[[key,value],...] per function],\n"
      "\"errors\", \"logs\"}. A function that raises on a document contributes [] and an entry\n"
      "in \"errors\". No documents (empty input, or []) print nothing but a warning on stderr,\n"
      "and still exit 0 once the functions imported. The documents go to the server in calls\n"
      "of up to 8 MiB each (smaller if the server says its limit is lower), each call's lines\n"
      "printed before the next is sent, so any input fits the server's --max-call-bytes; the\n"
      "--timeout bounds them all. Exit status: 0 done, 3 a function raised on a document\n"
      "(every line printed), 1 a call failed (the lines printed before it stand), 2 bad usage\n"
      "or input.\n\n"
      "Names: a function with @version(N) is named module.function|N, one without @version\n"
      "module.function, as a design document in CouchDB must name them (CouchDB's add_fun\n"
      "refuses any other); `cnp resolve module.function` prints the name to use. (The YAML of\n"
      "cnp upload names them without |N: the upload writes the version it finds.) A function\n"
      "added to a module, or a bumped @version, is picked up from disk without restarting the\n"
      "server.\n";
  auto args = ParseArguments(argc, argv, WithConnectionOptions({"timeout"}),
                             WithConnectionFlags({"help"}));
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) return Usage(usage, true);
  if (args->positional.empty() || args->positional.size() > 2) {
    return WrongArguments(usage, *args, 1, 2);
  }
  if (absl::Status s = CheckArguments(*args, 1, /*lists=*/true); !s.ok()) return Fail(s);
  const std::string source = args->positional.size() == 2 ? args->positional[1] : "-";
  auto input = ReadInput(source);
  if (!input.ok()) return Fail(input.status());
  auto docs = SplitJsonValues(*input, /*spread_array=*/true);
  if (!docs.ok()) return Fail(docs.status());
  // An empty batch is legal (the functions are still imported and checked), but in a pipeline
  // it is more likely a step upstream that produced nothing, which went unnoticed (found by a
  // review).
  if (docs->empty()) {
    std::fprintf(stderr, "cnp: warning: no documents read from %s\n",
                 source == "-" ? "stdin" : source.c_str());
  }
  for (size_t i = 0; i < docs->size(); ++i) {
    const std::string& doc = (*docs)[i];
    if (doc.front() != '{') {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("document ", i, " is not a JSON object: ", Start(doc))));
    }
  }
  auto connection = Connect(*args);
  if (!connection.ok()) return Fail(connection.status());
  const std::vector<std::string> functions = Functions(args->positional[0]);
  int errors = 0;
  size_t next = 0;  // the first document not sent yet
  // The documents go in calls of kDocumentBytesPerCall at most, each printed before the next is
  // sent: a file past the server's --max-call-bytes (64 MiB) was refused whole. A server that
  // refuses a call for its size (a lower --max-call-bytes or --max-docs-per-call) is sent
  // smaller ones.
  size_t bytes_per_call = kDocumentBytesPerCall;
  size_t docs_per_call = docs->size();
  do {
    const size_t first = next;
    std::vector<std::string> batch;
    size_t bytes = 0;
    while (next < docs->size() && batch.size() < docs_per_call &&
           (batch.empty() || bytes + (*docs)[next].size() <= bytes_per_call)) {
      bytes += (*docs)[next].size();
      batch.push_back((*docs)[next++]);
    }
    auto response = connection->client->Map(functions, batch, connection->Remaining());
    const std::optional<CallLimit> limit =
        response.ok() ? std::nullopt : CallLimitOf(response.status());
    if (limit.has_value() && limit->kind != CallLimit::Kind::kFunctions && batch.size() > 1) {
      docs_per_call = limit->kind == CallLimit::Kind::kDocuments && limit->limit > 0
                          ? std::min<size_t>(limit->limit, batch.size() - 1)
                          : batch.size() / 2;
      bytes_per_call = std::max<size_t>(bytes / 2, 1);
      next = first;
      continue;
    }
    if (!response.ok()) {
      std::fflush(stdout);
      if (first == 0) return connection->Fail(response.status());
      return connection->Fail(absl::Status(
          response.status().code(),
          absl::StrCat(response.status().message(), " (documents ", first + 1, " to ",
                       docs->size(), " of ", docs->size(),
                       " were not mapped; those before were, above)")));
    }
    for (int i = 0; i < response->results_size(); ++i) {
      const v1::MapResult& result = response->results(i);
      rapidjson::StringBuffer buffer;
      JsonWriter w(buffer);
      w.StartObject();
      w.Key("id");
      WriteString(w, DocId(batch[i]));
      w.Key("rows");
      w.RawValue(result.rows().data(), result.rows().size(), rapidjson::kArrayType);
      WriteErrorsAndLogs(w, result.errors(), result.logs());
      w.EndObject();
      PrintLine(buffer);
      errors += result.errors_size();
    }
  } while (next < docs->size());
  std::fflush(stdout);
  if (errors > 0) {
    std::fprintf(stderr, "cnp: %d function error(s); see \"errors\"\n", errors);
    return 3;
  }
  return 0;
}

int RunReduceCommand(int argc, char** argv) {
  const char* usage =
      "usage: cnp reduce FUNCTION[,FUNCTION...] [--rereduce] [FILE|-]\n\n"
      "Runs reduce functions on input read from FILE or stdin: for reduce, a JSON array of\n"
      "[[key, doc_id], value] pairs (what CouchDB passes); with --rereduce, a JSON array of\n"
      "values. Prints {\"results\": [one per function], \"errors\", \"logs\"}; a function\n"
      "that raised has null for its result (as CouchDB shows it) and an entry in \"errors\".\n"
      "Exit status: 0 done, 3 a function raised, 1 the call failed, 2 bad usage or input.\n";
  auto args = ParseArguments(argc, argv, WithConnectionOptions({"timeout"}),
                             WithConnectionFlags({"help", "rereduce"}));
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) return Usage(usage, true);
  if (args->positional.empty() || args->positional.size() > 2) {
    return WrongArguments(usage, *args, 1, 2);
  }
  if (absl::Status s = CheckArguments(*args, 1, /*lists=*/true); !s.ok()) return Fail(s);
  auto input = ReadInput(args->positional.size() == 2 ? args->positional[1] : "-");
  if (!input.ok()) return Fail(input.status());
  auto kvs = SingleJsonValue(*input);
  if (!kvs.ok()) return Fail(kvs.status());
  auto connection = Connect(*args);
  if (!connection.ok()) return Fail(connection.status());
  auto response = connection->client->Reduce(Functions(args->positional[0]), *kvs,
                                             args->Has("rereduce"), connection->Remaining());
  if (!response.ok()) return connection->Fail(response.status());
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("results");
  w.StartArray();
  for (const std::string& r : response->results()) w.RawValue(r.data(), r.size(), rapidjson::kNullType);
  w.EndArray();
  WriteErrorsAndLogs(w, response->errors(), response->logs());
  w.EndObject();
  PrintLine(buffer);
  std::fflush(stdout);
  // A function that raised has null for its result, as CouchDB's view shows it: said on stderr
  // and in the exit status (as cnp validate's), so that a script does not take the null for
  // the answer.
  if (response->errors_size() > 0) {
    std::fprintf(stderr, "cnp: %d function error(s); see \"errors\"\n", response->errors_size());
    return 3;
  }
  return 0;
}

int RunValidateCommand(int argc, char** argv) {
  const char* usage =
      "usage: cnp validate FUNCTION NEW_DOC_FILE [--old=FILE] [--user=JSON] [--security=JSON]\n\n"
      "Runs a validate_doc_update function as CouchDB would: f(new, old, userCtx, secObj).\n"
      "--user defaults to {\"db\":\"db\",\"name\":null,\"roles\":[]}, --security to {}; each\n"
      "must be a JSON object, as CouchDB's userCtx and secObj always are.\n"
      "Prints {\"outcome\": \"ok\"|\"forbidden\"|\"unauthorized\"|\"error\", \"message\", ...}.\n"
      "Exit status: 0 accepted, 3 rejected or raised, 1 the call failed, 2 bad usage.\n\n"
      "FUNCTION is module.function|N for a function with @version(N) and module.function for\n"
      "one without, as in the design document; `cnp resolve module.function` prints it.\n";
  auto args =
      ParseArguments(argc, argv, WithConnectionOptions({"timeout", "old", "user", "security"}),
                     WithConnectionFlags({"help"}));
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) return Usage(usage, true);
  if (args->positional.size() != 2) return WrongArguments(usage, *args, 2, 2);
  if (absl::Status s = CheckArguments(*args, 1, /*lists=*/false); !s.ok()) return Fail(s);
  v1::ValidateRequest request;
  request.set_function(args->positional[0]);
  auto new_doc = ReadInput(args->positional[1]);
  if (!new_doc.ok()) return Fail(new_doc.status());
  auto new_json = SingleJsonValue(*new_doc);
  if (!new_json.ok()) return Fail(new_json.status());
  // CouchDB passes documents, and null for no old one: a function should never see other
  // values here (cnp map refuses them too).
  if (new_json->front() != '{') {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("the new document is not a JSON object: ", Start(*new_json))));
  }
  request.set_new_doc(*new_json);
  if (args->Has("old")) {
    auto old_doc = ReadInput(args->Get("old"));
    if (!old_doc.ok()) return Fail(old_doc.status());
    auto old_json = SingleJsonValue(*old_doc);
    if (!old_json.ok()) {
      // Said apart from the new document's: with both read from stdin, --old finds it empty.
      return Fail(absl::Status(old_json.status().code(),
                               absl::StrCat("--old: ", old_json.status().message(),
                                            args->Get("old") == "-" &&
                                                    args->positional[1] == "-"
                                                ? " (stdin was read for the new document)"
                                                : "")));
    }
    if (old_json->front() != '{' && *old_json != "null") {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--old is neither a JSON object nor null: ", Start(*old_json))));
    }
    request.set_old_doc(*old_json);
  }
  // CouchDB always passes objects here (userCtx, the _security object): another value only
  // made the function fail with a TypeError of its own, and a JSON error did not say which
  // option held it (found by a review).
  auto object_option = [&](const char* name,
                           const char* default_json) -> absl::StatusOr<std::string> {
    auto json = SingleJsonValue(args->Get(name, default_json));
    if (!json.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", json.status().message()));
    }
    if (json->front() != '{') {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", name, " is not a JSON object: ", Start(*json), " (CouchDB always passes ",
          std::string_view(name) == "user" ? "the user's context, e.g. "
                                             R"({"db":"db","name":"bob","roles":["editor"]})"
                                           : "the database's _security object, e.g. {}",
          ")"));
    }
    return json;
  };
  auto user = object_option("user", R"({"db":"db","name":null,"roles":[]})");
  if (!user.ok()) return Fail(user.status());
  request.set_user_ctx(*user);
  auto security = object_option("security", "{}");
  if (!security.ok()) return Fail(security.status());
  request.set_sec_obj(*security);

  auto connection = Connect(*args);
  if (!connection.ok()) return Fail(connection.status());
  auto response = connection->client->Validate(request, connection->Remaining());
  if (!response.ok()) return connection->Fail(response.status());
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("outcome");
  std::string outcome = v1::ValidateResponse::Outcome_Name(response->outcome());
  for (char& c : outcome) c = static_cast<char>(std::tolower(c));
  WriteString(w, outcome);
  if (!response->message().empty()) {
    w.Key("message");
    WriteString(w, response->message());
  }
  if (response->has_error()) {
    w.Key("error");
    WriteError(w, response->error());
  }
  if (!response->logs().empty()) {
    w.Key("logs");
    w.StartArray();
    for (const auto& l : response->logs()) WriteString(w, l);
    w.EndArray();
  }
  w.EndObject();
  PrintLine(buffer);
  return response->outcome() == v1::ValidateResponse::OK ? 0 : 3;
}

int RunResolveCommand(int argc, char** argv) {
  const char* usage =
      "usage: cnp resolve FUNCTION...\n\n"
      "Imports functions in a worker, exactly where they would run, and prints each one's\n"
      "versioned name (module.function|version) or why it cannot be used.\n"
      "Exit status: 0 all resolved, 3 some did not, 1 the call failed, 2 bad usage.\n";
  auto args = ParseArguments(argc, argv, WithConnectionOptions({"timeout"}),
                             WithConnectionFlags({"help"}));
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) return Usage(usage, true);
  if (args->positional.empty()) return WrongArguments(usage, *args, 1, SIZE_MAX);
  if (absl::Status s = CheckArguments(*args, args->positional.size(), /*lists=*/false);
      !s.ok()) {
    return Fail(s);
  }
  auto connection = Connect(*args);
  if (!connection.ok()) return Fail(connection.status());
  auto response = connection->client->Resolve(args->positional, connection->Remaining());
  if (!response.ok()) return connection->Fail(response.status());
  int failed = 0;
  for (const v1::ResolvedFunction& f : response->functions()) {
    if (f.error().empty()) {
      std::printf("%s\t%s\n", f.function().c_str(), f.versioned_name().c_str());
    } else {
      ++failed;
      std::printf("%s\tERROR: %s\n", f.function().c_str(), f.error().c_str());
    }
  }
  return failed == 0 ? 0 : 3;
}

}  // namespace cnp::cli
