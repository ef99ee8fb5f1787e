#include "common/function_parameters.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cnp {
namespace {

struct Passed {
  const char* role;  // "a map function"
  int count;         // the arguments passed to a function that takes them all
  const char* what;  // what they are
};

Passed PassedTo(FunctionRole role) {
  switch (role) {
    case FunctionRole::kMap: return {"a map function", 1, "the document"};
    case FunctionRole::kReduce: return {"a reduce function", 3, "keys, values, rereduce"};
    case FunctionRole::kValidate:
      return {"a validate_doc_update", 4, "the new document, the old one, the user, the security object"};
    case FunctionRole::kFilter: return {"a filter", 2, "the document, the request"};
    case FunctionRole::kShow: return {"a show function", 2, "the document, the request"};
    case FunctionRole::kUpdate: return {"an update function", 2, "the document, the request"};
    case FunctionRole::kList: return {"a list function", 2, "the head, the request"};
    case FunctionRole::kGeneratorList:
      return {"a generator list function", 3, "the head, the request, the rows"};
    case FunctionRole::kRewrite: return {"a rewrite function", 1, "the request"};
  }
  return {"a function", 1, "its argument"};
}

// How many arguments the worker gives a function of `role` declared with `parameters`.
int Given(FunctionRole role, const v1::ResolvedFunction::Parameters& parameters, int count) {
  switch (role) {
    case FunctionRole::kMap:  // called with the document alone, always
    case FunctionRole::kRewrite:  // and with the request alone
      return 1;
    case FunctionRole::kReduce:  // (keys, values) when it declares exactly two
      return !parameters.varargs() && parameters.positional() == 2 ? 2 : 3;
    default:  // the first N when it declares fewer, else all of them
      return !parameters.varargs() && parameters.positional() > 0 &&
                     parameters.positional() < count
                 ? parameters.positional()
                 : count;
  }
}

std::string Arguments(int n) { return n == 1 ? "1 argument" : absl::StrCat(n, " arguments"); }

}  // namespace

std::string ParameterProblem(FunctionRole role,
                             const v1::ResolvedFunction::Parameters& parameters) {
  const Passed passed = PassedTo(role);
  const std::string every_call = ": every call would fail with a TypeError";
  if (!parameters.keyword_only_required().empty()) {
    return absl::StrCat("its keyword-only parameters without a default (",
                        absl::StrJoin(parameters.keyword_only_required(), ", "),
                        ") are never given", every_call);
  }
  const int given = Given(role, parameters, passed.count);
  const std::string as = absl::StrCat("as ", passed.role, " it is given ", Arguments(given), " (",
                                      passed.what, ")");
  if (parameters.required() > given) {
    return absl::StrCat(as, ", but it requires ", parameters.required(),
                        " (its positional parameters without a default)", every_call);
  }
  if (!parameters.varargs() && parameters.positional() < given) {
    return absl::StrCat(as, ", but it takes ",
                        parameters.positional() == 0 ? "none" : absl::StrCat(parameters.positional()),
                        every_call);
  }
  return "";
}

}  // namespace cnp
