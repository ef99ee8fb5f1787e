// cnp map | reduce | validate | resolve: try named functions against a running cnp-server
// without CouchDB.
#pragma once

namespace cnp::cli {

int RunMapCommand(int argc, char** argv);
int RunReduceCommand(int argc, char** argv);
int RunValidateCommand(int argc, char** argv);
int RunResolveCommand(int argc, char** argv);

}  // namespace cnp::cli
