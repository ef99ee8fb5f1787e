// cnp: the command line of cnp-server.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "client/cli/command_line_credentials.h"
#include "client/cli/function_commands.h"
#include "client/derive/derive_command.h"
#include "client/sync/sync_command.h"
#include "client/upload/upload_command.h"
#include "common/grpc_client_log.h"
#include "common/version.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"map", cnp::cli::RunMapCommand, "run map functions on documents"},
    {"reduce", cnp::cli::RunReduceCommand, "run reduce functions (or rereduce)"},
    {"validate", cnp::cli::RunValidateCommand, "run a validate_doc_update function"},
    {"resolve", cnp::cli::RunResolveCommand, "import functions and show their |version"},
    {"upload", cnp::client::RunUploadCommand, "upload design documents from YAML to CouchDB"},
    {"check", cnp::client::RunCheckCommand, "check design-document YAML without writing"},
    {"derive", cnp::derive::RunDeriveCommand, "keep map/reduce results as documents (qvarn-mr)"},
    {"sync", cnp::client::RunSyncCommand, "keep registered design documents in every database"},
};

int Help(FILE* out) {
  std::fprintf(out,
               "usage: cnp COMMAND [ARGS...]   (cnp COMMAND --help for details; cnp --version)\n\n"
               "Commands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\nEvery command but sync and upload --remove talks to a running cnp-server at\n"
               "--target (default: $CNP_TARGET or unix:/tmp/cnp-<uid>/cnp.sock); those two talk\n"
               "to CouchDB itself.\n");
  return out == stdout ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything else, however long the command then runs: the commands parse the copies.
  bool scrubbed = false;
  std::vector<std::string> arguments =
      cnp::cli::TakeArgumentsScrubbingCredentials(argc, argv, scrubbed);
  if (scrubbed) std::fprintf(stderr, "cnp: %s\n", cnp::cli::kCommandLinePasswordWarning);
  std::vector<char*> copies;
  for (std::string& argument : arguments) copies.push_back(argument.data());
  copies.push_back(nullptr);
  argv = copies.data();
  cnp::RouteGrpcLogToStderr("cnp");
  if (argc < 2) return Help(stderr);
  std::string name = argv[1];
  // `cnp help map` is `cnp map --help` (it printed the list of commands, as `cnp help` does).
  std::string help_flag = "--help";
  if (name == "help" && argc >= 3) {
    name = argv[2];
    argv[1] = argv[2];
    argv[2] = help_flag.data();
    argc = 3;
  }
  if (name == "--help" || name == "-h" || name == "help") return Help(stdout);
  if (name == "--version" || name == "version") {
    std::printf("cnp %s\n", std::string(cnp::kCnpVersion).c_str());
    return 0;
  }
  if (name.rfind("--version=", 0) == 0 || name.rfind("-version=", 0) == 0) {
    std::fprintf(stderr, "cnp: --version takes no value; write --version\n");
    return 2;
  }
  for (const Command& c : kCommands) {
    if (name == c.name) {
      std::string program = std::string("cnp ") + c.name;
      argv[1] = program.data();
      return c.run(argc - 1, argv + 1);
    }
  }
  std::fprintf(stderr, "cnp: unknown command '%s'\n\n", name.c_str());
  return Help(stderr);
}
