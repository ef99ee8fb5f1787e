#include "service/worker/installed_distributions.h"

#include <filesystem>
#include <iterator>
#include <set>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file_text.h"

namespace cnp::worker {
namespace {

namespace fs = std::filesystem;

// A RECORD of a distribution with tens of thousands of files is a few MiB; anything larger is
// not one, and is not read whole into every worker.
constexpr int64_t kLargestRecord = 16 << 20;

std::vector<std::string> Lines(const fs::path& file) {
  absl::StatusOr<std::string> text = ReadFileText(file.string(), kLargestRecord);
  if (!text.ok() || static_cast<int64_t>(text->size()) > kLargestRecord) return {};
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipWhitespace())) {
    lines.emplace_back(absl::StripTrailingAsciiWhitespace(line));
  }
  return lines;
}

// The first component of `relative` (a path an installer wrote, relative to the code
// directory), when it names something installed there: not the metadata itself, nothing
// outside the directory (../../bin/tool), no cache.
void AddTopLevel(absl::string_view relative, std::set<std::string>& names) {
  if (relative.empty() || absl::StartsWith(relative, "/")) return;
  const absl::string_view top = relative.substr(0, relative.find('/'));
  if (top.empty() || top == "." || top == ".." || top == "__pycache__" ||
      absl::EndsWith(top, ".dist-info") || absl::EndsWith(top, ".egg-info") ||
      absl::EndsWith(top, ".data") || absl::EndsWith(top, ".pth")) {
    return;
  }
  names.emplace(top);
}

// RECORD is CSV: path,hash,size; a path holding a comma is quoted ("a,b.py",sha256=...,12).
absl::string_view RecordPath(absl::string_view line) {
  if (absl::ConsumePrefix(&line, "\"")) return line.substr(0, line.find('"'));
  return line.substr(0, line.find(','));
}

}  // namespace

std::vector<std::string> InstalledTopLevels(const std::string& dir) {
  std::set<std::string> names;
  std::error_code error;
  for (fs::directory_iterator entry(dir, error), end; !error && entry != end;
       entry.increment(error)) {
    const fs::path metadata = entry->path();
    const std::string name = metadata.filename().string();
    if (!entry->is_directory(error)) continue;
    if (absl::EndsWith(name, ".dist-info")) {
      for (const std::string& line : Lines(metadata / "RECORD")) {
        AddTopLevel(RecordPath(line), names);
      }
    } else if (absl::EndsWith(name, ".egg-info")) {
      // installed-files.txt is relative to the .egg-info directory itself.
      for (const std::string& line : Lines(metadata / "installed-files.txt")) {
        absl::string_view path = line;
        if (absl::ConsumePrefix(&path, "../")) AddTopLevel(path, names);
      }
      for (const std::string& module : Lines(metadata / "top_level.txt")) {
        AddTopLevel(module, names);
        AddTopLevel(module + ".py", names);
      }
    }
  }
  std::vector<std::string> paths;
  for (const std::string& top : names) paths.push_back((fs::path(dir) / top).string());
  return paths;
}

std::optional<std::string> InstalledBelow(const std::string& root, const std::string& file) {
  const fs::path relative = fs::path(file).lexically_relative(root);
  if (relative.empty() || *relative.begin() == "..") return std::nullopt;
  fs::path dir = root;
  std::error_code error;
  // Each directory below root that holds the file, from the top down.
  for (auto part = relative.begin(); std::next(part) != relative.end(); ++part) {
    const fs::path above = dir;
    dir /= *part;
    if (*part == "site-packages" || *part == "dist-packages") return dir.string();
    if (fs::exists(dir / "pyvenv.cfg", error)) return above.string();
    for (const std::string& installed : InstalledTopLevels(dir.string())) {
      if (file == installed || absl::StartsWith(file, installed + "/")) return dir.string();
    }
  }
  return std::nullopt;
}

}  // namespace cnp::worker
