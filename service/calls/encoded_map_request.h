// A cnp.v1.MapRequest read in its wire form, without building it: function names and
// documents are taken in place, field by field, so that a call of ten million tiny documents
// costs no more than its bytes until its documents go into worker tasks.
#pragma once

#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "google/protobuf/io/coded_stream.h"

namespace cnp::calls {

class EncodedMapRequest {
 public:
  // `bytes` must outlive the reader and every document it returns. `max_functions`: how many
  // function names Next may add to its `functions` before it stops (too_many_functions()).
  explicit EncodedMapRequest(std::string_view bytes,
                             size_t max_functions = std::numeric_limits<size_t>::max());

  // The next document, or nothing at the end or when the bytes are not a MapRequest (then
  // failed()). Function names met on the way are added to `functions`, when given; one more
  // than `max_functions` stops the reading there (nothing, and too_many_functions()), so that
  // a request of millions of names costs no more than the bytes it came in.
  std::optional<std::string_view> Next(std::vector<std::string>* functions);
  bool failed() const { return failed_; }
  bool too_many_functions() const { return too_many_functions_; }

 private:
  std::string_view bytes_;
  google::protobuf::io::CodedInputStream input_;
  const size_t max_functions_;
  bool failed_ = false;
  bool too_many_functions_ = false;
};

}  // namespace cnp::calls
