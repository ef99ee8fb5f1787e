// What each kind of function is passed, and whether a function's declared parameters can take
// it, by the rule cnp-worker calls with (service/worker/accepted_arguments.h; a reduce has its
// own, in reduce_task.cc). A function that cannot (a reduce or a validate_doc_update named as a
// map) fails every call with a TypeError: a view that stays empty, every write refused. cnp
// check, cnp upload and cnp derive say so where the function is named, before it is used.
#pragma once

#include <string>

#include "cnp/v1/functions.pb.h"

namespace cnp {

enum class FunctionRole {
  kMap,
  kReduce,
  kValidate,
  kFilter,
  kShow,
  kUpdate,
  kList,           // f(head, req), calling get_row() and send()
  kGeneratorList,  // a generator f(head, req, rows)
  kRewrite,        // f(req), called with the request alone
};

// Why every call of a function with `parameters` in `role` would fail, or "" when it would not.
std::string ParameterProblem(FunctionRole role,
                             const v1::ResolvedFunction::Parameters& parameters);

}  // namespace cnp
