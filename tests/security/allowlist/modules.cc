#include "tests/security/allowlist/modules.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"

namespace cnp::security::testing {

std::string FreshDir(const std::string& prefix) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(tmp ? tmp : "/tmp", "/", prefix, "-XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  EXPECT_NE(made, nullptr) << pattern;
  return pattern;
}

void WriteModule(const std::string& path, const std::string& text) {
  std::string temporary = path + ".new";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << text;
    ASSERT_TRUE(out.good()) << temporary;
  }
  ASSERT_EQ(std::rename(temporary.c_str(), path.c_str()), 0) << path;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void WriteAttackModules(const std::string& dir) {
  WriteModule(dir + "/myviews.py", R"PY(
import functools
import json
import subprocess
import sys
import types

from couch_named_python import Forbidden, _factory, emit, log, start, version
from couch_named_python.mr import count, handler, item

SECRET = "s3cr3t-value"
COLLECTED = []


@version(1)
def f(doc, req=None):
    return {"body": "f ran"}


def show(doc, req):
    return {"body": "show ran"}


def state(doc, req):
    me = sys.modules[__name__]
    watched = ("unittest.__main__", "this", "venv.__main__", "lib2to3.__main__",
               "myviews_evil", "myviews.subprocess", "pkg.other", "pkg.subversive")
    imported = [m for m in watched if m in sys.modules]
    present = [n for n in ("f", "show", "state", "names", "lam") if hasattr(me, n)]
    return {"body": f"secret={SECRET} path={hasattr(me, '__path__')} "
                    f"present={','.join(present)} imported={','.join(imported)} "
                    f"collected={len(COLLECTED)}"}


def names(doc, req):
    # Every name a request could put after "myviews.": the module's globals, what its type
    # offers, and what a function offers.
    me = sys.modules[__name__]
    found = set(dir(me)) | set(dir(type(me))) | set(dir(f)) | set(dir(object))
    return {"body": " ".join(sorted(found))}


lam = lambda doc, req: {"body": "lambda ran"}  # noqa: E731


class Klass:
    def method(self, doc, req):
        return {"body": "method ran"}

    @staticmethod
    def static(doc, req):
        return {"body": "static ran"}


class CallableThing:
    def __call__(self, doc, req):
        return {"body": "instance ran"}


instance = CallableThing()
bound = Klass().method
appender = COLLECTED.append
wrapper = (1).__add__
partial = functools.partial(show, None)
static = staticmethod(show)
length = len
setter = setattr
getter = getattr
evaluate = eval
module_setattr = types.ModuleType.__setattr__
dumps = json.dumps
getoutput = subprocess.getoutput
# What couch_named_python's factories make for this module: callable from here.
by_town = item("town")
counted = handler(count)
# The package's own function, and the factory's registration used on standard-library code.
raw_count = count
product_of_stdlib = _factory.owned_by_caller(
    types.FunctionType(json.dumps.__code__, json.dumps.__globals__, "p"), "product_of_stdlib")
# A function object with this module's name but the standard library's code.
laundered = types.FunctionType(json.dumps.__code__, json.dumps.__globals__, "laundered")
laundered.__module__ = __name__
)PY");
  WriteModule(dir + "/reexporter.py", "from myviews import by_town, show  # noqa: F401\n");
  std::string marker = dir + "/marker";
  WriteModule(dir + "/myviews_evil.py",
              absl::StrCat("open(", "'", marker, "', 'w').write('ran')\n\n"
                           "def f(doc, req):\n    return {'body': 'evil ran'}\n"));
  std::filesystem::create_directories(dir + "/pkg");
  WriteModule(dir + "/pkg/__init__.py", "");
  WriteModule(dir + "/pkg/sub.py", "def f(doc, req):\n    return {'body': 'sub ran'}\n");
  for (const char* name : {"other", "subversive"}) {
    WriteModule(absl::StrCat(dir, "/pkg/", name, ".py"),
                absl::StrCat("open('", marker, ".", name, "', 'w').write('ran')\n\n"
                             "def f(doc, req):\n    return {'body': 'ran'}\n"));
  }
}

std::string VersionedModule(const std::string& dir, const std::string& name, int version,
                            const std::string& label) {
  return absl::StrCat("from couch_named_python import version\n",
                      "open('", dir, "/", name, ".imports', 'a').write('import\\n')\n\n",
                      "@version(", version, ")\n",
                      "def f(doc):\n",
                      "    yield '", label, "', ", version, "\n\n",
                      "@version(", version, ")\n",
                      "def show(doc, req):\n",
                      "    return {'body': '", label, "'}\n\n",
                      "def plain(doc):\n",
                      "    yield '", label, "', 'plain'\n");
}

std::string WriteFakeVirtualenv(const std::string& venv, const std::string& marker_dir) {
  std::string site = venv + "/lib/python3.11/site-packages";
  std::filesystem::create_directories(site + "/setuptools/_distutils");
  for (const char* package : {"pip", "wheel", "pkg_resources", "_distutils_hack", "venvlib"}) {
    std::filesystem::create_directories(site + "/" + package);
  }
  WriteModule(venv + "/pyvenv.cfg",
              "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n");
  auto marker = [&](const std::string& name) {
    return absl::StrCat("open(", "'", marker_dir, "/", name, "'", ", 'w')");
  };
  WriteModule(site + "/setuptools/__init__.py", "");
  WriteModule(site + "/setuptools/_distutils/__init__.py", "");
  WriteModule(site + "/setuptools/_distutils/spawn.py",
              absl::StrCat("def spawn(cmd, *args, **kwargs):\n"
                           "    cmd = list(cmd)\n"
                           "    with ", marker("spawned"), " as out:\n"
                           "        out.write(repr(cmd))\n"));
  WriteModule(site + "/pip/__init__.py",
              absl::StrCat("def main(*args, **kwargs):\n"
                           "    with ", marker("pip"), " as out:\n"
                           "        out.write('installed')\n"
                           "    return {'body': 'pip ran'}\n"));
  WriteModule(site + "/wheel/__init__.py", "def main(*args):\n    return {'body': 'wheel ran'}\n");
  WriteModule(site + "/pkg_resources/__init__.py",
              "def require(*args):\n    return {'body': 'pkg_resources ran'}\n");
  WriteModule(site + "/venvlib/__init__.py",
              absl::StrCat("def show(doc, req):\n"
                           "    with ", marker("venvlib"), " as out:\n"
                           "        out.write('ran')\n"
                           "    return {'body': 'venvlib ran'}\n"));
  // A meta path finder that answers `distutils` with setuptools' copy, renamed, as
  // setuptools' own shim does.
  WriteModule(site + "/_distutils_hack/__init__.py", R"PY(
import importlib
import importlib.abc
import importlib.util
import sys


class _Finder:
    def find_spec(self, fullname, path, target=None):
        if path is not None or fullname != "distutils":
            return None
        copy = importlib.import_module("setuptools._distutils")

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                copy.__name__ = "distutils"
                return copy

            def exec_module(self, module):
                pass

        return importlib.util.spec_from_loader("distutils", _Loader(), origin=copy.__file__)


def add_shim():
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
)PY");
  WriteModule(site + "/distutils-precedence.pth",
              "import _distutils_hack; _distutils_hack.add_shim()\n");
  // Whatever the umask, as a virtualenv's directories are: writable by their owner only.
  for (const auto& entry : std::filesystem::recursive_directory_iterator(venv)) {
    if (entry.is_directory()) ::chmod(entry.path().c_str(), 0755);
  }
  ::chmod(venv.c_str(), 0755);
  return site;
}

}  // namespace cnp::security::testing
