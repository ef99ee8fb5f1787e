#include "common/couchdb/builtin_reduces.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace cnp::couchdb {
namespace {

constexpr absl::string_view kBuiltinReduces[] = {"_sum", "_count", "_stats",
                                                 "_approx_count_distinct"};

// Builtins that CouchDB 3.5 added, named in the refusal so that it does not read as a typo.
bool IsCouchDb35Reduce(absl::string_view reduce) {
  if (reduce == "_first" || reduce == "_last") return true;
  for (absl::string_view prefix : {"_top_", "_bottom_"}) {
    int n;
    if (absl::ConsumePrefix(&reduce, prefix)) return absl::SimpleAtoi(reduce, &n);
  }
  return false;
}

}  // namespace

bool IsBuiltinReduce(absl::string_view reduce) {
  // By prefix, as CouchDB matches them (couch_mrview:validate, couch_query_servers:builtin_reduce).
  return std::any_of(std::begin(kBuiltinReduces), std::end(kBuiltinReduces),
                     [reduce](absl::string_view builtin) { return absl::StartsWith(reduce, builtin); });
}

std::string NotABuiltinReduce(absl::string_view reduce) {
  return absl::StrCat("is not a builtin reduce of CouchDB 3.4 (", absl::StrJoin(kBuiltinReduces, ", "),
                      ")",
                      IsCouchDb35Reduce(reduce)
                          ? "; _top_N, _bottom_N, _first and _last came with CouchDB 3.5"
                          : "",
                      "; a named function is module.function, without a leading _");
}

}  // namespace cnp::couchdb
