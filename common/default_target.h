// Where cnp-server listens when nobody says otherwise, shared by cnp-server, cnp-adapter and cnp.
#pragma once

#include <sys/types.h>

#include <string>

namespace cnp {

// $CNP_TARGET if set; otherwise the host's default unix socket, "unix:/tmp/cnp-<uid>/cnp.sock",
// one per user so that every CouchDB query-server process of that user shares one service.
std::string DefaultTarget();

// The directory holding the default socket, its lock and the log of a service started on
// demand: "/tmp/cnp-<uid>", unless another user has made that (a local denial of service the
// clients would refuse); then "$XDG_RUNTIME_DIR/cnp" or "$HOME/.cnp", whichever is this user's.
std::string DefaultRuntimeDir();

// DefaultRuntimeDir's choice for `uid`, with /tmp and the environment given.
std::string RuntimeDirFor(uid_t uid, const std::string& tmp, const char* xdg_runtime_dir,
                          const char* home);

}  // namespace cnp
