// The flags of a command line, walked the way absl::ParseCommandLine will read them, so that
// cnp-server and cnp-adapter can judge them first: absl's own errors ("Unknown command line flag
// 'wrkers'", "Illegal value 'lots' specified for flag 'workers'") exit 1 with nothing to act on,
// where every other bad setting exits 2 and says what to write. One walk for both programs; each
// says what it checks in the flags it is given.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cnp {

// One flag as written: --name=value, -name value, --noflag...
struct WrittenFlag {
  std::string name;  // as absl spells it (max_queue)
  // The flag, or null for one that is not the program's own (see JudgeCommandLineFlags).
  absl::CommandLineFlag* flag = nullptr;
  // What follows '=', or the next argument for a flag that is not boolean (as absl reads
  // "--workers 2"); none when neither was written.
  std::optional<std::string> value;
  bool value_is_next_argument = false;
};

// Calls `judge` for each flag of `argv` (argv[0] the program, not judged; names in absl's
// spelling, as SplitCommandLine::others holds them) up to "--", and returns the first error it
// returns. A flag for which `ours` does not hold is passed on as unknown (flag null): absl's own
// flags (--flagfile, --fromenv, --tryfromenv, --undefok) read settings past these checks or
// make absl ignore a misspelt one, and --help lists none of them. A boolean's --noNAME is not
// passed on when NAME is ours (absl reads it as NAME=false).
absl::Status JudgeCommandLineFlags(const std::vector<std::string>& argv,
                                   const std::function<bool(const absl::CommandLineFlag&)>& ours,
                                   const std::function<absl::Status(const WrittenFlag&)>& judge);

// "unknown flag --wrkers; did you mean --workers? (cnp-server --help lists every flag)": the
// closest of `candidates` (absl's spelling) is offered when one is close enough.
absl::Status UnknownFlagError(const std::string& name, const std::vector<std::string>& candidates,
                              const std::string& program);

// A flag name in absl's spelling (max_queue) as a user types it (max-queue).
std::string DashedFlagName(std::string name);

// What a flag's value must look like, in the words of an error message: "a whole number".
std::string ExpectedFlagValue(const absl::CommandLineFlag& flag);

// For a whole number past what `flag` holds ("99999999999999" for an int): the bound, since
// "expected a whole number" for what is one sent the reader looking for a typo. Empty when
// `text` is no whole number, or is one the flag holds.
std::string OutOfWholeNumberRange(const absl::CommandLineFlag& flag, absl::string_view text);

// The value written for one of the program's own flags (`written.flag` set), judged as absl
// will read it: OK, or INVALID_ARGUMENT saying what to write ("--workers=lots: expected a whole
// number; write e.g. --workers=0 (the default)"), for a value absl would refuse, none given,
// or an empty one when `refuses_empty`.
absl::Status CheckFlagValue(const WrittenFlag& written, bool refuses_empty);

}  // namespace cnp
