// The functions a design document names, read from its JSON text in one streaming pass.
//
// CouchDB calls a design function by its path into the document: ["validate_doc_update"],
// ["filters","by_town"], ["views","v","map"] — a function section first, at most
// kMaxDesignFunctionPath keys in all (docs: couchdb-query-server.md, items 8 to 15). So the only
// strings of a design document anyone asks for are the ones at most that deep in those
// sections; everything else (attachments, options, a view's "lib", data) is read past and never
// kept. Reading past it builds nothing: a 60 MB document of zeros costs no more memory than its
// text, where a parsed tree of it cost 16 bytes per value (1 GB). A reader that is told to stop
// (its budget spent) stops there, before the rest of the document is read.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cnp::couchdb {

// The most keys of a design function's path: ["views","v","map"].
inline constexpr size_t kMaxDesignFunctionPath = 3;

// Sees one function: its path (1 to kMaxDesignFunctionPath keys, the first a function section)
// and the string there. Returns false to stop reading.
using DesignFunctionVisitor =
    absl::FunctionRef<bool(const std::vector<std::string>& path, std::string_view name)>;

// Calls `visit` for every function of design document `json`, in the document's order (a key
// given twice is seen twice). OK when the whole document was read or `visit` stopped the
// reading; INVALID_ARGUMENT, saying why and where, when `json` is not one JSON object or not
// UTF-8 (function names go into worker tasks as protobuf strings). A number past a double's
// range (CouchDB stores such integers) is read as any number: it is never a function.
absl::Status ReadDesignFunctions(std::string_view json, DesignFunctionVisitor visit);

// A design document holding only what ReadDesignFunctions sees of `json`, as JSON text: read
// again, it yields the same functions in the same order. What cnp-adapter keeps of a design
// document to teach a new stream after failover (the service keeps no more of it).
absl::StatusOr<std::string> DesignFunctionsJson(std::string_view json);

}  // namespace cnp::couchdb
