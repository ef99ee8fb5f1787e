#include "service/worker/call_context.h"

namespace cnp::worker {

CallContext& Context() {
  static CallContext context;
  return context;
}

}  // namespace cnp::worker
