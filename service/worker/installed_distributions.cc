#include "service/worker/installed_distributions.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
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
  while (absl::ConsumePrefix(&relative, "./")) {
  }
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
    if (!entry->is_directory(error)) {
      // distutils' install_egg_info writes NAME-VERSION-pyX.Y.egg-info as a file of metadata
      // alone: its distribution's name is the best guess at what it installed there.
      if (absl::EndsWith(name, ".egg-info")) {
        for (const std::string& line : Lines(metadata)) {
          absl::string_view value = line;
          if (!absl::ConsumePrefix(&value, "Name:")) continue;
          std::string module(absl::StripAsciiWhitespace(value));
          std::replace(module.begin(), module.end(), '-', '_');
          AddTopLevel(module, names);
          AddTopLevel(module + ".py", names);
          break;
        }
      }
      continue;
    }
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

const InstallRecords::Directory& InstallRecords::Read(const std::string& dir) {
  struct stat st;
  const int64_t mtime_ns = ::stat(dir.c_str(), &st) == 0
                               ? int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec
                               : -1;
  Directory& known = directories_[dir];
  if (known.mtime_ns == mtime_ns && mtime_ns != -1) return known;
  known = Directory{.mtime_ns = mtime_ns, .installed = InstalledTopLevels(dir)};
  std::error_code error;
  for (fs::directory_iterator entry(dir, error), end; !error && entry != end;
       entry.increment(error)) {
    const std::string name = entry->path().filename().string();
    if (absl::EndsWith(name, ".dist-info") || absl::EndsWith(name, ".egg-info")) {
      known.has_records = true;
    } else if (name == "pyvenv.cfg") {
      known.is_virtualenv = true;
    } else if (name == "lib" || name == "lib64") {
      std::error_code inner;
      for (fs::directory_iterator version(entry->path(), inner), last; !inner && version != last;
           version.increment(inner)) {
        if (absl::StartsWith(version->path().filename().string(), "python") &&
            fs::is_directory(version->path() / "site-packages", inner)) {
          known.is_prefix = true;
        }
      }
    }
  }
  return known;
}

std::optional<std::string> InstallRecords::InstalledBelow(const std::string& root,
                                                          const std::string& file) {
  const fs::path relative = fs::path(file).lexically_relative(root);
  if (relative.empty() || *relative.begin() == "..") return std::nullopt;
  std::vector<std::string> parts;  // the directories below root that hold the file
  for (const fs::path& part : relative) parts.push_back(part.string());
  if (parts.empty()) return std::nullopt;
  parts.pop_back();
  // A package directory anywhere on the way: the name below the last one is the library's.
  for (size_t k = parts.size(); k-- > 0;) {
    if (parts[k] == "site-packages" || parts[k] == "dist-packages") {
      fs::path dir = root;
      for (size_t i = 0; i <= k; ++i) dir /= parts[i];
      return dir.string();
    }
  }
  fs::path dir = root;
  for (size_t k = 0; k <= parts.size(); ++k) {
    const Directory& here = Read(dir.string());
    const std::string next = k < parts.size() ? parts[k] : "";
    const bool scripts = next == "bin" || next == "Scripts";
    if (here.is_virtualenv &&
        (k > 0 || scripts || next == "lib" || next == "lib64" || next == "include")) {
      return dir.string();
    }
    if (k > 0) {
      for (const std::string& installed : here.installed) {
        if (file == installed || absl::StartsWith(file, installed + "/")) return dir.string();
      }
    }
    if (scripts && (here.has_records || here.is_prefix)) return dir.string();
    if (k < parts.size()) dir /= next;
  }
  return std::nullopt;
}

}  // namespace cnp::worker
