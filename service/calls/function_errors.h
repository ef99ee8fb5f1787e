// The documents or items on which a user's function raised, as operators see them: counted in
// cnp_function_errors_total. They are logged, a few lines a second with their tracebacks, from
// the reply's function_logs (service/common/function_log.h).
#pragma once

#include "worker.pb.h"

namespace cnp::calls {

// Counts every FunctionError a reply carries (none for a reply of another kind).
void CountFunctionErrors(const worker::v1::Reply& reply);

}  // namespace cnp::calls
