#include "service/service_wiring.h"

#include "service/couchdb/session_handler.h"
#include "service/upload/uploader.h"

namespace cnp {

std::function<std::unique_ptr<rpc::SessionHandler>()> MakeSessionFactory(pool::TaskRunner& runner) {
  return couchdb::QuerySessionFactory(runner);
}

rpc::UploadHandler MakeUploadHandler(pool::TaskRunner& runner, const config::ServerConfig& config) {
  upload::Uploader::Options options;
  options.yaml_limits.max_file_bytes = config.max_yaml_bytes;
  options.yaml_limits.max_nodes = config.max_yaml_nodes;
  options.yaml_limits.max_json_bytes = config.max_design_bytes;
  options.max_couchdb_response_bytes = config.max_couchdb_response_bytes;
  options.couchdb_allow = upload::CouchAllowList::FromPrefixes(config.couchdb_allow).value();
  auto uploader = std::make_shared<const upload::Uploader>(runner, std::move(options));
  return [uploader](const v1::UploadRequest& request, const rpc::UploadEmit& emit) {
    return uploader->Run(request, emit);
  };
}

}  // namespace cnp
