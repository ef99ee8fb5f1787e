// "did you mean ...?" for a function name that does not resolve (a typo in `cnp check`, `cnp
// upload` or an add_fun): the closest existing name, by common/closest_name.h's rule.
#pragma once

#include <optional>
#include <string>

#include "service/worker/function_name.h"
#include "service/worker/module_policy.h"

namespace cnp::worker {

// When `name`'s module is imported and has no such attribute: the module's closest public
// callable. When a module on the way does not exist (no spec: not a module whose code failed,
// which is no typo): the closest module beside it (in its package, or on the path for a
// top-level one) that --allow-module covers. The name as it would be written, `|version`
// kept; nullopt when nothing is close. Requires the GIL; imports nothing but the standard
// library's pkgutil and importlib.util, and never leaves a Python error set. For error paths
// only: it lists a package's or the path's modules.
std::optional<std::string> SuggestFunctionName(const FunctionName& name,
                                               const ModulePolicy& policy);

}  // namespace cnp::worker
