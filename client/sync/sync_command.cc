#include "client/sync/sync_command.h"

#include <fstream>
#include <iostream>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/sync/registry_sync.h"
#include "client/upload/couch_credentials.h"
#include "client/upload/event_printer.h"
#include "service/upload/couch_client.h"
#include "service/upload/couch_url.h"

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
_db_updates needs a server admin and CouchDB 2 or later.

Options:
  --once                    one pass over the existing databases, then exit
  --dry-run                 show what would change in each database; write nothing (implies
                            --once)
  --drop-unknown-fields     remove stored fields the registry's copy does not mention
  --ca-file=PATH            CA certificates (PEM) for an https:// CouchDB (default: the
                            system's CA store)
  --max-conflict-retries=N  how often a write that lost a race is retried (default: 3)
  --show-documents          print every design document as written
  -h, --help                this text

Credentials for CouchDB, first found wins: the URL's user:password@; CNP_COUCHDB_USER and
CNP_COUCHDB_PASSWORD; the entry for the URL's host in $NETRC, else ~/.netrc. They are never
printed.

Example:
  cnp upload --register cnp_registry http://admin:secret@localhost:5984 accounts.yml
  cnp sync http://admin:secret@localhost:5984 cnp_registry

Exit status: 0 when every design document is in place, 1 on any error, 2 on a usage error.
)";

struct Flags {
  bool help = false;
  bool once = false;
  bool dry_run = false;
  bool drop_unknown_fields = false;
  bool show_documents = false;
  std::string ca_file;
  int max_conflict_retries = 3;
  std::vector<std::string> positional;
};

absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& args) {
  Flags flags;
  bool options_done = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      flags.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    std::string name = arg;
    std::optional<std::string> value;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    auto take_value = [&]() -> absl::StatusOr<std::string> {
      if (value) return *value;
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(name + " needs a value");
      return args[++i];
    };
    bool* toggle = nullptr;
    if (name == "-h" || name == "--help") {
      toggle = &flags.help;
    } else if (name == "--once") {
      toggle = &flags.once;
    } else if (name == "--dry-run") {
      toggle = &flags.dry_run;
    } else if (name == "--drop-unknown-fields") {
      toggle = &flags.drop_unknown_fields;
    } else if (name == "--show-documents") {
      toggle = &flags.show_documents;
    } else if (name == "--ca-file") {
      absl::StatusOr<std::string> v = take_value();
      if (!v.ok()) return v.status();
      flags.ca_file = *v;
    } else if (name == "--max-conflict-retries") {
      absl::StatusOr<std::string> v = take_value();
      if (!v.ok()) return v.status();
      if (!absl::SimpleAtoi(*v, &flags.max_conflict_retries) || flags.max_conflict_retries < 1) {
        return absl::InvalidArgumentError("--max-conflict-retries needs a number of at least 1");
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option ", name));
    }
    if (toggle != nullptr) {
      if (value) return absl::InvalidArgumentError(name + " takes no value");
      *toggle = true;
    }
  }
  return flags;
}

absl::StatusOr<std::string> ReadCaFile(const std::string& path) {
  constexpr size_t kMaxCaBytes = 1 << 20;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--ca-file: cannot read ", path));
  std::string pem(kMaxCaBytes + 1, '\0');
  in.read(pem.data(), static_cast<std::streamsize>(pem.size()));
  pem.resize(static_cast<size_t>(in.gcount()));
  if (pem.size() > kMaxCaBytes || pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ca-file: ", path, " is not a PEM certificate file"));
  }
  return pem;
}

}  // namespace

int RunSync(const std::vector<std::string>& args, upload::CommandIo io) {
  std::string program = args.empty() ? "cnp sync" : args[0];
  absl::StatusOr<Flags> flags = ParseFlags(args);
  if (!flags.ok()) {
    io.err << program << ": " << flags.status().message() << " (see --help)\n";
    return 2;
  }
  if (flags->help) {
    std::string usage = kUsage;
    usage.replace(usage.find("%s"), 2, program);
    io.out << usage;
    return 0;
  }
  if (flags->positional.size() != 2) {
    io.err << program << ": expected COUCHDB_URL REGISTRY_DB (see --help)\n";
    return 2;
  }
  absl::StatusOr<upload::CouchCredentials> credentials =
      upload::FindCouchCredentials(flags->positional[0], io.env);
  if (!credentials.ok()) {
    io.err << program << ": " << cnp::upload::RedactCredentials(credentials.status().message())
           << "\n";
    return 2;
  }
  absl::StatusOr<cnp::upload::CouchUrl> url = cnp::upload::ParseCouchUrl(credentials->url);
  if (!url.ok()) {
    io.err << program << ": " << cnp::upload::RedactCredentials(url.status().message()) << "\n";
    return 2;
  }
  cnp::upload::CouchClient::Options options;
  options.base_url = url->base;
  options.username = credentials->username;
  options.password = credentials->password;
  if (!flags->ca_file.empty()) {
    absl::StatusOr<std::string> pem = ReadCaFile(flags->ca_file);
    if (!pem.ok()) {
      io.err << program << ": " << pem.status().message() << "\n";
      return 2;
    }
    options.ca_pem = *std::move(pem);
  }
  cnp::upload::CouchClient couch(std::move(options));

  upload::UploadTally tally;
  const upload::PrintOptions print{.show_documents = flags->show_documents};
  RegistrySync sync(couch, flags->positional[1],
                    {.dry_run = flags->dry_run,
                     .drop_unknown_fields = flags->drop_unknown_fields,
                     .max_conflict_retries = flags->max_conflict_retries},
                    [&](const v1::UploadEvent& event) {
                      upload::PrintEvent(event, print, io.out, io.err, tally);
                      io.out.flush();  // a long-running follower's log should not lag
                    });
  absl::Status status = flags->once || flags->dry_run ? sync.SyncAll()
                                                      : sync.Follow([] { return true; });
  upload::PrintSummary(tally, io.out);
  return status.ok() && tally.errors == 0 ? 0 : 1;
}

}  // namespace sync

int RunSyncCommand(int argc, char** argv) {
  return sync::RunSync(std::vector<std::string>(argv, argv + argc),
                       {.out = std::cout, .err = std::cerr});
}

}  // namespace cnp::client
