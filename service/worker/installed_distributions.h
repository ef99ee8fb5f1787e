// What an installer put in one of the operator's code directories. `pip install --target DIR`
// (and an old PYTHONPATH library directory) puts installed packages beside the operator's own
// modules, under no site-packages name: PyYAML there makes yaml.unsafe_load, which runs shell
// commands, look like the operator's code. Each installed distribution records the files it
// put there: a NAME.dist-info/RECORD, or a NAME.egg-info's top_level.txt and
// installed-files.txt. What they name is library code (module_policy.h), runnable only when
// --allow-module names it.
#pragma once

#include <string>
#include <vector>

namespace cnp::worker {

// The top-level packages and modules that the *.dist-info and *.egg-info directories in `dir`
// record, as absolute paths: DIR/yaml for a package, DIR/six.py for a module,
// DIR/_yaml.cpython-311-x86_64-linux-gnu.so for an extension. A record that cannot be read
// adds nothing (the files it would name stay the operator's, as they were before it existed).
std::vector<std::string> InstalledTopLevels(const std::string& dir);

}  // namespace cnp::worker
