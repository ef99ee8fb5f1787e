// cnp derive: materialized map/reduce results as ordinary documents (issue 11; qvarn-mr's idea).
#pragma once

namespace cnp::derive {

int RunDeriveCommand(int argc, char** argv);

}  // namespace cnp::derive
