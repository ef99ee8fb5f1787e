// Where a cnp subcommand run in-process writes and what environment it reads: the process's own
// for the real command, strings and a given environment for tests.
#pragma once

#include <ostream>

#include "client/couch/couch_credentials.h"

namespace cnp::cli {

struct CommandIo {
  std::ostream& out;
  std::ostream& err;
  client::couch::GetEnv env = client::couch::ProcessEnv;
};

}  // namespace cnp::cli
