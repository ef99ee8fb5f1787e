#include "service/calls/function_errors.h"

#include "service/metrics/service_metrics.h"

namespace cnp::calls {
namespace {

using worker::v1::Reply;

// The log line about it, with its traceback, comes with the reply's function_logs
// (service/common/function_log.h), from the worker that caught it.
void Count(const v1::FunctionError& e) { metrics::FunctionError(e.function()); }

}  // namespace

void CountFunctionErrors(const Reply& reply) {
  switch (reply.kind_case()) {
    case Reply::kMap:
      for (const v1::MapResult& result : reply.map().results()) {
        for (const v1::FunctionError& e : result.errors()) Count(e);
      }
      break;
    case Reply::kReduce:
      for (const v1::FunctionError& e : reply.reduce().errors()) Count(e);
      break;
    case Reply::kValidate:
      if (reply.validate().has_error()) Count(reply.validate().error());
      break;
    case Reply::kDesign:
      if (reply.design().has_error()) Count(reply.design().error());
      break;
    default:
      break;
  }
}

}  // namespace cnp::calls
