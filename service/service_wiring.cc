#include "service/service_wiring.h"

namespace cnp {

std::function<std::unique_ptr<rpc::SessionHandler>()> MakeSessionFactory(pool::TaskRunner&) {
  return nullptr;
}

rpc::UploadHandler MakeUploadHandler(pool::TaskRunner&) { return nullptr; }

}  // namespace cnp
