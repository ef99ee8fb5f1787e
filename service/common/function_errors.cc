#include "service/common/function_errors.h"

namespace cnp {

using worker::v1::Reply;

void CountFunctionErrors(const Reply& reply, FunctionErrorSink sink) {
  // Functions whose module raised when imported (or is remembered to have raised), which failed
  // the task or a Resolve's entry: once per reply.
  for (const std::string& function : reply.import_raised()) sink(function);
  switch (reply.kind_case()) {
    case Reply::kMap:
      for (const v1::MapResult& result : reply.map().results()) {
        for (const v1::FunctionError& e : result.errors()) sink(e.function());
      }
      break;
    case Reply::kReduce:
      for (const v1::FunctionError& e : reply.reduce().errors()) sink(e.function());
      break;
    case Reply::kValidate:
      if (reply.validate().has_error()) sink(reply.validate().error().function());
      break;
    case Reply::kDesign:
      if (reply.design().has_error()) sink(reply.design().error().function());
      break;
    default:
      break;
  }
}

}  // namespace cnp
