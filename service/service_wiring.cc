#include "service/service_wiring.h"

#include "service/couchdb/session_handler.h"
#include "service/upload/uploader.h"

namespace cnp {

std::function<std::unique_ptr<rpc::SessionHandler>()> MakeSessionFactory(pool::TaskRunner& runner) {
  return couchdb::QuerySessionFactory(runner);
}

rpc::UploadHandler MakeUploadHandler(pool::TaskRunner& runner) {
  auto uploader = std::make_shared<const upload::Uploader>(runner);
  return [uploader](const v1::UploadRequest& request, const rpc::UploadEmit& emit) {
    return uploader->Run(request, emit);
  };
}

}  // namespace cnp
