// The packages that install or run software are never callable, whatever directory they are
// found in and whatever --allow-module says; and where a function's file really is decides,
// not the name it was imported by or the __module__ it claims. Through a real cnp-worker.
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/allowlist/modules.h"
#include "tests/support/worker_process.h"

namespace cnp::security::testing {
namespace {

using ::cnp::worker::testing::DesignTask;
using ::cnp::worker::testing::Reply;
using ::cnp::worker::testing::WorkerProcess;
using ::cnp::worker::v1::Failure;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

Reply Show(WorkerProcess& worker, const std::string& function) {
  return worker.Call(DesignTask(cnp::v1::SHOW, function, "[null, {}]"));
}

void ExpectRefusedByRule(const Reply& reply, const std::string& function) {
  ASSERT_TRUE(reply.has_failure()) << function << ": " << reply.DebugString();
  EXPECT_EQ(reply.failure().code(), Failure::PERMISSION_DENIED) << function;
  EXPECT_THAT(reply.failure().message(),
              AnyOf(HasSubstr("packages that install or run software"),
                    HasSubstr("part of Python's standard library")))
      << function;
}

// The operator's own directory holds packages with the installers' names (as a vendored copy
// might): none runs, though every module found there may run when no --allow-module is given.
// The standard library's such modules are refused by the same rule. An --allow-module naming
// one is a bad setting: the worker says so to its first task, and serves nothing.
TEST(NeverCallableTest, InstallersAndRunnersAreRefusedEvenInTheOperatorsDirectoryAndAllowed) {
  std::string dir = FreshDir("never");
  const std::vector<std::string> vendored = {"pip", "setuptools", "pkg_resources",
                                             "_distutils_hack", "wheel"};
  std::vector<std::string> flags = {"--python-path=" + dir};
  for (const std::string& package : vendored) {
    std::filesystem::create_directory(dir + "/" + package);
    WriteModule(dir + "/" + package + "/__init__.py",
                absl::StrCat("def run(doc, req):\n"
                             "    open('", dir, "/ran.", package, "', 'w').close()\n"
                             "    return {'body': 'ran'}\n"));
  }
  const std::vector<std::string> stdlib = {"distutils", "ensurepip", "venv", "subprocess",
                                           "os", "shutil", "pty", "multiprocessing", "ctypes",
                                           "importlib", "runpy", "code", "builtins"};
  auto worker = WorkerProcess::Start(flags);
  ASSERT_TRUE(worker.ok()) << worker.status();
  for (const std::string& package : vendored) {
    ExpectRefusedByRule(Show(**worker, package + ".run"), package + ".run");
    EXPECT_FALSE(Exists(dir + "/ran." + package)) << package << " ran";
  }
  for (const std::string& module : stdlib) {
    ExpectRefusedByRule(Show(**worker, module + ".run"), module + ".run");
  }
  EXPECT_THAT(Show(**worker, "pip.run").failure().message(),
              HasSubstr("even when --allow-module names them"));

  for (const auto* names : {&vendored, &stdlib}) {
    for (const std::string& name : *names) {
      auto allowing = WorkerProcess::Start({"--python-path=" + dir, "--allow-module=" + name});
      ASSERT_TRUE(allowing.ok()) << allowing.status();
      const Reply reply = Show(**allowing, name + ".run");
      ASSERT_TRUE(reply.has_failure()) << name << ": " << reply.DebugString();
      EXPECT_EQ(reply.failure().code(), Failure::BAD_SETTING) << name;
      EXPECT_THAT(reply.failure().message(),
                  HasSubstr(absl::StrCat("--allow-module=", name, ": module '", name, "'")));
    }
  }
  for (const std::string& package : vendored) {
    EXPECT_FALSE(Exists(dir + "/ran." + package)) << package << " ran";
  }
}

// An allowed operator module that binds a virtualenv's spawn and rewrites its __module__ to
// its own: the file it came from (setuptools, reached directly or through the distutils
// shim) gives it away.
TEST(NeverCallableTest, AFunctionsRealFileDecidesNotItsClaimedModule) {
  std::string base = FreshDir("relay");
  std::string venv = base + "/venv";
  WriteFakeVirtualenv(venv, base);
  std::string views = base + "/views";
  std::filesystem::create_directory(views);
  WriteModule(views + "/relay.py",
              "from setuptools._distutils.spawn import spawn as direct\n"
              "import distutils.spawn\n"
              "shimmed = distutils.spawn.spawn\n"
              "from venvlib import show as library_show\n"
              "for f in (direct, shimmed, library_show):\n"
              "    f.__module__ = __name__\n"
              "def show(doc, req):\n"
              "    return {'body': 'relay ran'}\n");
  auto worker = WorkerProcess::Start(
      {"--virtualenv=" + venv, "--python-path=" + views, "--allow-module=relay"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  for (const char* function : {"relay.direct", "relay.shimmed"}) {
    Reply reply = (*worker)->Call(DesignTask(cnp::v1::SHOW, function, R"([["id"], {}])"));
    ExpectRefusedByRule(reply, function);
    EXPECT_THAT(reply.failure().message(), HasSubstr("setuptools/_distutils/spawn.py"));
  }
  EXPECT_FALSE(Exists(base + "/spawned")) << ReadFile(base + "/spawned");
  // A library function under the operator's module name is still library code.
  Reply library = Show(**worker, "relay.library_show");
  ASSERT_TRUE(library.has_failure()) << library.DebugString();
  EXPECT_EQ(library.failure().code(), Failure::PERMISSION_DENIED);
  EXPECT_THAT(library.failure().message(), HasSubstr("--allow-module=venvlib"));
  EXPECT_FALSE(Exists(base + "/venvlib"));
  Reply own = Show(**worker, "relay.show");
  ASSERT_TRUE(own.has_design()) << own.DebugString();
  EXPECT_THAT(own.design().reply(), HasSubstr("relay ran"));
}

// pip install --target=DIR puts a library beside the operator's modules, under no
// site-packages name: a review ran a shell command through yaml.unsafe_load that way (PyYAML
// in a --python-path directory). What a *.dist-info's RECORD or an *.egg-info names is library
// code now, refused until --allow-module names it; the operator's own module beside it runs.
TEST(InstalledBesideTest, WhatAnInstallerRecordsBesideTheOperatorsModulesIsALibrary) {
  const std::string dir = FreshDir("beside");
  auto ran = [&](const std::string& what) {
    return absl::StrCat("def show(doc, req):\n    open('", dir, "/ran.", what,
                        "', 'w').close()\n    return {'body': 'ran'}\n");
  };
  std::filesystem::create_directories(dir + "/fakeyaml");
  WriteModule(dir + "/fakeyaml/__init__.py", ran("fakeyaml"));
  WriteModule(dir + "/fakesix.py", ran("fakesix"));
  std::filesystem::create_directories(dir + "/fakeyaml-6.0.dist-info");
  WriteModule(dir + "/fakeyaml-6.0.dist-info/RECORD",
              "fakeyaml/__init__.py,sha256=abc,120\n"
              "fakeyaml-6.0.dist-info/RECORD,,\n"
              "\"fakesix.py\",sha256=def,80\n"
              "../../bin/fakeyaml-tool,sha256=ghi,10\n");
  std::filesystem::create_directories(dir + "/fakeegg");
  WriteModule(dir + "/fakeegg/__init__.py", ran("fakeegg"));
  std::filesystem::create_directories(dir + "/fakeegg-1.0.egg-info");
  WriteModule(dir + "/fakeegg-1.0.egg-info/top_level.txt", "fakeegg\n");
  WriteModule(dir + "/views.py", ran("views"));

  auto worker = WorkerProcess::Start({"--python-path=" + dir});
  ASSERT_TRUE(worker.ok()) << worker.status();
  for (const char* installed : {"fakeyaml", "fakesix", "fakeegg"}) {
    const Reply reply = Show(**worker, absl::StrCat(installed, ".show"));
    ASSERT_TRUE(reply.has_failure()) << installed << ": " << reply.DebugString();
    EXPECT_EQ(reply.failure().code(), Failure::PERMISSION_DENIED) << installed;
    EXPECT_THAT(reply.failure().message(),
                HasSubstr("installed beside the operator's modules as a *.dist-info or "
                          "*.egg-info there records"))
        << installed;
    EXPECT_THAT(reply.failure().message(), HasSubstr(absl::StrCat("--allow-module=", installed)));
    EXPECT_FALSE(Exists(absl::StrCat(dir, "/ran.", installed))) << installed << " ran";
  }
  const Reply own = Show(**worker, "views.show");
  ASSERT_TRUE(own.has_design()) << own.DebugString();

  // Named by --allow-module, a library runs, as a virtualenv's does.
  auto allowed = WorkerProcess::Start(
      {"--python-path=" + dir, "--allow-module=fakeyaml", "--allow-module=views"});
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  const Reply library = Show(**allowed, "fakeyaml.show");
  ASSERT_TRUE(library.has_design()) << library.DebugString();
  EXPECT_TRUE(Exists(dir + "/ran.fakeyaml"));
}

// What an installer put deeper in the operator's directory is a library under its own name
// there, which an --allow-module covering the operator's package does not cover: a security
// probe ran yaml.unsafe_load as myviews.deps.yaml.unsafe_load (pip install --target into the
// package) under --allow-module=myviews. So is a site-packages directory kept inside it (a
// virtualenv's, whose activate_this.py adds it to sys.path when imported: yaml then ran as
// `yaml`), and anything inside a directory holding pyvenv.cfg; activate_this itself is a
// script, refused by its name. Copied libraries under a vendoring name (extern, where
// setuptools bundles its own) are refused by name. None of them is imported.
TEST(InstalledBesideTest, LibrariesInstalledInsideTheOperatorsPackageAreLibraries) {
  const std::string dir = FreshDir("inside");
  auto ran = [&](const std::string& what) {
    return absl::StrCat("open('", dir, "/ran.", what,
                        "', 'w').close()\ndef show(doc, req):\n    return {'body': 'ran'}\n");
  };
  // A virtualenv kept in the package, whose site-packages myviews puts on sys.path.
  const std::string site = dir + "/myviews/env/lib/python3.11/site-packages";
  // Under no code directory: reached only through a symbolic link in the package.
  const std::string outside = FreshDir("outside") + "/lib/python3.11/site-packages";
  for (const std::string& package :
       {dir + "/myviews/deps/fakeyaml", dir + "/myviews/extern/fakeyaml", site + "/sitelib",
        dir + "/myviews/venv2/bin", dir + "/myviews/deps/fakeyaml-6.0.dist-info",
        dir + "/myviews/tgt/bin", dir + "/myviews/tgt/fakelib2-1.0.dist-info",
        dir + "/myviews/pfx/bin", dir + "/myviews/pfx/lib/python3.11/site-packages",
        dir + "/myviews/eggf/egglib", outside + "/extlib"}) {
    std::filesystem::create_directories(package);
  }
  WriteModule(dir + "/myviews/__init__.py",
              absl::StrCat("import sys\nsys.path.append('", site, "')\n",
                           "def show(doc, req):\n    return {'body': 'own'}\n"));
  for (const char* package : {"deps", "extern", "venv2", "venv2/bin", "tgt", "tgt/bin", "pfx",
                              "pfx/bin", "eggf"}) {
    WriteModule(absl::StrCat(dir, "/myviews/", package, "/__init__.py"), "");
  }
  WriteModule(dir + "/myviews/deps/fakeyaml/__init__.py", ran("deps"));
  WriteModule(dir + "/myviews/deps/fakeyaml-6.0.dist-info/RECORD",
              "fakeyaml/__init__.py,sha256=abc,120\n");
  WriteModule(dir + "/myviews/extern/fakeyaml/__init__.py", ran("extern"));
  WriteModule(dir + "/myviews/env/pyvenv.cfg", "home = /usr/bin\n");
  WriteModule(site + "/sitelib/__init__.py", ran("sitelib"));
  WriteModule(dir + "/myviews/venv2/pyvenv.cfg", "home = /usr/bin\n");
  WriteModule(dir + "/myviews/venv2/bin/activate_this.py", ran("activate_this"));
  WriteModule(dir + "/myviews/venv2/bin/tool.py", ran("tool"));
  // pip install --target and --prefix put a package's scripts in bin/, and record them as
  // ../../bin/...: a review ran such a script as myviews.tgt.bin.fl2tool.
  WriteModule(dir + "/myviews/tgt/fakelib2-1.0.dist-info/RECORD",
              "fakelib2/__init__.py,,\n../../bin/fl2tool.py,,\n");
  WriteModule(dir + "/myviews/tgt/bin/fl2tool.py", ran("target_script"));
  WriteModule(dir + "/myviews/pfx/bin/fl2tool.py", ran("prefix_script"));
  // distutils' install_egg_info: the metadata alone, as a file.
  WriteModule(dir + "/myviews/eggf/egglib-1.0-py3.11.egg-info", "Metadata-Version: 1.1\nName: egglib\n");
  WriteModule(dir + "/myviews/eggf/egglib/__init__.py", ran("egglib"));
  WriteModule(outside + "/extlib/__init__.py", ran("extlib"));
  std::filesystem::create_directory_symlink(outside + "/extlib", dir + "/myviews/extlink");
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"myviews.deps.fakeyaml.show", "--allow-module=fakeyaml"},
      {"myviews.extern.fakeyaml.show", "is below 'extern', where vendored libraries live"},
      {"sitelib.show", "--allow-module=sitelib"},
      {"myviews.venv2.bin.activate_this.show", "'activate_this' is a script that tools run"},
      {"myviews.venv2.bin.tool.show", "is installed library code"},
      {"myviews.tgt.bin.fl2tool.show", "is installed library code"},
      {"myviews.pfx.bin.fl2tool.show", "is installed library code"},
      {"myviews.eggf.egglib.show", "--allow-module=egglib"},
      {"myviews.extlink.show", "--allow-module=extlib"}};
  for (const bool allow_list : {false, true}) {
    SCOPED_TRACE(allow_list ? "--allow-module=myviews" : "no --allow-module");
    std::vector<std::string> flags = {"--python-path=" + dir};
    if (allow_list) {
      flags.push_back("--allow-module=myviews");
      flags.push_back("--allow-module=sitelib.other");
    }
    auto worker = WorkerProcess::Start(flags);
    ASSERT_TRUE(worker.ok()) << worker.status();
    ASSERT_TRUE(Show(**worker, "myviews.show").has_design());  // which puts site on sys.path
    for (const auto& [name, why] : refused) {
      const Reply reply = Show(**worker, name);
      ASSERT_TRUE(reply.has_failure()) << name << ": " << reply.DebugString();
      EXPECT_EQ(reply.failure().code(), Failure::PERMISSION_DENIED) << name;
      EXPECT_THAT(reply.failure().message(), HasSubstr(why)) << name;
    }
  }
  for (const char* what : {"deps", "extern", "sitelib", "activate_this", "tool", "target_script",
                           "prefix_script", "egglib", "extlib"}) {
    EXPECT_FALSE(Exists(absl::StrCat(dir, "/ran.", what))) << what << " was imported";
  }
  // Named by --allow-module, the virtualenv's library runs under its own name (a review found
  // it named env.lib.python3.11.site-packages.sitelib, and --allow-module=sitelib ignored).
  auto allowed = WorkerProcess::Start(
      {"--python-path=" + dir, "--allow-module=myviews", "--allow-module=sitelib"});
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  ASSERT_TRUE(Show(**allowed, "myviews.show").has_design());
  const Reply library = Show(**allowed, "sitelib.show");
  ASSERT_TRUE(library.has_design()) << library.DebugString();
  EXPECT_TRUE(Exists(dir + "/ran.sitelib"));
}

// An operator's code directory that is itself a virtualenv (pyvenv.cfg at its top): its bin
// and lib are the virtualenv's, not the operator's modules (a review ran bin.rst2html.run).
TEST(InstalledBesideTest, AVirtualenvAsTheCodeDirectoryKeepsItsScriptsOut) {
  const std::string dir = FreshDir("rootvenv");
  std::filesystem::create_directories(dir + "/bin");
  WriteModule(dir + "/pyvenv.cfg", "home = /usr/bin\n");
  WriteModule(dir + "/bin/rst2html.py",
              absl::StrCat("open('", dir, "/ran', 'w').close()\ndef show(doc, req):\n"
                           "    return {'body': 'ran'}\n"));
  WriteModule(dir + "/views.py", "def show(doc, req):\n    return {'body': 'own'}\n");
  auto worker = WorkerProcess::Start({"--python-path=" + dir});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const Reply script = Show(**worker, "bin.rst2html.show");
  ASSERT_TRUE(script.has_failure()) << script.DebugString();
  EXPECT_EQ(script.failure().code(), Failure::PERMISSION_DENIED);
  EXPECT_FALSE(Exists(dir + "/ran"));
  ASSERT_TRUE(Show(**worker, "views.show").has_design());
}

// Refused by their names before anything is imported: a private part (where vendored
// libraries live: a review ran myviews._vendor.yaml.unsafe_load), a dunder-like `__x`, and a
// script module that tools run (a review had setup.anything run setup.py's top-level code,
// though no such function is there). Each such module's top-level code would leave a mark. A
// submodule that only shares a script's name (myviews.manage) is an ordinary module.
TEST(NamesBeforeImportTest, PrivatePartsAndScriptModulesAreRefusedUnimported) {
  const std::string dir = FreshDir("private");
  auto marks = [&](const std::string& what) {
    return absl::StrCat("open('", dir, "/imported.", what,
                        "', 'w').close()\ndef show(doc, req):\n    return {'body': 'ran'}\n");
  };
  std::filesystem::create_directories(dir + "/myviews/_vendor");
  WriteModule(dir + "/myviews/__init__.py", "def show(doc, req):\n    return {'body': 'own'}\n"
                                             "def _hidden(doc, req):\n    return {'body': 'no'}\n"
                                             "def __secret(doc, req):\n    return {'body': 'no'}\n");
  WriteModule(dir + "/myviews/_vendor/__init__.py", marks("vendor"));
  WriteModule(dir + "/myviews/manage.py", "def show(doc, req):\n    return {'body': 'sub'}\n");
  WriteModule(dir + "/manage.py", marks("manage"));
  WriteModule(dir + "/setup.py", marks("setup"));
  WriteModule(dir + "/conftest.py", marks("conftest"));
  for (const bool allow_list : {false, true}) {
    SCOPED_TRACE(allow_list ? "--allow-module=myviews" : "no --allow-module");
    std::vector<std::string> flags = {"--python-path=" + dir};
    if (allow_list) flags.push_back("--allow-module=myviews");
    auto worker = WorkerProcess::Start(flags);
    ASSERT_TRUE(worker.ok()) << worker.status();
    const std::vector<std::pair<std::string, std::string>> refused = {
        {"myviews._vendor.show", "is below '_vendor', where vendored libraries live"},
        {"myviews._hidden", "'_hidden' starts with '_'"},
        {"myviews.__secret", "'__secret' starts with '_'"},
        {"manage.show", "'manage' is a script that tools run"},
        {"setup.anything", "'setup' is a script that tools run"},
        {"conftest.show", "'conftest' is a script that tools run"}};
    for (const auto& [name, why] : refused) {
      const Reply reply = Show(**worker, name);
      ASSERT_TRUE(reply.has_failure()) << name << ": " << reply.DebugString();
      EXPECT_EQ(reply.failure().code(), Failure::PERMISSION_DENIED) << name;
      EXPECT_THAT(reply.failure().message(), HasSubstr(why)) << name;
    }
    for (const char* runs : {"myviews.show", "myviews.manage.show"}) {
      const Reply own = Show(**worker, runs);
      ASSERT_TRUE(own.has_design()) << runs << ": " << own.DebugString();
    }
  }
  for (const char* module : {"vendor", "manage", "setup", "conftest"}) {
    EXPECT_FALSE(Exists(absl::StrCat(dir, "/imported.", module))) << module << " was imported";
  }
}

// A function re-exported from a vendored library by a public module (a review ran
// rex.danger, imported `from ._vendor.thing import danger`) is refused for where it is; one
// from the package's own private module (`from ._impl import helper_show`, the usual layout)
// runs.
TEST(NamesBeforeImportTest, AFunctionOfAVendoredLibraryIsRefusedWhoeverReexportsIt) {
  const std::string dir = FreshDir("rex");
  std::filesystem::create_directories(dir + "/rex/_vendor");
  WriteModule(dir + "/rex/__init__.py",
              "from ._vendor.thing import danger\nfrom ._impl import helper_show\n");
  WriteModule(dir + "/rex/_vendor/__init__.py", "");
  WriteModule(dir + "/rex/_vendor/thing.py",
              absl::StrCat("def danger(doc, req):\n    open('", dir,
                           "/ran.danger', 'w').close()\n    return {'body': 'ran'}\n"));
  WriteModule(dir + "/rex/_impl.py", "def helper_show(doc, req):\n    return {'body': 'own'}\n");
  auto worker = WorkerProcess::Start({"--python-path=" + dir, "--allow-module=rex"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const Reply danger = Show(**worker, "rex.danger");
  ASSERT_TRUE(danger.has_failure()) << danger.DebugString();
  EXPECT_EQ(danger.failure().code(), Failure::PERMISSION_DENIED);
  EXPECT_THAT(danger.failure().message(),
              HasSubstr("its own module 'rex._vendor.thing' is below '_vendor'"));
  EXPECT_FALSE(Exists(dir + "/ran.danger"));
  const Reply own = Show(**worker, "rex.helper_show");
  ASSERT_TRUE(own.has_design()) << own.DebugString();
}

// A "did you mean" for a refused name looks nothing up: in a virtualenv, asking whether
// `distutils` exists makes the shim import setuptools. And no guess names a function that is
// never callable, from a misspelt module (`oss.system`) or a misspelt function (`os.systen`).
TEST(NeverCallableTest, AGuessForAMisspeltNameLooksUpNothingRefusedAndNamesNothingRefused) {
  std::string base = FreshDir("guess");
  std::string venv = base + "/venv";
  std::string site = WriteFakeVirtualenv(venv, base);
  WriteModule(site + "/setuptools/_distutils/__init__.py",
              absl::StrCat("open('", base, "/imported', 'w').close()\n"));
  std::string views = base + "/views";
  std::filesystem::create_directory(views);
  WriteModule(views + "/townviews.py", "def show(doc, req):\n    return {'body': 'town'}\n");
  // No --allow-module: every operator module may run, so only the never-callable rule filters.
  auto worker = WorkerProcess::Start({"--virtualenv=" + venv, "--python-path=" + views});
  ASSERT_TRUE(worker.ok()) << worker.status();
  Reply reply = (*worker)->Call(::cnp::worker::testing::ResolveTask(
      {"distutils.spwan", "os.systen", "oss.system", "townveiws.show"}));
  ASSERT_EQ(reply.resolve().functions_size(), 4) << reply.DebugString();
  const auto& functions = reply.resolve().functions();
  EXPECT_THAT(functions[0].error(), HasSubstr("part of Python's standard library"));
  EXPECT_THAT(functions[0].error(), Not(HasSubstr("did you mean")));
  EXPECT_FALSE(Exists(base + "/imported")) << "setuptools' distutils was imported";
  EXPECT_THAT(functions[1].error(), Not(HasSubstr("did you mean")));
  EXPECT_THAT(functions[2].error(), Not(HasSubstr("did you mean \"os.")));
  // A misspelt operator module still gets its guess.
  EXPECT_THAT(functions[3].error(), HasSubstr("did you mean \"townviews.show\"?"));
}

// A guess names only what may be called: a probe's operator module that imported
// `from os import system` was offered "did you mean mymod.system" for `mymod.sysstem`, which
// also listed to any caller what the module imports. Each guess below is refused when called.
TEST(NeverCallableTest, AGuessNamesOnlyFunctionsThatMayBeCalled) {
  std::string views = FreshDir("callable-guess");
  WriteModule(views + "/mymod.py",
              "import functools, os\n"
              "from os import system\n"
              "from pickle import loads\n"
              "wsys = functools.wraps(os.system)(lambda command: os.system(command))\n"
              "class Thing:\n    pass\n"
              "def show(doc, req):\n    return {'body': 'town'}\n");
  auto worker = WorkerProcess::Start({"--python-path=" + views});
  ASSERT_TRUE(worker.ok()) << worker.status();
  Reply reply = (*worker)->Call(::cnp::worker::testing::ResolveTask(
      {"mymod.sysstem", "mymod.loadz", "mymod.wsis", "mymod.Thinq", "mymod.shwo"}));
  ASSERT_EQ(reply.resolve().functions_size(), 5) << reply.DebugString();
  const auto& functions = reply.resolve().functions();
  for (int i = 0; i < 4; ++i) {
    EXPECT_THAT(functions[i].error(), Not(HasSubstr("did you mean"))) << functions[i].function();
  }
  // A function the module defines is still guessed.
  EXPECT_THAT(functions[4].error(), HasSubstr("did you mean \"mymod.show\"?"));
}

}  // namespace
}  // namespace cnp::security::testing
