// What the operator's modules looked like on disk when they were imported, so that a worker
// can tell whether a module's source has changed since, and import it anew.
//
// cnp-server keeps workers for a long time, and couch-named-python users update a function by
// editing its module and bumping @version: a worker asked for the new version must notice the
// edit itself (a direct session cannot move to a fresh worker).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "service/worker/module_policy.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {

class SourceStamps {
 public:
  explicit SourceStamps(const ModulePolicy& policy) : policy_(policy) {}

  // Stamps every module in sys.modules not seen before whose file is the operator's. Called
  // right after each import, so a stamp is the file as that import read it.
  void RecordNewModules();

  // Whether any stamped module in one of the top-level packages `tops` has a different file
  // on disk now (edited, replaced, removed). Costs one stat() per such module.
  bool AnyChanged(const std::set<std::string>& tops) const;

  // The files of the stamped modules in `tops`.
  std::vector<std::string> FilesOf(const std::set<std::string>& tops) const;

  // A module file (or a directory) as an import read it.
  struct Stamp {
    std::string file;
    bool exists = false;
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const Stamp&) const = default;
  };
  // `file` on disk now (`exists` false when it cannot be stat()ed).
  static Stamp StampOf(const std::string& file);

  // The modules Forget took out, and their stamps, for Restore.
  struct Forgotten {
    std::set<std::string> tops;
    std::vector<std::pair<std::string, PyRef>> modules;
    std::unordered_map<std::string, Stamp> stamps;
  };

  // Takes the stamped modules of `tops` out of sys.modules (and out of this record), so the
  // next import runs their code as it is on disk now, in the order the code imports it.
  Forgotten Forget(const std::set<std::string>& tops);

  // Undoes a Forget after the code on disk failed to import: what that import left of `tops`
  // in sys.modules goes, and the modules as they were come back with their stamps (which still
  // differ from the disk, so the change is seen again).
  void Restore(Forgotten forgotten);

 private:
  const ModulePolicy& policy_;
  std::unordered_map<std::string, Stamp> stamps_;   // module name -> its file at import
  std::unordered_set<std::string> seen_;            // every module name looked at
};

// "a" for "a.b.c".
std::string TopLevelPackage(const std::string& module);

}  // namespace cnp::worker
