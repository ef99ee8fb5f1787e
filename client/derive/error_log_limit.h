// How many handler errors cnp derive writes to its log. A handler that raises on every document
// of a large source would otherwise write a line per document, burying everything else (and a
// terminal). Every error is still counted (the progress line, the status document) and recorded
// (the last ones in _local/cnp-derive:NAME:errors); the log gets the first `burst` of every
// `window`, then one line saying how many it left out.
#pragma once

#include <cstdint>

#include "absl/time/time.h"

namespace cnp::derive {

class ErrorLogLimit {
 public:
  static constexpr int kBurst = 20;
  static constexpr absl::Duration kWindow = absl::Minutes(1);

  explicit ErrorLogLimit(int burst = kBurst, absl::Duration window = kWindow)
      : burst_(burst), window_(window) {}

  // Whether an error that happened at `now` is logged; one that is not is counted as left out.
  bool Allow(absl::Time now);
  // How many were left out since the last time this answered (0 for none), once their window
  // is over or when `final` (the run ends, or stops) - so that the line saying so comes after
  // them, at most once a window.
  int64_t TakeLeftOut(absl::Time now, bool final = false);

 private:
  const int burst_;
  const absl::Duration window_;
  absl::Time window_start_ = absl::InfinitePast();
  int logged_ = 0;
  int64_t left_out_ = 0;
};

}  // namespace cnp::derive
