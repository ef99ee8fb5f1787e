#include "client/derive/derive_command.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cli/arguments.h"
#include "client/cli/line_stream.h"
#include "client/derive/couch_db.h"
#include "client/derive/declaration.h"
#include "client/derive/deriver.h"
#include "client/derive/holder_id.h"
#include "client/derive/preflight.h"
#include "client/derive/lease.h"
#include "client/lib/cnp_client.h"
#include "client/couch/couch_connection.h"
#include "common/default_target.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/couch_url.h"
#include "common/printable_text.h"

namespace cnp::derive {
namespace {

constexpr char kUsage[] = R"(Usage: cnp derive [options] COUCHDB_URL DECLARATION.yml

Keeps derived databases: map/reduce results stored as ordinary documents that clients read,
replicate and filter like any other data (qvarn-mr's idea, on CouchDB's _changes).

DECLARATION.yml (YAML or JSON; "-" reads it from standard input) mirrors qvarn-mr's
`handlers` dict, naming the handlers:

  name: company_reports                  # this instance: lease, checkpoints, status, errors
  handlers:
    company_reports__map:                # target database <- source databases
      orgs:    {type: map, version: 1, handler: myhandlers.org_key}
      reports: {type: map, version: 1, handler: myhandlers.report_org}
    company_reports:                     # a reduce target: one source, a map target above
      company_reports__map: {type: reduce, version: 1, handler: myhandlers.company_report,
                             sources: true}

Handlers are named functions (module.function or module.function|N) that cnp-server runs on
its --python-path, never this process; couch_named_python.mr has the helpers item, value,
count, join and handler. A map handler gets a source document and yields (key, value) pairs;
a reduce handler is called f(keys, rows, rereduce) with all rows of one key of its map target
(with `sources: true` each row also has mr_source, its source document). Design documents
(_design/...) of a source are never passed to a map handler.

For each stage (target <- source) this command reads the source's _changes in batches
(include_docs, seq_interval), sends the changed documents to the service's Map RPC, and writes
the rows to the target with _bulk_docs, writing only documents that changed. Derived documents
have deterministic ids and carry mr_source_id, mr_source_type, mr_key, mr_value, mr_version
(CouchDB refuses unknown top-level fields that start with '_'); rows that a reduce stage reads
with `sources: true` also carry mr_source_rev, so that a join is redone when a source changes. A deleted source document
deletes its rows. A reduce stage follows its map target's _changes and re-reduces each changed
key from all of that key's rows (Reduce RPC; _find on an mr_key index it creates). The last
sequence is checkpointed in _local/cnp-derive:NAME:source:SOURCE of the target (read from
_local/cnp-derive:NAME:SOURCE, where earlier releases kept it, when absent), and a run resumes
from it; the first run is the initial synchronization. A changed `version` re-runs its stage from the
start and then removes the derived documents of other versions.

Several instances of one NAME may run: a lease (_local/cnp-derive:NAME:lease in EVERY target
database) lets one write; an instance takes the lease of each of its targets, in order of name
(when one is held by another instance it releases those it took and waits), so that instances
whose declarations differ (a target added or removed) but share a target still write one at a
time. The holder renews them every --lease-renew (and, while long Map or Reduce calls keep it
busy, from threads of their own, so that it does not lose them) and stops writing when it loses
any; another takes over once the holder has not renewed for --lease-timeout (at once if it
stopped cleanly). Instances of different NAMEs do not exclude each other.
Progress goes to stderr and to _local/cnp-derive:NAME:status; a handler that raises on a
document is logged (the first 20 errors of each minute; then one line says how many more
there were) and recorded (document id, handler, exception) in
_local/cnp-derive:NAME:errors, that document's rows are left as they were, and the rest go on.
A Map call whose answer passes cnp-server's --max-call-bytes is made again in halves; a
document whose own rows still pass it is recorded the same way (AnswerTooLarge), as is a
reduce key whose result does. A Map call that runs past --timeout is made again one
document at a time (if a Resolve shows the service answers; else the run ends, exit 1): a
document the handler is too slow for alone is recorded (Timeout) when other calls of its
batch were answered; when the first three tried alone are not, and none was, the handler is
too slow for all of them and the run ends (exit 1). A reduce key's call past --timeout is
recorded (Timeout) the same way.
The status document is written every --lease-renew while stages catch up, and on a stop.

Following: once caught up (without --once), each map stage follows its source's
_changes?feed=continuous (include_docs, heartbeat) on a connection of its own and takes its
batches (at most --batch-size) from what the feed brought; a feed the server ends, or that
stays silent for three heartbeats, is reopened from the last sequence it read (after a growing
delay, up to 5s, when it brought no change). An answer retrying cannot change (HTTP 4xx other
than 408 and 429: the source database deleted, the credentials revoked) ends the run with
exit status 1, with either --feed.

A cnp-server that does not answer (restarting, or down) stops the work, not the run: after a
delay (0.1s, doubling up to 5s; a log line at most every 5s) the work starts over from the
checkpoints, so no document is skipped or recorded as failed, and the lease is kept meanwhile.
--once gives up after --service-wait with exit status 1. An error a cnp-server answers (a
worker that crashed on a document among them) ends the run with exit status 1.
A follower waits out a CouchDB that does not serve (no answer, HTTP 5xx: a restart), or whose
_find keeps answering without a reduce key's latest rows (a cluster's copy behind), the same
way; --once ends on it with exit status 1. An answer that says no (HTTP 4xx) ends the run.

Options:
  --once                  catch up with every source, then exit (default: follow forever)
  --batch-size=N          changes per batch and per Map call (default: 500; 1 to 100000)
  --feed=continuous|longpoll
                          how to follow the sources once caught up (default: continuous;
                          longpoll asks each source in turn)
  --heartbeat=DUR         the continuous feeds' heartbeat (default: 10s)
  --poll-interval=DUR     longest quiet wait before the lease and the stop signal are looked
                          at again, and per longpoll (default: 1s)
  --source-check=DUR      how often a follower checks that each source is still the database
                          it started on (default: 30s): one missing at two checks in a row
                          ends the run (exit 1), one deleted and created again is derived
                          again from scratch (a feed alone may not tell: pouchdb-server keeps
                          a deleted database's feed open); and that each handler's @version
                          on disk is still the one its name gives (another ends the run, exit
                          1, as it does at the start of every run)
  --lease-timeout=DUR     a holder that has not renewed for this long loses it (default: 60s;
                          at least 1s)
  --lease-renew=DUR       how often the holder renews (default: 10s, or a third of
                          --lease-timeout when only that is given)
  --ca-file=PATH          CA certificates (PEM) for an https:// CouchDB
  --insecure              send the credentials over plain http:// to a CouchDB that is not on
                          this host (refused without it: anyone on the way reads them); also
                          lets --target be a plaintext TCP address beyond loopback
  --max-couchdb-response-bytes=N
                          the longest answer read from CouchDB, and the longest change on a
                          continuous feed (default: 64 MiB); an answer may also hold at most one
                          JSON value per 16 bytes of it. A batch of changes longer than this
                          is read again in halves; a single change longer, or one whose document
                          is nested deeper than 4096 levels or is not UTF-8, is recorded as that
                          document's error (UnreadableChange) and passed
  --timeout=DUR           per Map/Reduce call (default: 60s)
  --service-wait=DUR      with --once, how long to keep trying a cnp-server that does not
                          answer before exiting 1 (default: 60s); following, it is tried for
                          as long as it takes
  --target=ADDRESS        the cnp service (default: $CNP_TARGET, else
                          unix:/tmp/cnp-<uid>/cnp.sock)
  --tls, --tls-ca=PEM, --tls-cert=PEM, --tls-key=PEM, --auth-token-file=FILE
                          TLS and the bearer token of a cnp service on TCP that requires them
                          (see cnp map --help)
  --server-user=USER      the user a cnp service on a unix socket runs as (e.g. cnp), if not
                          you or root
  -h, --help              this text

Credentials for CouchDB, first found wins: the URL's user:password@; CNP_COUCHDB_USER and
CNP_COUCHDB_PASSWORD (a user without its password, unset or empty, is a usage error); the URL's
host in $NETRC, else ~/.netrc. No message shows them; but other users of this host see a
command line (ps) until cnp has read it, so prefer the environment or ~/.netrc to the URL.
Unlike `cnp upload`, this command talks to CouchDB itself (it follows feeds for as long as it
runs).

COUCHDB_URL is CouchDB's root (behind a proxy, with its path prefix), the URL whose GET
answers {"couchdb":"Welcome",...} (pouchdb-server's {"express-pouchdb":"Welcome!",...} is
taken too); a database's URL is refused before anything is written.

Exit status: 0 caught up (--once) with no document's error recorded in this run, or with
--once another instance holds the lease (it says which; that instance does the work; a holder
of this host that has ended is waited out instead, and the run does the work), or a
follower stopped by SIGINT/SIGTERM (once the work in hand is written; a second signal ends it at
once, by that signal, and the next run resumes from the checkpoints); 1 an error; 2 a usage
error (a COUCHDB_URL that is not CouchDB's root among them); 3 --once caught up, but this run
recorded errors of documents (any entry of _local/cnp-derive:NAME:errors: a handler that
raised, Timeout, AnswerTooLarge, UnreadableChange, a write refused twice, UnknownKey: a map
row deleted by hand whose key compaction has erased); those documents are passed, a later run
does not meet them again; 130 (SIGINT) or 143 (SIGTERM) --once stopped by that signal before
it caught up.
)";

// While no cnp-server answers, or CouchDB does not serve: the first wait before trying again,
// the longest (the waits double), and the least time between two log lines about it.
constexpr absl::Duration kFirstServiceRetryDelay = absl::Milliseconds(100);
constexpr absl::Duration kMaxServiceRetryDelay = absl::Seconds(5);
constexpr absl::Duration kServiceNoteInterval = absl::Seconds(5);

// Which server a failure says is away for a while (restarting, or down), to be waited out
// rather than ended on: "cnp-server" when none answers; "CouchDB" when it does not serve (no
// answer, HTTP 5xx; or a copy of a database behind the others, IsIndexBehind) and this run
// follows (a --once run ends on it with exit status 1, and a later run goes on from the
// checkpoints). Empty for any other failure.
std::string AwayServer(const absl::Status& failure, bool once) {
  if (client::IsServerUnreachable(failure)) return "cnp-server";
  if (!once && (couchdb::IsCouchDbUnavailable(failure) || IsIndexBehind(failure))) return "CouchDB";
  return "";
}

// A server that is away: since when, the wait before the next try, and when it was last said.
struct Outage {
  std::string server;  // empty while none is away
  absl::Time since = absl::InfiniteFuture();
  absl::Time last_note = absl::InfinitePast();
  absl::Duration retry_delay = kFirstServiceRetryDelay;
};

std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "read and written in a signal handler");
// The signal that asked for the stop (SIGINT or SIGTERM), 0 while none has: --once stopped
// before it caught up exits 128 + it, as cnp sync does.
std::atomic<int> stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "read and written in a signal handler");

// The exit status of a --once run that caught up but recorded errors of documents in this run.
constexpr int kExitDocumentErrors = 3;

// The first SIGINT or SIGTERM asks for a clean stop: what is in hand is written and the lease
// released. A second one ends the process at once, as if there were no handler, so that an
// operator whose CouchDB or cnp-server hangs does not wait out their timeouts; nothing is lost,
// the next run resumes from the checkpoints (another instance waits out the lease).
void OnStopSignal(int signal) {
  int none = 0;
  stop_signal.compare_exchange_strong(none, signal);
  if (stop_requested.exchange(true)) {
    std::signal(signal, SIG_DFL);
    std::raise(signal);
    return;
  }
  constexpr char kNote[] =
      "cnp derive: stopping once the work in hand is written (signal again to stop at once)\n";
  const int saved_errno = errno;  // the interrupted code may be about to read its own
  (void)!write(STDERR_FILENO, kNote, sizeof kNote - 1);
  errno = saved_errno;
}

int Fail(const absl::Status& status) {
  // A status may quote a server's answer or a document id: escaped, it cannot drive the terminal.
  cli::StderrLines() << "cnp derive: " << Printable(couchdb::RedactCredentials(status.message())) << "\n";
  return absl::IsInvalidArgument(status) ? 2 : 1;
}

absl::Status ParseDurationFlag(const cli::Arguments& args, const char* name, absl::Duration& out) {
  if (!args.Has(name)) return absl::OkStatus();
  if (!absl::ParseDuration(args.Get(name), &out) || out <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, "=", args.Get(name),
                                                   " is not a positive duration like 500ms or 2m"));
  }
  return absl::OkStatus();
}

}  // namespace

int RunDeriveCommand(int argc, char** argv) {
  const std::string usage = kUsage;
  auto args = cli::ParseArguments(
      argc, argv,
      cli::WithConnectionOptions(
          {"batch-size", "poll-interval", "source-check", "lease-timeout", "lease-renew", "ca-file", "timeout", "service-wait",
           "feed", "heartbeat", "max-couchdb-response-bytes"}),
      cli::WithConnectionFlags({"help", "once", "insecure"}));
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) {
    std::cout << usage;
    return 0;
  }
  if (args->positional.size() != 2) {
    cli::StderrLines() << "cnp derive: needs COUCHDB_URL and DECLARATION.yml, got "
              << args->positional.size() << " argument" << (args->positional.size() == 1 ? "" : "s")
              << " (see --help)\n";
    return 2;
  }
  DeriverOptions options;
  if (args->Has("batch-size") &&
      (!absl::SimpleAtoi(args->Get("batch-size"), &options.batch_size) || options.batch_size < 1 ||
       options.batch_size > 100000)) {
    return Fail(absl::InvalidArgumentError("--batch-size must be a number from 1 to 100000"));
  }
  int64_t max_response_bytes = int64_t{64} << 20;
  if (args->Has("max-couchdb-response-bytes") &&
      (!absl::SimpleAtoi(args->Get("max-couchdb-response-bytes"), &max_response_bytes) ||
       max_response_bytes < (int64_t{1} << 20))) {
    return Fail(absl::InvalidArgumentError("--max-couchdb-response-bytes must be a number of bytes, at least 1048576"));
  }
  absl::Duration poll = absl::Seconds(1), lease_timeout = absl::Seconds(60), lease_renew = absl::Seconds(10);
  absl::Duration service_wait = absl::Seconds(60);
  for (auto [name, value] : {std::pair<const char*, absl::Duration*>{"poll-interval", &poll},
                             {"service-wait", &service_wait},
                             {"lease-timeout", &lease_timeout},
                             {"lease-renew", &lease_renew},
                             {"timeout", &options.rpc_timeout},
                             {"heartbeat", &options.heartbeat},
                             {"source-check", &options.source_check_every}}) {
    if (absl::Status s = ParseDurationFlag(*args, name, *value); !s.ok()) return Fail(s);
  }
  const std::string feed = args->Get("feed", "continuous");
  if (feed != "continuous" && feed != "longpoll") {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--feed=", feed, " is neither continuous nor longpoll")));
  }
  // Given alone, --lease-timeout sets the renewal too: a third of it (the default 10s would
  // refuse a timeout of 10s or less).
  if (args->Has("lease-timeout") && !args->Has("lease-renew")) lease_renew = lease_timeout / 3;
  // Each renewal is a write to CouchDB: a lease shorter than a second would lapse between two,
  // and the run fail later saying only that the lease was lost.
  if (lease_timeout < absl::Seconds(1)) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--lease-timeout=", args->Get("lease-timeout"),
                     " is too short: a lease must outlast a write to CouchDB; give 1s or more")));
  }
  if (lease_renew >= lease_timeout) {
    return Fail(absl::InvalidArgumentError("--lease-renew must be shorter than --lease-timeout"));
  }
  // The arguments the other way round (cnp upload's order is FILE... URL): said so, rather
  // than "cannot read http://...".
  if (!couchdb::ParseCouchUrl(args->positional[0]).ok() &&
      couchdb::ParseCouchUrl(args->positional[1]).ok()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "the CouchDB URL comes first: cnp derive COUCHDB_URL DECLARATION.yml (given \"",
        args->positional[0], "\" first)")));
  }
  absl::StatusOr<Declaration> declaration = ReadDeclaration(args->positional[1]);
  if (!declaration.ok()) return Fail(declaration.status());

  // As cnp upload and sync reach CouchDB, and refuse alike (a URL, credentials bound for
  // plain http:// off this host, a --ca-file that is no PEM file): a usage error, exit 2.
  absl::StatusOr<couchdb::CouchClient::Options> couch_options = client::couch::CouchClientOptionsFor(
      args->positional[0], args->Get("ca-file"), args->Has("insecure"), client::couch::ProcessEnv);
  if (!couch_options.ok()) {
    return Fail(absl::InvalidArgumentError(couch_options.status().message()));
  }
  couchdb::CouchClient::Options http_options = *std::move(couch_options);
  http_options.max_response_bytes = max_response_bytes;
  http_options.response_limit_advice = "cnp derive's --max-couchdb-response-bytes raises the limit";
  if (feed == "continuous") options.continuous_feed = http_options;
  couchdb::CouchClient http(http_options);
  CouchDb couch(http);
  // Before anything is written: under a database's URL, creating the "databases" would create
  // documents in it.
  if (absl::Status s = couch.CheckRoot(); !s.ok()) return Fail(s);
  couchdb::CouchClient prefetch_http(http_options);  // reads the next batch meanwhile
  CouchDb prefetch(prefetch_http);
  // A cnp-server that does not answer yet (restarting, or starting after this) is waited for
  // as one that goes away later is (--help): a unit started with the server's must not die.
  const std::string target = args->Get("target", DefaultTarget());
  // From before the first try, whose wait counts too (--service-wait=10s took 15 s).
  const absl::Time waiting_since = absl::Now();
  auto cnp = client::Client::Connect(
      target, cli::ConnectionSecurity(*args),
      args->Has("once") ? std::min(service_wait, absl::Seconds(5)) : absl::Seconds(5));
  absl::Duration retry = absl::Milliseconds(100);
  for (absl::Time said = absl::InfinitePast(); !cnp.ok() && absl::IsUnavailable(cnp.status());) {
    if (args->Has("once") && absl::Now() - waiting_since >= service_wait) {
      return Fail(absl::UnavailableError(absl::StrCat(
          cnp.status().message(), "; it has not answered for ",
          absl::FormatDuration(absl::Trunc(absl::Now() - waiting_since, absl::Milliseconds(100))),
          " (--service-wait)")));
    }
    if (absl::Now() - said >= absl::Seconds(5)) {
      said = absl::Now();
      cli::StderrLines() << "cnp derive: " << Printable(cnp.status().message())
                         << "; waiting for it\n";
    }
    // A --once run gives up at --service-wait, not at the end of a backoff that outlasts it.
    absl::SleepFor(args->Has("once")
                       ? std::min(retry, waiting_since + service_wait - absl::Now())
                       : retry);
    retry = std::min(retry * 2, absl::Seconds(5));
    // Each try waits for a connection at most what is left of --service-wait (5s following).
    const absl::Duration connect_wait =
        args->Has("once")
            ? std::clamp(waiting_since + service_wait - absl::Now(), absl::Milliseconds(100),
                         absl::Seconds(5))
            : absl::Seconds(5);
    cnp = client::Client::Connect(target, cli::ConnectionSecurity(*args), connect_wait);
  }
  if (!cnp.ok()) return Fail(cnp.status());
  if (absl::Status s = CheckBeforeWriting(*declaration, couch, **cnp, options.rpc_timeout);
      !s.ok()) {
    return Fail(s);
  }

  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
  const bool once = args->Has("once");
  const std::string holder = NewHolderId();
  // The lease is held in every target this instance writes, so that an instance of another
  // declaration (one target more or fewer, during a rolling deploy) that writes any of them
  // waits for it, wherever its own targets begin.
  std::vector<std::string> targets;
  for (const Stage& s : declaration->stages) targets.push_back(s.target);
  std::sort(targets.begin(), targets.end());
  targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
  for (const std::string& target : targets) {
    if (absl::Status s = couch.EnsureDatabase(target); !s.ok()) return Fail(s);
  }
  // While they are held, the leases are renewed from threads of their own (each on a
  // connection of its own, declared before the leases so that it outlives their threads) when
  // this one is busy for long: a batch whose Map calls take longer than --lease-timeout must
  // not let another instance take them.
  std::vector<std::unique_ptr<couchdb::CouchClient>> lease_http;
  std::vector<std::unique_ptr<CouchDb>> lease_couch;
  std::vector<CouchDb*> lease_connections;
  for (size_t i = 0; i < targets.size(); ++i) {
    lease_http.push_back(std::make_unique<couchdb::CouchClient>(http_options));
    lease_couch.push_back(std::make_unique<CouchDb>(*lease_http.back()));
    lease_connections.push_back(lease_couch.back().get());
  }
  // A write request may take half the lease's timeout (CouchDB's request timeout at most):
  // the next holder waits that long past the expiry before it writes.
  LeaseSet lease(couch, targets, declaration->name, holder, lease_timeout, lease_renew,
                 std::min(lease_timeout / 2, http_options.timeout));
  lease.RenewInBackground(lease_connections);
  options.fence = &lease;
  options.status_holder = holder;
  options.status_every = lease_renew;
  options.stopping = [] { return stop_requested.load(); };

  // A server away: said when first seen and then at most every kServiceNoteInterval, each
  // try waiting longer (returned); said again once it answers.
  Outage outage;
  auto note_away = [&](const absl::Status& failure, absl::string_view next) {
    const absl::Time now = absl::Now();
    const std::string server = AwayServer(failure, once);
    if (outage.server != server) outage = Outage{.server = server, .since = now};
    if (now - outage.last_note >= kServiceNoteInterval) {
      cli::StderrLines() << "cnp derive: " << declaration->name << ": "
                         << Printable(couchdb::RedactCredentials(failure.message())) << "; " << next << " "
                         << absl::FormatDuration(outage.retry_delay) << " (nothing is skipped)\n";
      outage.last_note = now;
    }
    const absl::Duration delay = outage.retry_delay;
    outage.retry_delay = std::min(outage.retry_delay * 2, kMaxServiceRetryDelay);
    return delay;
  };
  auto note_back = [&] {
    if (outage.server.empty()) return;
    cli::StderrLines() << "cnp derive: " << declaration->name << ": " << outage.server << " answers again (after "
                       << absl::FormatDuration(absl::Trunc(absl::Now() - outage.since, absl::Milliseconds(100)))
                       << ")\n";
    outage = Outage{};
  };
  options.batch_done = note_back;

  while (!stop_requested) {
    // Wait for the lease.
    bool said_waiting = false;
    // --once: a holder of this host that has ended, whose lease is waited out, and when it
    // expires (unless it renews it after all: then it is alive, in a pid namespace of its own).
    std::string ended_holder;
    absl::Time ended_holder_expiry = absl::InfiniteFuture();
    while (!stop_requested) {
      absl::StatusOr<bool> acquired = lease.TryAcquire();
      if (!acquired.ok()) {
        if (AwayServer(acquired.status(), once).empty()) return Fail(acquired.status());
        const absl::Duration delay = note_away(acquired.status(), "trying the lease again in");
        for (const absl::Time until = absl::Now() + delay; !stop_requested && absl::Now() < until;) {
          absl::SleepFor(std::min(until - absl::Now(), absl::Milliseconds(100)));
        }
        continue;
      }
      note_back();
      if (*acquired) break;
      if (lease.other_holder().empty()) {
        // Another instance wrote it between our read and our write: the next read says who.
        absl::SleepFor(lease.wait_hint());
        continue;
      }
      if (once && lease.other_holder() != ended_holder &&
          HolderEndedOnThisHost(lease.other_holder())) {
        // Killed, or its host restarted: nothing does the work until the lease expires, and a
        // cron job's run that left it would say everything is well for as long.
        ended_holder = lease.other_holder();
        ended_holder_expiry = absl::Now() + lease.wait_hint();
        cli::StderrLines() << absl::StrCat(
            "cnp derive: ", declaration->name, ": the lease is held by ", Printable(ended_holder),
            " (in ", lease.blocked_in(), "), a process of this host that has ended; taking the "
            "lease over once it expires, in ",
            absl::FormatDuration(absl::Trunc(lease.wait_hint(), absl::Milliseconds(100))), "\n");
        said_waiting = true;
      }
      // Waited out until its expiry, and the round after it (the loop sleeps up to `poll`
      // between reads), with a second of slack: still held by it then, it renewed the lease,
      // and is alive after all.
      const bool ended_holder_waited =
          once && lease.other_holder() == ended_holder &&
          absl::Now() < ended_holder_expiry + poll + absl::Seconds(1);
      if (once && !ended_holder_waited) {
        // The holder is doing the work (a follower keeps it caught up): nothing to wait for,
        // and nothing for a cron job to alarm about.
        cli::StderrLines() << absl::StrCat(
            "cnp derive: ", declaration->name, ": the lease is held by ",
            Printable(lease.other_holder()), " (in ", lease.blocked_in(), ", for another ",
            absl::FormatDuration(absl::Trunc(lease.wait_hint(), absl::Milliseconds(100))),
            " unless it renews it), which does the work; exiting (--once)\n");
        return 0;
      }
      if (!said_waiting) {
        // One write, so that a reader (a log collector, a test) never sees half the line.
        cli::StderrLines() << absl::StrCat("cnp derive: ", declaration->name,
                                  ": waiting for the lease held by ",
                                  Printable(lease.other_holder()), " (in ", lease.blocked_in(),
                                  ")\n");
        said_waiting = true;
      }
      absl::SleepFor(std::min(poll, lease.wait_hint() + absl::Milliseconds(20)));
    }
    if (stop_requested) break;
    cli::StderrLines() << "cnp derive: " << declaration->name << ": holding the lease as " << holder << "\n";
    if (absl::Duration wait = lease.hold_off(); wait > absl::ZeroDuration()) {
      cli::StderrLines() << "cnp derive: " << declaration->name << ": writing nothing for "
                << absl::FormatDuration(absl::Ceil(wait, absl::Milliseconds(100)))
                << ", until the earlier holder's write requests can no longer be applied\n";
    }
    // Renewing meanwhile; a stop signal ends the wait.
    bool lost = false;
    while (!stop_requested && !lost && lease.hold_off() > absl::ZeroDuration()) {
      absl::StatusOr<bool> renewed = lease.RenewIfDue();
      // CouchDB away: tried again on the next round; the writes wait for a renewal anyway.
      if (!renewed.ok() && AwayServer(renewed.status(), once).empty()) return Fail(renewed.status());
      lost = renewed.ok() && !*renewed;
      absl::SleepFor(std::min(lease.hold_off(), absl::Milliseconds(100)));
    }

    // A cnp-server that does not answer, or a CouchDB that does not serve (restarting, or down),
    // is no fault of the documents: that Deriver is dropped, and after a delay a new one starts
    // over from the checkpoints, so nothing is skipped or recorded as failed (as a dropped feed
    // is reopened).
    int64_t earlier_errors = 0;  // written by the Derivers of this hold dropped for a server away
    while (!stop_requested && !lost) {
      absl::Status failure;
      {
        // A stop is asked between batches (options.stopping), not before each write: the
        // batch in hand, mapped already, is written and checkpointed rather than thrown away.
        Deriver deriver(*declaration, couch, **cnp, options, cli::StderrLines(),
                        [&]() -> absl::StatusOr<bool> { return lease.RenewIfDue(); }, &prefetch);
        failure = deriver.Start();
        absl::Time status_written = absl::InfinitePast();
        while (failure.ok() && !stop_requested) {
          absl::StatusOr<int64_t> handled = deriver.CatchUp();
          if (IsLeaseLost(handled.status())) {
            lost = true;
            break;
          }
          if (absl::IsCancelled(handled.status()) && stop_requested) break;
          if (!handled.ok()) {
            failure = handled.status();
            // Not while a server is away: CouchDB would not take it, and the run goes on.
            if (!client::IsServerUnreachable(failure) && !couchdb::IsCouchDbUnavailable(failure)) {
              (void)deriver.WriteStatus(holder);
            }
            break;
          }
          note_back();
          // The status document says what changed, and that someone is alive.
          if (*handled > 0 || absl::Now() - status_written >= lease_renew) {
            if (absl::Status s = deriver.WriteStatus(holder); !s.ok()) {
              failure = s;
              break;
            }
            status_written = absl::Now();
          }
          if (once) {
            lease.Release();
            deriver.LogErrorsLeftOut(/*final=*/true);
            int64_t errors = earlier_errors;
            for (const StageProgress& p : deriver.progress()) errors += p.errors;
            if (errors == 0) {
              cli::StderrLines() << "cnp derive: " << declaration->name << ": caught up\n";
              return 0;
            }
            // A cron job must tell this from a clean run: the errors' documents are passed
            // (the next run does not meet them again), their rows left as they were.
            cli::StderrLines() << "cnp derive: " << declaration->name << ": caught up, but " << errors
                      << " document error(s) were recorded in _local/cnp-derive:" << declaration->name
                      << ":errors of " << deriver.home() << " (exit status " << kExitDocumentErrors << ")\n";
            return kExitDocumentErrors;
          }
          absl::StatusOr<bool> renewed = lease.RenewIfDue();
          if (!renewed.ok()) {
            failure = renewed.status();
            break;
          }
          if (!*renewed) {
            lost = true;
            break;
          }
          failure = deriver.CheckSourcesIfDue();
          if (failure.ok()) failure = deriver.WaitForChanges(std::min(poll, lease_renew));
        }
        // Stopped mid-way: the status document says how far this run got.
        if (stop_requested) (void)deriver.WriteStatus(holder);
        // Only those written: the others are of a batch the next Deriver does again.
        earlier_errors += deriver.flushed_errors();
      }
      // A write refused by the lease's fence (its deadline passed) ends the hold as a lost lease.
      if (IsLeaseLost(failure)) {
        lost = true;
        cli::StderrLines() << "cnp derive: " << declaration->name << ": " << Printable(failure.message()) << "\n";
        break;
      }
      if (failure.ok()) break;  // stopped, or the lease was lost
      if (IsSourceRecreated(failure)) {
        // A new Deriver's Start removes what was derived from the earlier database.
        cli::StderrLines() << "cnp derive: " << declaration->name << ": " << Printable(failure.message()) << "\n";
        continue;
      }
      if (AwayServer(failure, once).empty()) {
        lease.Release();
        return Fail(failure);
      }
      if (once && absl::Now() - outage.since >= service_wait) {
        lease.Release();
        return Fail(absl::UnavailableError(absl::StrCat(
            failure.message(), "; it has not answered for ",
            absl::FormatDuration(absl::Trunc(absl::Now() - outage.since, absl::Milliseconds(100))),
            " (--service-wait); a later run goes on from the checkpoints")));
      }
      absl::Duration delay = note_away(failure, "trying again from the checkpoints in");
      // A --once run gives up at --service-wait, not at the end of a backoff that outlasts it.
      if (once) delay = std::min(delay, outage.since + service_wait - absl::Now());
      // The wait holds the lease (renewing it, while CouchDB lets it) and ends early on a stop
      // signal. A lease that expired meanwhile is renewed once CouchDB is back, unless another
      // instance took it; the writes wait for a renewal either way.
      const absl::Time until = absl::Now() + delay;
      while (!stop_requested && !lost && absl::Now() < until) {
        absl::StatusOr<bool> renewed = lease.RenewIfDue();
        if (!renewed.ok() && AwayServer(renewed.status(), once).empty()) return Fail(renewed.status());
        lost = renewed.ok() && !*renewed;
        absl::SleepFor(std::min(until - absl::Now(), absl::Milliseconds(100)));
      }
      // gRPC's own reconnection backoff would otherwise delay the next try by up to minutes.
      (*cnp)->ResetConnectionBackoff();
    }
    if (lost) {
      // The leases still held are not kept while waiting: an instance holding the lost one may
      // be waiting for them.
      lease.Release();
      if (!stop_requested) {
        cli::StderrLines() << "cnp derive: " << declaration->name << ": lost the lease; waiting for it again\n";
      }
    }
  }
  lease.Release();
  cli::StderrLines() << "cnp derive: " << declaration->name << ": stopped\n";
  // --once stopped before it caught up (followers stop so whenever they stop): as cnp sync
  // --once, 130 or 143, so that a cron job does not take it for a run that caught up.
  if (once && stop_signal.load() != 0) return 128 + stop_signal.load();
  return 0;
}

}  // namespace cnp::derive
