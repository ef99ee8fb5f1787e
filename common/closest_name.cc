#include "common/closest_name.h"

#include <algorithm>
#include <vector>

namespace cnp {

size_t EditDistance(absl::string_view a, absl::string_view b) {
  // Rows i-2, i-1 and i of the table of distances between prefixes.
  std::vector<size_t> before(b.size() + 1), previous(b.size() + 1), row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      row[j] = std::min({previous[j] + 1, row[j - 1] + 1,
                         previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        row[j] = std::min(row[j], before[j - 2] + 1);  // two letters swapped
      }
    }
    std::swap(before, previous);
    std::swap(previous, row);
  }
  return previous[b.size()];
}

std::optional<std::string> ClosestName(absl::string_view name,
                                       absl::Span<const std::string> candidates) {
  std::optional<std::string> best;
  size_t best_distance = std::min<size_t>(2, name.size() / 3);
  for (const std::string& candidate : candidates) {
    // Each edit changes the length by at most one: a candidate whose length differs more is
    // not close, and costs no table (a 512-byte name against every module on the path did).
    const size_t longer = std::max(name.size(), candidate.size());
    if (longer - std::min(name.size(), candidate.size()) > best_distance) continue;
    const size_t distance = EditDistance(name, candidate);
    if (distance > best_distance) continue;
    if (distance < best_distance || !best.has_value() || candidate < *best) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace cnp
