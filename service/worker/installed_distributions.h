// What an installer put in one of the operator's code directories. `pip install --target DIR`
// (and an old PYTHONPATH library directory) puts installed packages beside the operator's own
// modules, under no site-packages name: PyYAML there makes yaml.unsafe_load, which runs shell
// commands, look like the operator's code. Each installed distribution records the files it
// put there: a NAME.dist-info/RECORD, or a NAME.egg-info's top_level.txt and
// installed-files.txt. What they name is library code (module_policy.h), runnable only when
// --allow-module names it.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace cnp::worker {

// The top-level packages and modules that the *.dist-info and *.egg-info directories in `dir`
// record, as absolute paths: DIR/yaml for a package, DIR/six.py for a module,
// DIR/_yaml.cpython-311-x86_64-linux-gnu.so for an extension. A record that cannot be read
// adds nothing (the files it would name stay the operator's, as they were before it existed).
std::vector<std::string> InstalledTopLevels(const std::string& dir);

// Where, below the operator's code directory `root` (not in it: InstalledTopLevels does that
// once, at start), `file` was installed, as the directory its installed package or module
// lies in: the name it has below there is its name as a library. Found on the way down to
// it: a `site-packages` or `dist-packages` directory (a virtualenv or an installation kept in
// the operator's directory); a directory holding `pyvenv.cfg` (a virtualenv: its scripts, such
// as bin/activate_this.py, add its packages to sys.path when imported; the virtualenv's own
// directory is returned); or what a *.dist-info or *.egg-info in a directory on the way
// records (`pip install --target=myviews/deps`, which put PyYAML at myviews/deps/yaml).
// Nothing for the operator's own code.
std::optional<std::string> InstalledBelow(const std::string& root, const std::string& file);

}  // namespace cnp::worker
