#include "client/upload/upload_command.h"

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <iostream>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/cli/arguments.h"
#include "client/cli/line_stream.h"
#include "client/cli/command_io.h"
#include "client/lib/cnp_client.h"
#include "client/sync/registry_removal.h"
#include "client/cli/event_printer.h"
#include "client/couch/couch_connection.h"
#include "client/upload/call_interrupter.h"
#include "client/upload/local_files.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "common/default_target.h"
#include "common/printable_text.h"
#include "common/utf8_text.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/couch_url.h"
#include "common/couchdb/couchdb_languages.h"
#include "common/couchdb/target_databases.h"

namespace cnp::client {
namespace upload {
namespace {

using ::cnp::cli::PrintEvent;
using ::cnp::cli::PrintOptions;
using ::cnp::cli::PrintSummary;
using ::cnp::cli::UploadTally;

constexpr char kUploadUsage[] = R"(Usage: %s [options] COUCHDB_URL DATABASE FILE.yml [FILE.yml ...]
       %s --register REGISTRY_DB [options] COUCHDB_URL FILE.yml [FILE.yml ...]
       %s --register REGISTRY_DB --remove [--dry-run] [--max-conflict-retries=N]
          COUCHDB_URL NAME [NAME ...]

Uploads the design documents described in the YAML files ("-": standard input) to DATABASE,
through the cnp service (cnp-server), which resolves every function's |version by importing it
in a worker.
A design document that names its own `databases:` (names or glob patterns such as
"account-*", matched against the server's databases) goes there instead of to DATABASE.

Each design document is compared with the stored one, ignoring _rev: an identical one is not
written; a changed one is written with the stored _rev, and the views whose index CouchDB will
rebuild are named. Fields stored in CouchDB that the YAML does not mention are kept and
reported. If someone else saves the document meanwhile (HTTP 409) it is re-read, compared
again and retried a few times, never overwritten blindly. Any error in any file means nothing
is written.

A design document may also name a `classification:` (or a list of them), defined in any of
the files under a top-level `classifications:` mapping of names to patterns, e.g.
`account: "account/*"`.

With --register, nothing is written in place: each design document, versions resolved, is
stored in REGISTRY_DB, one entry per target (a `databases:` entry or a classification), and
`cnp sync COUCHDB_URL REGISTRY_DB` puts it in every database it targets, including databases
created later (see cnp sync --help).

With --register and --remove, the design documents NAME (e.g. towns, or one target rule's
entry such as towns@classification:account) are taken out of the registry: their entries are
marked removed, and cnp sync then deletes each such design document from the databases where
cnp sync itself put it and nobody has changed it since (never a hand-made one; those are left
and named). A design document dropped from the YAML keeps its entry until it is removed this
way. Registering it again brings it back. This talks to CouchDB directly, not through the
service: nothing needs resolving.

Options:
  --register=REGISTRY_DB    store the design documents in this registry database for
                            cnp sync instead of writing them in place
  --remove                  with --register: mark the named design documents' entries removed
  --dry-run                 show what would change, with the diff; write nothing
  --staged                  build changed views under _design/<name>__staging first, with
                            progress, then write the live document (which finds the index
                            already built) and delete the staging document once CouchDB
                            has committed the live index
  --staged-settle-timeout=DUR
                            with --staged: how long to wait for that commit before keeping
                            the staging document and saying so (default 60s; a duration
                            with its unit, at least 1s: e.g. 90s or 2m)
  --drop-unknown-fields     remove stored fields (and views, shows, ...) the YAML does not
                            mention instead of keeping them
  --allow-system-databases  let design documents into CouchDB's system databases (_users,
                            _replicator: names starting with '_') and allow design documents
                            whose name starts with '_' (_design/_auth); without it a YAML
                            file targeting one is refused (cnp sync has the same flag)
  --view-server=NAME        the design documents' "language", i.e. cnp's query server's name
                            in CouchDB (COUCHDB_QUERY_SERVER_<NAME>; default: python); a
                            `language:` in the YAML wins. CouchDB's own languages (javascript,
                            erlang, query) are refused, here and as a YAML `language:`
  --ca-file=PATH            CA certificates (PEM) for an https:// CouchDB; read here and sent
                            with the request (default: the service host's CA store)
  --insecure                let CouchDB's credentials go over plain http:// to a CouchDB that
                            is not on this host (refused without it: anyone on the way
                            reads them); through cnp-server, its --couchdb-allow must also
                            name that http:// URL. Also lets --target be a plaintext TCP
                            address beyond loopback (a network you trust)
  --max-conflict-retries=N  how often a write that lost a race is retried (default: 3; at
                            least 1)
  --max-yaml-bytes=N        refuse a YAML file larger than N bytes before sending it
                            (default: 4194304, cnp-server's own default limit)
  --show-documents          print every design document: as written, or as stored when it
                            is unchanged
  --target=ADDRESS          the cnp service (default: $CNP_TARGET, else
                            unix:/tmp/cnp-<uid>/cnp.sock)
  --tls, --tls-ca=PEM, --tls-cert=PEM, --tls-key=PEM, --auth-token-file=FILE
                            TLS and the bearer token for a cnp service on TCP that requires
                            them (--tls-ca: the CAs of the cnp service's certificate, not
                            CouchDB's; see cnp map --help). CouchDB's credentials and the
                            token are never sent in plaintext to a TCP service off this host
  --server-user=USER        the user a cnp service on a unix socket runs as (e.g. cnp), if
                            not you or root
  -h, --help                this text

Credentials for CouchDB, first found wins: the URL's user:password@; the environment variables
CNP_COUCHDB_USER and CNP_COUCHDB_PASSWORD (a user without its password, unset or empty, is a
usage error); the entry for the URL's host in $NETRC, else ~/.netrc. They are sent to the
service in the request and never printed. In the URL, the password runs to the last '@', so it
may hold '/', '?', '#' or '@' unencoded; but other users of this host see a command line (ps)
until cnp has read it, so prefer the environment or ~/.netrc.

The service, not this command, talks to CouchDB: cnp-server writes only to the CouchDB URLs its
operator allowed with --couchdb-allow (by default, CouchDB on the service's own host).

A `databases:` pattern (or a classification) that matches no database is named in a warning,
not an error: nothing is written for it, and the exit status does not change (as with
cnp sync and a registry entry that matches no database). A database named outright must
exist: every target database is checked before anything is written.

Exit status: 0 when every design document is in place (warnings do not change it), 1 on
any error, 2 on a usage error or a FILE.yml that cannot be read; 130 (SIGINT) or 143
(SIGTERM) when interrupted, which cancels the upload and says what a staged build in hand was
left as (its staging document deleted by cnp-server, or kept, with when to delete it). A
second signal ends cnp at once.
)";

constexpr char kCheckUsage[] = R"(Usage: %s [options] FILE.yml [FILE.yml ...]

Reads the design documents described in the YAML files ("-": standard input), resolves every
function's |version through the cnp service (cnp-server) and prints the documents `cnp upload`
would write. Every problem is reported with file:line. Nothing is written and CouchDB is not
contacted.

Options:
  --view-server=NAME  the design documents' "language", cnp's query server's name in CouchDB
                      (default: python); CouchDB's own (javascript, erlang, query) are refused
  --max-yaml-bytes=N  refuse a YAML file larger than N bytes before sending it
                      (default: 4194304, cnp-server's own default limit)
  --target=ADDRESS    the cnp service (default: $CNP_TARGET, else
                      unix:/tmp/cnp-<uid>/cnp.sock)
  --tls, --tls-ca=PEM, --tls-cert=PEM, --tls-key=PEM, --auth-token-file=FILE
                      TLS and the bearer token of the cnp service, as for cnp upload
  --insecure          a plaintext TCP --target beyond loopback (refused otherwise), for a
                      network you trust
  --server-user=USER  the user a cnp service on a unix socket runs as, as for cnp upload
  -h, --help          this text

Exit status: 0 when everything is valid, 1 on any problem, 2 on a usage error or a FILE.yml
that cannot be read.
)";

std::string Usage(const char* format, const std::string& program) {
  std::string text = format;
  text.replace(text.find("%s"), 2, program);
  for (size_t more; (more = text.find("%s --register")) != std::string::npos;) {
    text.replace(more, 2, program);
  }
  return text;
}

// cnp-server's default --max-yaml-bytes: a larger file would be refused there anyway.
constexpr int64_t kDefaultMaxYamlBytes = int64_t{4} << 20;

struct Flags {
  bool help = false;
  bool dry_run = false;
  bool staged = false;
  bool drop_unknown_fields = false;
  bool show_documents = false;
  bool remove = false;
  bool insecure = false;
  bool allow_system_databases = false;
  std::string view_server;
  std::string ca_file;
  std::string register_database;
  int max_conflict_retries = 0;
  int staged_settle_seconds = 0;
  int64_t max_yaml_bytes = kDefaultMaxYamlBytes;
  std::string target;
  ChannelSecurity security;
  std::vector<std::string> positional;
  std::set<std::string> given;  // the options named on the command line
};

// `upload` enables the options only cnp upload has (cnp check has the others).
absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& argv, bool upload) {
  std::set<std::string> valued = cli::WithConnectionOptions({"view-server", "max-yaml-bytes"});
  std::set<std::string> toggles = cli::WithConnectionFlags({"help"});
  if (upload) {
    valued.insert({"ca-file", "register", "max-conflict-retries", "staged-settle-timeout"});
    toggles.insert({"dry-run", "staged", "drop-unknown-fields", "show-documents", "remove",
                    "insecure", "allow-system-databases"});
  }
  absl::StatusOr<cli::Arguments> args = cli::ParseArguments(argv, valued, toggles);
  if (!args.ok()) return args.status();
  Flags flags;
  for (const std::set<std::string>* names : {&valued, &toggles}) {
    for (const std::string& name : *names) {
      if (args->Has(name)) flags.given.insert(name);
    }
  }
  flags.help = args->Has("help");
  flags.dry_run = args->Has("dry-run");
  flags.staged = args->Has("staged");
  flags.drop_unknown_fields = args->Has("drop-unknown-fields");
  flags.show_documents = args->Has("show-documents");
  flags.remove = args->Has("remove");
  flags.insecure = args->Has("insecure");
  flags.allow_system_databases = args->Has("allow-system-databases");
  flags.view_server = args->Get("view-server");
  // Refused here too, not only by the service, so that it is a usage error naming the flag.
  if (args->Has("view-server") && cnp::couchdb::IsCouchDbOwnLanguage(flags.view_server)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--view-server=", flags.view_server, " is ",
        cnp::couchdb::CouchDbOwnLanguageReason(flags.view_server),
        "; give the name CouchDB knows cnp's query server by: python (COUCHDB_QUERY_SERVER_PYTHON, "
        "the default) or the operator's own"));
  }
  flags.ca_file = args->Get("ca-file");
  flags.register_database = args->Get("register");
  if (args->Has("register") && flags.register_database.empty()) {
    return absl::InvalidArgumentError("--register needs a database name");
  }
  if (absl::Status system = cnp::couchdb::RefuseSystemRegistry(flags.register_database);
      !system.ok()) {
    return system;
  }
  flags.target = args->Get("target");
  flags.security = cli::ConnectionSecurity(*args);
  flags.positional = args->positional;
  absl::StatusOr<int64_t> yaml_bytes =
      cli::NumberOption(*args, "max-yaml-bytes", kDefaultMaxYamlBytes, 1, "a number of bytes");
  absl::StatusOr<int64_t> retries =
      cli::NumberOption(*args, "max-conflict-retries", 0, 1, "a number of at least 1");
  // A duration with its unit, like every other cnp timeout (60s, 2m): a bare number, which
  // only this flag took (as seconds), is refused as they refuse it.
  absl::StatusOr<int64_t> settle = int64_t{0};
  if (args->Has("staged-settle-timeout")) {
    const std::string text = args->Get("staged-settle-timeout");
    absl::Duration duration;
    if (absl::ParseDuration(text, &duration) && duration >= absl::Seconds(1)) {
      settle = absl::ToInt64Seconds(absl::Ceil(duration, absl::Seconds(1)));
    } else {
      settle = absl::InvalidArgumentError(absl::StrCat(
          "--staged-settle-timeout=", text, " is not a duration of at least 1s, like 60s or 2m"));
    }
  }
  for (const absl::StatusOr<int64_t>* number : {&yaml_bytes, &retries, &settle}) {
    if (!number->ok()) return number->status();
  }
  flags.max_yaml_bytes = *yaml_bytes;
  flags.max_conflict_retries = static_cast<int>(std::min<int64_t>(*retries, 1'000'000));
  flags.staged_settle_seconds = static_cast<int>(std::min<int64_t>(*settle, 1'000'000));
  return flags;
}

// A FILE.yml that cannot be read (missing, a directory, not UTF-8) is bad input, exit status 2
// as for every cnp command (common/file_text.h); one too large, an error like any other.
int ExitStatusOfUnreadFile(const absl::Status& read) { return absl::IsInvalidArgument(read) ? 2 : 1; }

// `path` "-" is standard input (as for cnp map), named "stdin" in messages and in the request.
absl::Status AddFile(const std::string& path, int64_t max_bytes, v1::UploadRequest& request) {
  const bool from_stdin = path == "-";
  const std::string name = from_stdin ? "stdin" : path;
  for (const v1::UploadFile& added : request.files()) {
    if (added.name() != name) continue;
    // Read twice, its design documents would each be "also defined" at their own line.
    return absl::InvalidArgumentError(
        from_stdin ? "- (standard input) is named more than once"
                   : absl::StrCat(Printable(path), " is named more than once"));
  }
  absl::StatusOr<std::string> text = ReadBounded(from_stdin ? "/dev/stdin" : path, max_bytes);
  if (!text.ok()) return text.status();
  if (static_cast<int64_t>(text->size()) > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        name, " is larger than ", max_bytes,
        " bytes, the limit for one YAML file (raise it with --max-yaml-bytes; cnp-server has "
        "its own limit, its --max-yaml-bytes)"));
  }
  // protobuf would refuse the whole request with a log line of its own that names neither
  // the file nor the line (found by a review).
  if (std::optional<Utf8Error> bad = FindInvalidUtf8(*text)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s:%d:%d: not UTF-8 (byte 0x%02x); YAML files are read as UTF-8: convert it, e.g. "
        "with iconv -f latin1 -t utf-8",
        name, bad->line, bad->column, static_cast<unsigned char>((*text)[bad->offset])));
  }
  v1::UploadFile& file = *request.add_files();
  file.set_name(name);
  file.set_text(*std::move(text));
  return absl::OkStatus();
}

// What an upload stopped by `signal` left, from the last progress of a staged build in hand.
// cnp-server deletes a staging document whose build was cut short (nothing uses its index), and
// keeps one once the live document may use its index, as when the wait for CouchDB's commit
// times out (staged_index.h).
std::string InterruptedUpload(int signal, const std::optional<v1::IndexBuildProgress>& staging) {
  const std::string stopped =
      absl::StrCat("interrupted (", signal == SIGINT ? "SIGINT" : "SIGTERM",
                   "): cnp-server was told to stop");
  // The server's writes already sent to CouchDB finish there, unreported: a probe counted 513
  // design documents after 511 "created" lines.
  if (!staging) {
    return absl::StrCat(stopped, "; what is reported above was done, and a write CouchDB had "
                        "already been sent may have been made too: run the upload again to "
                        "finish it (what is already in place is left unchanged)");
  }
  const std::string& database = staging->database();
  absl::string_view live = staging->id();
  absl::ConsumeSuffix(&live, "__staging");
  const std::string where =
      absl::StrCat("the staging document ", Printable(staging->id()), " in ", Printable(database));
  const std::string phase = staging->phase();
  if (phase == "staged" || phase == "building") {
    return absl::StrCat(stopped, " during its index build, before the live design document was "
                        "written: cnp-server deletes ", where);
  }
  const std::string info =
      absl::StrCat("GET /", Printable(database), "/", Printable(live), "/_info");
  return absl::StrCat(
      stopped, "; ", where, " was kept, as ",
      phase == "built" ? "the live document may have been written meanwhile"
                       : "the live document's index had not settled yet",
      ": delete it once ", info, " shows ",
      staging->total_changes() > 0 && phase != "built"
          ? absl::StrCat("update_seq ", staging->total_changes(), " and ")
          : std::string(),
      "\"waiting_commit\": false (deleting it earlier may lose the built index)");
}

int Send(const std::string& program, const std::string& target, const ChannelSecurity& security,
         const v1::UploadRequest& request, const PrintOptions& print, CommandIo& io) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(target, security);
  if (!client.ok()) {
    io.err << program << ": " << client.status().message() << "\n";
    return 1;
  }
  grpc::ClientContext context;
  // No deadline: a staged upload waits for CouchDB to build its indexes, which may take hours.
  (*client)->PrepareContext(context, absl::InfiniteDuration());
  CallInterrupter interrupter(context);
  std::unique_ptr<grpc::ClientReader<v1::UploadEvent>> reader =
      (*client)->stub().Upload(&context, request);
  UploadTally tally;
  tally.checks_only = request.check_only();
  v1::UploadEvent event;
  std::string last_error;
  std::optional<v1::IndexBuildProgress> staging;  // the staged build in hand, if any
  while (reader->Read(&event)) {
    PrintEvent(event, print, io.out, io.err, tally);
    if (event.has_problem()) last_error = event.problem().message();
    if (event.has_progress()) {
      staging = event.progress();
      if (staging->phase() == "cleaned") staging.reset();
    }
  }
  absl::Status status = (*client)->FromGrpc(reader->Finish());
  // A signal that came once the call had ended OK interrupted nothing: everything was written,
  // and saying otherwise would have the user upload again what is there.
  if (const int signal = interrupter.signal(); signal != 0 && !status.ok()) {
    // cnp-server's own account of what the cancel left is not sent to a call that is gone.
    PrintSummary(tally, /*failed=*/true, io.out);
    io.err << program << ": " << InterruptedUpload(signal, staging) << "\n";
    return 128 + signal;
  }
  PrintSummary(tally, /*failed=*/!status.ok(), io.out);
  if (!status.ok()) {
    if (status.message() != last_error) {
      io.err << program << ": " << cnp::couchdb::RedactCredentials(status.message()) << "\n";
    }
    return 1;
  }
  return tally.errors > 0 ? 1 : 0;
}

// --register REGISTRY --remove: the registry's entries, marked removed here, in CouchDB.
int RemoveFromRegistry(const std::string& program, const Flags& flags, CommandIo& io) {
  if (flags.positional.size() < 2) {
    io.err << program << ": expected COUCHDB_URL NAME [NAME ...] after --register REGISTRY_DB "
                         "--remove (see --help)\n";
    return 2;
  }
  absl::StatusOr<cnp::couchdb::CouchClient::Options> options =
      couch::CouchClientOptionsFor(flags.positional[0], flags.ca_file, flags.insecure, io.env);
  if (!options.ok()) {
    io.err << program << ": " << options.status().message() << "\n";
    return 2;
  }
  cnp::couchdb::CouchClient couch(*std::move(options));
  UploadTally tally;
  const PrintOptions print{.show_documents = flags.show_documents};
  std::vector<std::string> names(flags.positional.begin() + 1, flags.positional.end());
  absl::Status status = client::sync::RemoveRegistered(
      couch, flags.register_database, names, flags.dry_run, flags.max_conflict_retries,
      [&](const v1::UploadEvent& event) { PrintEvent(event, print, io.out, io.err, tally); });
  PrintSummary(tally, /*failed=*/!status.ok(), io.out);
  return status.ok() && tally.errors == 0 ? 0 : 1;
}

}  // namespace

int RunUpload(const std::vector<std::string>& args, CommandIo io) {
  std::string program = args.empty() ? "cnp upload" : args[0];
  absl::StatusOr<Flags> flags = ParseFlags(args, /*upload=*/true);
  if (!flags.ok()) {
    io.err << program << ": " << cli::WithHelpHint(flags.status().message()) << "\n";
    return 2;
  }
  if (flags->help) {
    io.out << Usage(kUploadUsage, program);
    return 0;
  }
  const bool registering = !flags->register_database.empty();
  if (flags->remove) {
    if (!registering) {
      io.err << program << ": --remove takes design documents out of a registry: it needs "
                           "--register REGISTRY_DB (see --help)\n";
      return 2;
    }
    if (flags->staged) {
      io.err << program << ": --staged and --remove do not go together: --remove only marks "
                           "registry entries removed, it builds no views (see --help)\n";
      return 2;
    }
    // Taken and then ignored, they would let a user believe they applied (a --target that
    // was never called, a --view-server that changed nothing).
    for (const char* unused : {"view-server", "drop-unknown-fields", "allow-system-databases",
                               "staged-settle-timeout", "max-yaml-bytes", "target", "tls",
                               "tls-ca", "tls-cert", "tls-key", "auth-token-file", "server-user"}) {
      if (flags->given.count(unused) > 0) {
        io.err << program << ": --" << unused << " has no effect with --remove: --remove marks "
                             "registry entries removed in CouchDB itself, without cnp-server or "
                             "any design document (see --help)\n";
        return 2;
      }
    }
    return RemoveFromRegistry(program, *flags, io);
  }
  if (flags->given.count("staged-settle-timeout") > 0 && !flags->staged) {
    io.err << program << ": --staged-settle-timeout has no effect without --staged: only a "
                         "staged upload waits for CouchDB to commit an index (see --help)\n";
    return 2;
  }
  // With --register the registry stands where DATABASE would: there is no default database.
  const size_t first_file = registering ? 1 : 2;
  if (flags->positional.size() < first_file + 1) {
    io.err << program
           << (registering ? ": expected COUCHDB_URL FILE.yml [FILE.yml ...] after --register "
                             "REGISTRY_DB (see --help)\n"
                           : ": expected COUCHDB_URL DATABASE FILE.yml [FILE.yml ...] (see "
                             "--help)\n");
    return 2;
  }
  // An empty argument (an unset shell variable) is no database: before, it was sent, and each
  // design document was refused for having none (exit 1) rather than the command line (exit 2).
  if (!registering && flags->positional[1].empty()) {
    io.err << program << ": DATABASE is empty; give the name of the database to upload to (see "
                         "--help)\n";
    return 2;
  }
  if (registering && flags->staged) {
    io.err << program << ": --staged and --register do not go together: cnp sync writes the "
                         "registered design documents (see --help)\n";
    return 2;
  }
  // cnp-server sends the credentials on to CouchDB as they are: over http:// to another host,
  // in plaintext; CouchClientOptionsFor refuses that as it does for sync and derive.
  absl::StatusOr<cnp::couchdb::CouchClient::Options> couchdb =
      couch::CouchClientOptionsFor(flags->positional[0], flags->ca_file, flags->insecure, io.env);
  if (!couchdb.ok()) {
    io.err << program << ": " << couchdb.status().message() << "\n";
    return 2;
  }
  const std::string target = flags->target.empty() ? DefaultTarget() : flags->target;
  if (!couchdb->username.empty() || !couchdb->password.empty()) {
    if (absl::Status s = client::CheckSecretStaysPrivate(flags->security, target,
                                                         "CouchDB's user and password");
        !s.ok()) {
      io.err << program << ": " << s.message() << "\n";
      return 2;
    }
  }

  v1::UploadRequest request;
  request.set_couchdb_url(couchdb->base_url);
  request.mutable_credentials()->set_username(couchdb->username);
  request.mutable_credentials()->set_password(couchdb->password);
  if (registering) {
    request.set_register_database(flags->register_database);
  } else {
    request.set_database(flags->positional[1]);
  }
  request.set_ca_pem(couchdb->ca_pem);
  request.set_dry_run(flags->dry_run);
  request.set_staged(flags->staged);
  request.set_staged_settle_seconds(flags->staged_settle_seconds);
  request.set_drop_unknown_fields(flags->drop_unknown_fields);
  request.set_allow_system_databases(flags->allow_system_databases);
  request.set_language(flags->view_server);
  request.set_max_conflict_retries(flags->max_conflict_retries);
  for (size_t i = first_file; i < flags->positional.size(); ++i) {
    if (absl::Status read = AddFile(flags->positional[i], flags->max_yaml_bytes, request);
        !read.ok()) {
      io.err << program << ": " << read.message();
      // `--register REGISTRY URL DATABASE FILE.yml`: the usual form, one word too many.
      if (registering && i == first_file && ::access(flags->positional[i].c_str(), F_OK) != 0 &&
          !absl::StrContains(flags->positional[i], '.') &&
          !absl::StrContains(flags->positional[i], '/')) {
        io.err << " (with --register no DATABASE follows COUCHDB_URL: the registry database "
                  "stands in its place, and cnp sync writes each database's design documents)";
      }
      io.err << "\n";
      return ExitStatusOfUnreadFile(read);
    }
  }
  return Send(program, target, flags->security, request,
              {.show_documents = flags->show_documents, .staged = flags->staged}, io);
}

int RunCheck(const std::vector<std::string>& args, CommandIo io) {
  std::string program = args.empty() ? "cnp check" : args[0];
  absl::StatusOr<Flags> flags = ParseFlags(args, /*upload=*/false);
  if (!flags.ok()) {
    io.err << program << ": " << cli::WithHelpHint(flags.status().message()) << "\n";
    return 2;
  }
  if (flags->help) {
    io.out << Usage(kCheckUsage, program);
    return 0;
  }
  if (flags->positional.empty()) {
    io.err << program << ": expected FILE.yml [FILE.yml ...] (see --help)\n";
    return 2;
  }
  v1::UploadRequest request;
  request.set_check_only(true);
  request.set_language(flags->view_server);
  for (const std::string& path : flags->positional) {
    if (absl::Status read = AddFile(path, flags->max_yaml_bytes, request); !read.ok()) {
      io.err << program << ": " << read.message() << "\n";
      return ExitStatusOfUnreadFile(read);
    }
  }
  std::string target = flags->target.empty() ? DefaultTarget() : flags->target;
  return Send(program, target, flags->security, request, {}, io);
}

}  // namespace upload

int RunUploadCommand(int argc, char** argv) {
  return upload::RunUpload(std::vector<std::string>(argv, argv + argc),
                           {.out = std::cout, .err = cli::StderrLines()});
}

int RunCheckCommand(int argc, char** argv) {
  return upload::RunCheck(std::vector<std::string>(argv, argv + argc),
                          {.out = std::cout, .err = cli::StderrLines()});
}

}  // namespace cnp::client
