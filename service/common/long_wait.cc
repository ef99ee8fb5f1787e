#include "service/common/long_wait.h"

namespace cnp {
namespace {
thread_local LongWaitListener* t_listener = nullptr;
}  // namespace

void SetLongWaitListener(LongWaitListener* listener) { t_listener = listener; }

LongWait::LongWait() : listener_(t_listener) {
  if (listener_ != nullptr) listener_->LongWaitBegins();
}

LongWait::~LongWait() {
  if (listener_ != nullptr) listener_->LongWaitEnds();
}

}  // namespace cnp
