// The registry's documents, read a page of _all_docs at a time: a registry of many entries is
// more than one answer may hold (CouchClient refuses an answer past its max_response_bytes),
// and read whole it stopped every cnp sync pass and every --remove.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "common/couchdb/couch_client.h"
#include "rapidjson/document.h"

namespace cnp::client::sync {

// Rows asked for in one page; halved, down to one, while a page is too long to read.
inline constexpr int kRegistryPage = 500;

// Calls `each` with every document of `registry`, in id order. The first error ends the read
// and is returned: NOT_FOUND (an HTTP 404) when the registry database does not exist, an
// HTTP error naming `what` ("reading the registry \"reg\""), RESOURCE_EXHAUSTED for one
// document larger than an answer may be, UNKNOWN for an answer that is not _all_docs'.
// Numbers are read exactly (an entry's design document is written on as it is).
absl::Status ForEachRegistryDocument(couchdb::CouchClient& couch, const std::string& registry,
                                     const std::string& what,
                                     const std::function<void(const rapidjson::Value&)>& each);

}  // namespace cnp::client::sync
