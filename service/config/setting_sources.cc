#include "service/config/setting_sources.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/command_line_flags.h"

namespace cnp::config {

std::string Position(absl::string_view file, const YAML::Mark& mark) {
  if (mark.is_null()) return std::string(file);
  return absl::StrCat(file, ":", mark.line + 1, ":", mark.column + 1);
}

std::string Subject(const Sources& sources, absl::string_view name, int item) {
  if (const FilePlace* place = sources.FromFile(name)) {
    const YAML::Mark& mark = item >= 0 && static_cast<size_t>(item) < place->item_marks.size()
                                 ? place->item_marks[item]
                                 : place->value_mark;
    return absl::StrCat(Position(sources.config_file, mark), ": ", place->key, ":");
  }
  return absl::StrCat("--", DashedFlagName(std::string(name)));
}

std::string Mention(const Sources& sources, absl::string_view name, bool in_file) {
  if (const FilePlace* place = sources.FromFile(name)) {
    return absl::StrCat(place->key, " at line ", place->key_mark.line + 1);
  }
  return in_file ? DashedFlagName(std::string(name)) : absl::StrCat("--", DashedFlagName(std::string(name)));
}

absl::Status Reattribute(const Sources& sources, absl::string_view name, int item,
                         const absl::Status& status, absl::string_view value) {
  if (status.ok() || sources.FromFile(name) == nullptr) return status;
  const std::string flag = absl::StrCat("--", DashedFlagName(std::string(name)));
  absl::string_view message = status.message();
  if (absl::ConsumePrefix(&message, flag)) {
    if (absl::ConsumePrefix(&message, "=")) {
      // "=VALUE: ", with the value as given or as the other module showed it (a URL without
      // its password).
      const size_t end = !value.empty() && absl::StartsWith(message, absl::StrCat(value, ": "))
                             ? value.size()
                             : message.find(": ");
      if (end != absl::string_view::npos) message.remove_prefix(end + 2);
    } else if (!absl::ConsumePrefix(&message, ": ")) {
      absl::ConsumePrefix(&message, " ");
    }
  }
  return absl::Status(status.code(),
                      absl::StrCat(Subject(sources, name, item), " ", message));
}

absl::Status OutOfRange(const Sources& sources, absl::string_view name, absl::string_view range,
                        absl::string_view got) {
  return absl::InvalidArgumentError(
      absl::StrCat(Subject(sources, name), " must be ", range, "; got ", got));
}

}  // namespace cnp::config
