// `cnp sync COUCHDB_URL REGISTRY_DB`: keeps the design documents registered with
// `cnp upload --register` in place in every database they target (see registry_sync.h).
#pragma once

#include <string>
#include <vector>

#include "client/cli/command_io.h"

namespace cnp::client {

// argv[0] is "cnp sync". Returns the exit status: 0 all in place, 1 a failure, 2 a usage error.
int RunSyncCommand(int argc, char** argv);

namespace sync {

// The same, with the streams and environment given (for tests).
int RunSync(const std::vector<std::string>& args, cli::CommandIo io);

}  // namespace sync
}  // namespace cnp::client
