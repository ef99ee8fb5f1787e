// Whether text can name a Python module ("myviews.towns"), checked without Python: by the
// adapter and cnp-server for --preload-module and --allow-module, so that a typo is refused
// when it is given rather than logged by every worker that starts (or, in --allow-module,
// found when every call is refused).
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace cnp {

// Dotted parts, none empty, each of letters, digits and '_' and not starting with a digit.
// Bytes outside ASCII pass: which of them make an identifier is Python's to say, and the
// worker asks it (service/worker/function_name.h's ParseModuleName).
bool LooksLikeModuleName(absl::string_view text);

// What follows "--preload-module=TEXT: " when TEXT is no module name (with a note that there
// are no wildcards for a '*'); empty when it looks like one.
std::string WhyNotAModuleName(absl::string_view text);

}  // namespace cnp
