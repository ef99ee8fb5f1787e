// The stateless calls (service/calls) for the gRPC threads that still block, until the RPC
// handlers are coroutines themselves: each call runs its coroutine to completion on the
// calling thread, over the synchronous pool, which blocks that thread as it always has.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cnp/v1/functions.pb.h"
#include "service/calls/function_calls.h"
#include "service/pool/task_runner.h"

namespace cnp::rpc {

using CallOptions = calls::CallOptions;

// Each call consumes its request, as calls::FunctionCalls does; see there for what each does.
class FunctionCalls {
 public:
  FunctionCalls(pool::TaskRunner& runner, CallOptions options);
  ~FunctionCalls();

  absl::Status MapEncoded(std::string_view request, absl::Time deadline,
                          std::vector<std::string>& response);
  absl::Status Map(v1::MapRequest& request, absl::Time deadline, v1::MapResponse& response);
  absl::Status Reduce(v1::ReduceRequest& request, absl::Time deadline,
                      v1::ReduceResponse& response);
  absl::Status Validate(v1::ValidateRequest& request, absl::Time deadline,
                        v1::ValidateResponse& response);
  absl::Status CallDesignFunction(v1::DesignFunctionRequest& request, absl::Time deadline,
                                  v1::DesignFunctionResponse& response);
  absl::Status Resolve(v1::ResolveRequest& request, absl::Time deadline,
                       v1::ResolveResponse& response);

  absl::Time EffectiveDeadline(absl::Time client_deadline) const {
    return calls_.EffectiveDeadline(client_deadline);
  }
  const CallOptions& options() const { return calls_.options(); }

 private:
  class BlockingRunner;

  std::unique_ptr<BlockingRunner> runner_;
  calls::FunctionCalls calls_;
};

}  // namespace cnp::rpc
