#include "service/pool/task_description.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cnp::pool {
namespace {
std::string Names(const google::protobuf::RepeatedPtrField<std::string>& names) {
  if (names.size() <= 3) return absl::StrJoin(names, ", ");
  return absl::StrCat(names[0], ", ", names[1], " and ", names.size() - 2, " more");
}
std::string AllNames(const google::protobuf::RepeatedPtrField<std::string>& names) {
  if (names.size() <= kMaxLoggedFunctions) return absl::StrJoin(names, ", ");
  return absl::StrCat(absl::StrJoin(names.begin(), names.begin() + kMaxLoggedFunctions, ", "),
                      " and ", names.size() - kMaxLoggedFunctions, " more");
}
}  // namespace

std::string TaskFunctions(const worker::v1::Task& task) {
  switch (task.kind_case()) {
    case worker::v1::Task::kMap:
      return AllNames(task.map().functions());
    case worker::v1::Task::kReduce:
      return AllNames(task.reduce().functions());
    case worker::v1::Task::kValidate:
      return task.validate().function();
    case worker::v1::Task::kDesign:
      return task.design().function();
    case worker::v1::Task::kResolve:
      return AllNames(task.resolve().functions());
    case worker::v1::Task::kListStart:
      return task.list_start().function();
    case worker::v1::Task::kListRow:
    case worker::v1::Task::kDirectSession:
    case worker::v1::Task::KIND_NOT_SET:
      break;
  }
  return "";
}

std::string DescribeTask(const worker::v1::Task& task) {
  switch (task.kind_case()) {
    case worker::v1::Task::kMap:
      return absl::StrCat("Map of ", Names(task.map().functions()), " on ", task.map().docs_size(),
                          task.map().docs_size() == 1 ? " document" : " documents");
    case worker::v1::Task::kReduce:
      return absl::StrCat(task.reduce().rereduce() ? "Rereduce of " : "Reduce of ",
                          Names(task.reduce().functions()));
    case worker::v1::Task::kValidate:
      return absl::StrCat("Validate of ", task.validate().function());
    case worker::v1::Task::kDesign:
      return absl::StrCat(cnp::v1::DesignFunctionKind_Name(task.design().kind()), " function ",
                          task.design().function());
    case worker::v1::Task::kResolve:
      return absl::StrCat("Resolve of ", Names(task.resolve().functions()));
    case worker::v1::Task::kListStart:
      return absl::StrCat("List function ", task.list_start().function());
    case worker::v1::Task::kListRow:
      return "a list function's next row";
    case worker::v1::Task::kDirectSession:
      return absl::StrCat("direct CouchDB session ", task.direct_session().id());
    case worker::v1::Task::KIND_NOT_SET:
      break;
  }
  return "an empty task";
}

}  // namespace cnp::pool
