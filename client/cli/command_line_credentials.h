// Passwords given in a URL on the command line (`cnp sync http://admin:pw@host reg`). The
// command line is in /proc/PID/cmdline, which every user of the host may read, for as long as
// the process runs, and cnp sync and cnp derive run for days. cnp keeps its own copy of the
// arguments and blanks the user info in the original ones, which is what /proc shows.
#pragma once

#include <string>
#include <vector>

namespace cnp::cli {

// Where the user info of a URL in `arg` is: after its "://", up to the last '@' of the
// argument (the rule of common/couchdb/couch_url.h, so a password holding '/' or '@' is
// covered whole). {0, 0} when there is none.
struct UserInfoSpan {
  size_t offset = 0;
  size_t length = 0;
};
UserInfoSpan FindUserInfo(const std::string& arg);

// Copies argv[0..argc) for the command to parse, then overwrites in place, with 'x' of the same
// length, the user info of every argument that holds a URL with one. `scrubbed` says whether
// any was.
std::vector<std::string> TakeArgumentsScrubbingCredentials(int argc, char** argv,
                                                           bool& scrubbed);

// What cnp prints (once) when it scrubbed a password: it was visible until then.
extern const char kCommandLinePasswordWarning[];

}  // namespace cnp::cli
