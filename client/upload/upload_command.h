// `cnp upload` and `cnp check`: send YAML design documents to the cnp service's Upload RPC and
// print what it reports as it goes.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "client/cli/command_io.h"

namespace cnp::client {

// argv[0] is the command's name as the user sees it ("cnp upload", "cnp check"). They return
// the process exit status: 0 success, 1 a failure, 2 a usage error.
int RunUploadCommand(int argc, char** argv);
int RunCheckCommand(int argc, char** argv);

namespace upload {

// The same, with the streams and environment given (for tests).
using ::cnp::cli::CommandIo;
int RunUpload(const std::vector<std::string>& args, CommandIo io);
int RunCheck(const std::vector<std::string>& args, CommandIo io);

}  // namespace upload
}  // namespace cnp::client
