// The reduces CouchDB 3.4 computes itself (the query server never sees them). A view's reduce is
// one of these, or starts with one's name (CouchDB takes `_sum_by_town` for _sum), or is a named
// function; any other value starting with "_" is neither, and CouchDB refuses the design
// document as it is saved (400 invalid_design_doc). `cnp upload` refuses it at its YAML line,
// and `cnp sync` skips a registry entry holding one.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace cnp::couchdb {

bool IsBuiltinReduce(absl::string_view reduce);

// Why `reduce` (which starts with "_" and is not a builtin) is no reduce, to follow its name in
// a message: "is not a builtin reduce of CouchDB 3.4 (_sum, ...); ...".
std::string NotABuiltinReduce(absl::string_view reduce);

}  // namespace cnp::couchdb
