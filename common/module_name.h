// Whether text can name a Python module ("myviews.towns"), checked without Python: by the
// adapter and cnp-server for --preload-module and --allow-module, so that a typo is refused
// when it is given rather than logged by every worker that starts (or, in --allow-module,
// found when every call is refused).
#pragma once

#include "absl/strings/string_view.h"

namespace cnp {

// Dotted parts, none empty, each of letters, digits and '_' and not starting with a digit.
// Bytes outside ASCII pass: which of them make an identifier is Python's to say, and the
// worker asks it (service/worker/function_name.h's ParseModuleName).
bool LooksLikeModuleName(absl::string_view text);

// What follows "--preload-module=TEXT: " when it is not.
inline constexpr char kNotAModuleName[] =
    "not a module name; write the module's dotted name, as `import` takes it (e.g. "
    "myviews.towns)";
// And after that, for an --allow-module entry with a '*' in it.
inline constexpr char kNoModuleWildcards[] =
    "; there are no wildcards: a module allowed covers the modules below it";

}  // namespace cnp
