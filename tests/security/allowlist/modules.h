// The Python modules the allowlist tests attack, written into a fresh directory per test so
// that each test starts from files nobody has imported or edited yet.
#pragma once

#include <string>

#include "tests/support/files.h"

namespace cnp::security::testing {

using ::cnp::testing::ReadFile;

// A fresh directory under TEST_TMPDIR.
std::string FreshDir(const std::string& prefix);

// Writes `text` to `path` through a new file renamed into place, the way editors save: the
// module's file gets a new inode, so a change is visible however fast it follows the last.
void WriteModule(const std::string& path, const std::string& text);

bool Exists(const std::string& path);

// Writes the modules below into `dir`:
//   myviews.py       the operator's module: functions, a SECRET, and every kind of callable
//                    that is not a function (classes, builtins, bound methods, wrappers...)
//   reexporter.py    `from myviews import by_town, show`
//   myviews_evil.py  top-level code that writes `dir`/marker when it runs
//   pkg/             a package whose submodules `sub` (allowed in tests) and `subversive`,
//                    `other` (top-level code writes `dir`/marker.<name>)
void WriteAttackModules(const std::string& dir);

// The names in myviews that are the operator's Python functions, i.e. the only ones callable.
inline constexpr const char* kMyviewsFunctions[] = {"f",   "show",    "state",  "names",
                                                     "lam", "by_town", "counted"};

// A module `name` with two functions carrying @version(`version`): the map function f, which
// yields [label, version], and the show function show, whose body is label; and plain, a
// map function without @version yielding [label, "plain"]. Its top-level
// code appends a line to `dir`/`name`.imports each time it runs.
std::string VersionedModule(const std::string& dir, const std::string& name, int version,
                            const std::string& label);

// Lays out what `python3.11 -m venv` and `pip install` leave in `venv`, in miniature: a
// pyvenv.cfg, and in lib/python3.11/site-packages setuptools (with _distutils/spawn.py, whose
// spawn(cmd, ...) does `list(cmd)` and then, instead of running it, writes it to
// `marker_dir`/spawned), pip (main() writes `marker_dir`/pip), wheel, pkg_resources, the
// _distutils_hack shim with a distutils-precedence.pth that installs it (so that `import
// distutils` loads setuptools._distutils, as a real virtualenv's does), and venvlib, an
// ordinary library whose show() writes `marker_dir`/venvlib. Returns the site-packages
// directory.
std::string WriteFakeVirtualenv(const std::string& venv, const std::string& marker_dir);

}  // namespace cnp::security::testing
