#include "tests/support/worker_pids.h"

#include <regex>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cnp::testing {

absl::StatusOr<std::map<std::string, std::set<int>>> PidsByLabel(const client::Client& client,
                                                                  const std::string& function,
                                                                  int docs) {
  std::vector<std::string> batch;
  batch.reserve(docs);
  for (int i = 0; i < docs; ++i) batch.push_back(absl::StrCat(R"({"_id":"d)", i, R"("})"));
  absl::StatusOr<v1::MapResponse> response = client.Map({function}, batch);
  if (!response.ok()) return response.status();
  if (response->results_size() != docs) {
    return absl::InternalError(
        absl::StrCat(response->results_size(), " results for ", docs, " documents"));
  }
  // One function, one row per document: [[["LABEL",PID]]].
  static const std::regex kRow(R"re(\[\[\["([^"]*)",([0-9]+)\]\]\])re");
  std::map<std::string, std::set<int>> pids;
  for (const v1::MapResult& result : response->results()) {
    std::smatch row;
    int pid = 0;
    if (!std::regex_match(result.rows(), row, kRow) || !absl::SimpleAtoi(row[2].str(), &pid)) {
      return absl::InternalError(absl::StrCat("not a [label, pid] row: ", result.rows()));
    }
    pids[row[1].str()].insert(pid);
  }
  return pids;
}

}  // namespace cnp::testing
