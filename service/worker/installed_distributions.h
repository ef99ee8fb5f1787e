// What an installer put in one of the operator's code directories. `pip install --target DIR`
// (and an old PYTHONPATH library directory) puts installed packages beside the operator's own
// modules, under no site-packages name: PyYAML there makes yaml.unsafe_load, which runs shell
// commands, look like the operator's code. Each installed distribution records the files it
// put there: a NAME.dist-info/RECORD, or a NAME.egg-info's top_level.txt and
// installed-files.txt. What they name is library code (module_policy.h), runnable only when
// --allow-module names it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace cnp::worker {

// The top-level packages and modules that the *.dist-info and *.egg-info directories in `dir`
// record (and a *.egg-info file, distutils' metadata alone: the distribution's name), as absolute paths: DIR/yaml for a package, DIR/six.py for a module,
// DIR/_yaml.cpython-311-x86_64-linux-gnu.so for an extension. A record that cannot be read
// adds nothing (the files it would name stay the operator's, as they were before it existed).
std::vector<std::string> InstalledTopLevels(const std::string& dir);

// Where an installer put a file, found on the way down to it from a directory (an operator's
// code directory, or / for a file under no root, reached through a symbolic link): what the
// *.dist-info and *.egg-info of each directory on the way record, read once per directory and
// its modification time (a module check runs on every import: reading every RECORD each time
// cost seconds for a large `pip install --target`). One per worker; not thread-safe (a worker
// runs Python on one thread).
class InstallRecords {
 public:
  // The directory `file` was installed in, below `root`: the name it has below there is its
  // name as a library. Found, in this order: a `site-packages` or `dist-packages` directory on
  // the way (the last one: a virtualenv or an installation kept there); a virtualenv's own
  // directory (holding `pyvenv.cfg`: its scripts, bin/activate_this.py among them, add its
  // packages to sys.path when imported) - for `root` itself only its bin, Scripts, lib, lib64
  // and include; what a *.dist-info or *.egg-info in a directory on the way records
  // (`pip install --target=myviews/deps` put PyYAML at myviews/deps/yaml), except in `root`
  // itself, which the worker reads once at start (InstalledTopLevels); and a bin or Scripts
  // directory beside such records, or in an installation prefix (a directory holding
  // lib/pythonX.Y/site-packages), where installers put packages' scripts. Nothing for the
  // operator's own code.
  std::optional<std::string> InstalledBelow(const std::string& root, const std::string& file);

 private:
  struct Directory {
    int64_t mtime_ns = -1;
    std::vector<std::string> installed;  // InstalledTopLevels
    bool has_records = false;            // a *.dist-info or *.egg-info is there
    bool is_prefix = false;              // lib/pythonX.Y/site-packages is there
    bool is_virtualenv = false;          // pyvenv.cfg is there
  };
  const Directory& Read(const std::string& dir);

  std::unordered_map<std::string, Directory> directories_;
};

}  // namespace cnp::worker
