#include "client/sync/sync_command.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "client/cli/arguments.h"
#include "client/cli/line_stream.h"
#include "client/sync/registry_sync.h"
#include "client/cli/command_io.h"
#include "client/cli/event_printer.h"
#include "client/couch/couch_connection.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/couch_root.h"
#include "common/couchdb/target_databases.h"

namespace cnp::client {
namespace sync {
namespace {

constexpr char kUsage[] = R"(Usage: %s [options] COUCHDB_URL REGISTRY_DB

Puts the design documents registered in REGISTRY_DB (with `cnp upload --register REGISTRY_DB
COUCHDB_URL FILE.yml...`) into every database they target, by name, glob pattern or
classification, then follows CouchDB's _db_updates so that a database created later gets its
design documents within seconds. Runs until interrupted; --once stops after the first pass
(for cron).

Each design document is compared with the stored one, ignoring _rev, and written only when it
changed; fields stored in CouchDB that the registry's copy does not mention are kept and
reported; a concurrent edit (HTTP 409) is re-read, compared again and retried, never
overwritten blindly: the rules of `cnp upload`. When the registry changes, every database is
brought up to date again.

The registry's design documents carry their functions' resolved |versions, so cnp sync needs
no cnp service: it talks to CouchDB itself, with the credentials below. Following
_db_updates needs a server admin and CouchDB 2 or later. A poll of _db_updates that fails for
a reason retrying may cure (CouchDB restarting, a 5xx, a proxy's page) is a warning and is
tried again from the same position after a growing delay (0.5s, doubling up to 30s); an answer
of 400, 401, 403, 404 or 405 ends the run with exit status 1. A database whose sync failed, and
a full pass that could not finish (the registry unreadable, CouchDB gone mid-way), are tried
again after the same delays; credentials refused end the run.

Options:
  --once                    one pass over the existing databases, then exit
  --dry-run                 show what would change in each database; write nothing (implies
                            --once)
  --drop-unknown-fields     remove stored fields the registry's copy does not mention
  --allow-system-databases  let registry entries reach CouchDB's system databases (_users,
                            _replicator: names starting with '_') and design documents whose
                            name starts with '_' (_design/_auth); without it such targets
                            and entries are skipped with a warning naming the entry
  --ca-file=PATH            CA certificates (PEM) for an https:// CouchDB (default: the
                            system's CA store)
  --insecure                send the credentials over plain http:// to a CouchDB that is not
                            on this host (refused without it: anyone on the way reads them)
  --max-conflict-retries=N  how often a write that lost a race is retried (default: 3; at
                            least 1)
  --show-documents          print every design document: as written, or as stored when it
                            is unchanged
  -h, --help                this text

Credentials for CouchDB, first found wins: the URL's user:password@; CNP_COUCHDB_USER and
CNP_COUCHDB_PASSWORD (a user without its password, unset or empty, is a usage error); the entry
for the URL's host in $NETRC, else ~/.netrc. They are never printed. Other users of this host
see a command line (ps) until cnp has read it: give them in the environment or ~/.netrc rather
than in the URL.

Example:
  export CNP_COUCHDB_USER=admin CNP_COUCHDB_PASSWORD=secret   # or a ~/.netrc entry
  cnp upload --register cnp_registry http://localhost:5984 accounts.yml
  cnp sync http://localhost:5984 cnp_registry

A registry entry that targets no existing database (a pattern or classification that matches
none, a database not created yet) is named in a warning, and the summary counts them; as
with `cnp upload` and a pattern that matches no database, that is not an error. While
following, the warning is given once per entry, and again when the entry changes.

SIGINT or SIGTERM stops it once the database in hand is done, saying so on stderr; a request
to CouchDB under way is waited for (a poll of _db_updates while following, or a request
CouchDB does not answer: up to about a minute); a second one stops it at once. The next run's first pass catches up with whatever was left.

When an entry's targets narrow (a classification's pattern or its databases: changed, the
same entry), a full pass (--once, the first, and one after each registry change) takes its
design document out of the databases it no longer targets, where cnp sync put it and nobody
changed it since, as a removal does (cnp upload --register REGISTRY_DB --remove).

Exit status: 0 when every design document that targets an existing database is in place
(warnings do not change it: an entry that matches no database, a database deleted during
the pass, a record another cnp sync changed meanwhile and that was read again), or when following
was stopped by SIGINT or SIGTERM; 1 on any error; 2 on a usage error (a database's URL given
as COUCHDB_URL among them); 130 (SIGINT) or 143
(SIGTERM) when such a signal stopped --once or --dry-run before its pass was over.
)";

// The signal that asked for a stop (SIGINT or SIGTERM), 0 while none has.
std::atomic<int> stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "read and written in a signal handler");

// The first SIGINT or SIGTERM asks for a clean stop: the database in hand is finished, so that
// no design document is left written without its _local/cnp-sync record settled. A second one
// ends the process at once, as if there were no handler, for an operator whose CouchDB hangs;
// the next run catches up (and settles an announced record, see ownership_record.h).
void OnStopSignal(int signal) {
  if (stop_signal.exchange(signal) != 0) {
    std::signal(signal, SIG_DFL);
    std::raise(signal);
    return;
  }
  constexpr char kNote[] =
      "cnp sync: stopping once the database in hand is done (signal again to stop at once)\n";
  const int saved_errno = errno;  // the interrupted code may be about to read its own
  (void)!write(STDERR_FILENO, kNote, sizeof kNote - 1);
  errno = saved_errno;
}

// Handles SIGINT and SIGTERM for as long as it lives, then puts back what was there.
class StopSignalHandlers {
 public:
  StopSignalHandlers()
      : previous_int_(std::signal(SIGINT, OnStopSignal)),
        previous_term_(std::signal(SIGTERM, OnStopSignal)) {
    stop_signal = 0;
  }
  ~StopSignalHandlers() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
  }
  StopSignalHandlers(const StopSignalHandlers&) = delete;
  StopSignalHandlers& operator=(const StopSignalHandlers&) = delete;

 private:
  using Handler = void (*)(int);
  Handler previous_int_;
  Handler previous_term_;
};

struct Flags {
  bool help = false;
  bool once = false;
  bool dry_run = false;
  bool drop_unknown_fields = false;
  bool show_documents = false;
  bool insecure = false;
  bool allow_system_databases = false;
  std::string ca_file;
  int max_conflict_retries = 3;
  std::vector<std::string> positional;
};

absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& argv) {
  absl::StatusOr<cli::Arguments> args = cli::ParseArguments(
      argv, {"ca-file", "max-conflict-retries"},
      {"help", "once", "dry-run", "drop-unknown-fields", "show-documents", "insecure",
       "allow-system-databases"});
  if (!args.ok()) return args.status();
  absl::StatusOr<int64_t> retries =
      cli::NumberOption(*args, "max-conflict-retries", 3, 1, "a number of at least 1");
  if (!retries.ok()) return retries.status();
  return Flags{.help = args->Has("help"),
               .once = args->Has("once"),
               .dry_run = args->Has("dry-run"),
               .drop_unknown_fields = args->Has("drop-unknown-fields"),
               .show_documents = args->Has("show-documents"),
               .insecure = args->Has("insecure"),
               .allow_system_databases = args->Has("allow-system-databases"),
               .ca_file = args->Get("ca-file"),
               .max_conflict_retries = static_cast<int>(std::min<int64_t>(*retries, 1'000'000)),
               .positional = args->positional};
}

}  // namespace

int RunSync(const std::vector<std::string>& args, cli::CommandIo io) {
  std::string program = args.empty() ? "cnp sync" : args[0];
  absl::StatusOr<Flags> flags = ParseFlags(args);
  if (!flags.ok()) {
    io.err << program << ": " << cli::WithHelpHint(flags.status().message()) << "\n";
    return 2;
  }
  if (flags->help) {
    io.out << absl::StrReplaceAll(kUsage, {{"%s", program}});
    return 0;
  }
  if (flags->positional.size() != 2) {
    io.err << program << ": expected COUCHDB_URL REGISTRY_DB (see --help)\n";
    return 2;
  }
  if (absl::Status system = cnp::couchdb::RefuseSystemRegistry(flags->positional[1]);
      !system.ok()) {
    io.err << program << ": " << system.message() << "\n";
    return 2;
  }
  absl::StatusOr<cnp::couchdb::CouchClient::Options> options =
      couch::CouchClientOptionsFor(flags->positional[0], flags->ca_file, flags->insecure,
                                    io.env);
  if (!options.ok()) {
    io.err << program << ": " << options.status().message() << "\n";
    return 2;
  }
  cnp::couchdb::CouchClient couch(*std::move(options));
  // A database's URL given as CouchDB's is a usage error, as cnp derive has it (exit 2): asked
  // before anything else. (One that does not answer is the pass's to report.)
  if (absl::Status root = cnp::couchdb::CheckNotADatabaseUrl(
          couch, "the registry database is named on the command line, after the URL");
      !root.ok()) {
    io.err << program << ": " << root.message() << "\n";
    return 2;
  }

  const bool one_pass = flags->once || flags->dry_run;
  StopSignalHandlers handlers;
  cli::UploadTally tally;
  const cli::PrintOptions print{.show_documents = flags->show_documents,
                                .compared_with = "the registry's copy"};
  RegistrySync sync(couch, flags->positional[1],
                    {.dry_run = flags->dry_run,
                     .drop_unknown_fields = flags->drop_unknown_fields,
                     .max_conflict_retries = flags->max_conflict_retries,
                     .allow_system_databases = flags->allow_system_databases,
                     .stop_requested = [] { return stop_signal.load() != 0; },
                     .note = [&](const std::string& text) { io.err << program << ": " << text << "\n"; }},
                    [&](const v1::UploadEvent& event) {
                      cli::PrintEvent(event, print, io.out, io.err, tally);
                      io.out.flush();  // a long-running follower's log should not lag
                    });
  absl::Status status = one_pass ? sync.SyncAll() : sync.Follow([] { return true; });
  const int signal = stop_signal.load();
  const bool pass_cut_short = one_pass && signal != 0 && absl::IsCancelled(status);
  tally.unmatched_entries = sync.unmatched_entries();
  cli::PrintSummary(tally, /*failed=*/!status.ok(), io.out);
  if (signal != 0) {
    const char* name = signal == SIGINT ? "SIGINT" : "SIGTERM";
    io.err << program << ": stopped by " << name
           << (pass_cut_short ? " before the pass was over; run it again to finish it"
                              : " once the database in hand was done; the next run catches up")
           << "\n";
    if (pass_cut_short) return 128 + signal;
    // A follower stopped as asked: the errors on its way were reported as they came, and the
    // next run catches up with what they left.
    if (!one_pass && status.ok()) return 0;
  }
  return status.ok() && tally.errors == 0 ? 0 : 1;
}

}  // namespace sync

int RunSyncCommand(int argc, char** argv) {
  return sync::RunSync(std::vector<std::string>(argv, argv + argc),
                       {.out = std::cout, .err = cli::StderrLines()});
}

}  // namespace cnp::client
