#include "service/service_wiring.h"

#include "service/couchdb/session_handler.h"

namespace cnp {

std::function<std::unique_ptr<rpc::SessionHandler>()> MakeSessionFactory(pool::TaskRunner& runner) {
  return couchdb::QuerySessionFactory(runner);
}

rpc::UploadHandler MakeUploadHandler(pool::TaskRunner&) { return nullptr; }

}  // namespace cnp
