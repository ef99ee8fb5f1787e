// A cnp.v1.MapRequest read in its wire form, without building it: function names and
// documents are taken in place, field by field, so that a call of ten million tiny documents
// costs no more than its bytes until its documents go into worker tasks.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "google/protobuf/io/coded_stream.h"

namespace cnp::calls {

class EncodedMapRequest {
 public:
  // `bytes` must outlive the reader and every document it returns.
  explicit EncodedMapRequest(std::string_view bytes);

  // The next document, or nothing at the end or when the bytes are not a MapRequest (then
  // failed()). Function names met on the way are added to `functions`, when given.
  std::optional<std::string_view> Next(std::vector<std::string>* functions);
  bool failed() const { return failed_; }

 private:
  std::string_view bytes_;
  google::protobuf::io::CodedInputStream input_;
  bool failed_ = false;
};

}  // namespace cnp::calls
