// cnp-server's config file (--config): a YAML map of setting names to values, read before the
// command line so that the command line overrides it. Each value is set on its absl flag and
// recorded in Sources with where it was written; every error names the file, the line, the
// key, what was found and what was expected. Internal to service/config.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "service/config/setting_sources.h"

namespace cnp::config {

// Reads `path` (a trusted file of at most 1 MiB) and sets the flags it names. The values of
// repeatable settings go to sources.repeated unless the command line gave them.
absl::Status ApplyConfigFile(const std::string& path, Sources& sources);

}  // namespace cnp::config
