// Installed packages are libraries, not functions CouchDB may call: the remote code execution a
// review found with `cnp-server --virtualenv` (setuptools' spawn runs whatever list it is
// given), and the directories of code another user could write to. Through a real cnp-server
// with real workers and the gRPC client, on a miniature virtualenv (modules.h).
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/allowlist/modules.h"
#include "tests/support/server_process.h"

namespace cnp::security::testing {
namespace {

using ::cnp::testing::ServerOptions;
using ::cnp::testing::ServerProcess;
using ::testing::HasSubstr;
using ::testing::Not;

// The operator's own module, on --python-path as the README says.
void WriteOperatorModule(const std::string& dir) {
  WriteModule(dir + "/myviews.py",
              "def validate(new_doc, old_doc, user_ctx, sec_obj):\n"
              "    if new_doc.get('forbidden'):\n"
              "        raise ValueError('no')\n"
              "\n"
              "def show(doc, req):\n"
              "    return {'body': 'show ran'}\n");
}

struct Layout {
  std::string base;   // markers land here
  std::string venv;
  std::string site;   // the venv's site-packages
  std::string views;  // the operator's --python-path
};

Layout MakeLayout() {
  Layout layout;
  layout.base = FreshDir("installed");
  layout.venv = layout.base + "/venv";
  layout.site = WriteFakeVirtualenv(layout.venv, layout.base);
  layout.views = layout.base + "/views";
  std::filesystem::create_directory(layout.views);
  ::chmod(layout.views.c_str(), 0755);
  WriteOperatorModule(layout.views);
  return layout;
}

absl::StatusOr<v1::ValidateResponse> Validate(client::Client& client, const std::string& function,
                                              const std::string& new_doc) {
  v1::ValidateRequest request;
  request.set_function(function);
  request.set_new_doc(new_doc);
  return client.Validate(request);
}

absl::StatusOr<v1::DesignFunctionResponse> Show(client::Client& client,
                                                const std::string& function) {
  v1::DesignFunctionRequest request;
  request.set_kind(v1::SHOW);
  request.set_function(function);
  request.set_args("[null, {}]");
  return client.CallDesignFunction(request);
}

// The review's two calls: validate with a list for new_doc, and map with a document whose keys
// are the command (list(dict) gives the keys). A new_doc that is no JSON object is refused
// before any function sees it (INVALID_ARGUMENT, as the API says it is one); one whose keys are
// the command is refused by the allowlist.
void ExpectSpawnRefused(client::Client& client, const std::string& function,
                        const Layout& layout) {
  auto listed = Validate(client, function, R"(["sh", "-c", "id > /dev/null"])");
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kInvalidArgument)
      << function << ": " << (listed.ok() ? listed->DebugString() : "");
  auto validated = Validate(client, function, R"({"sh": 1, "-c": 2, "id": 3})");
  EXPECT_EQ(validated.status().code(), absl::StatusCode::kPermissionDenied)
      << function << ": " << (validated.ok() ? validated->DebugString() : "");
  auto mapped = client.Map({function}, {R"({"_id": "a", "sh": 1, "-c": 2, "id": 3})"});
  EXPECT_EQ(mapped.status().code(), absl::StatusCode::kPermissionDenied)
      << function << ": " << (mapped.ok() ? mapped->DebugString() : "");
  auto resolved = client.Resolve({function});
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->functions(0).error_code(), 7) << resolved->functions(0).error();
  EXPECT_FALSE(Exists(layout.base + "/spawned"))
      << function << " ran: " << ReadFile(layout.base + "/spawned");
}

void ExpectOperatorModuleRuns(client::Client& client) {
  auto ok = Validate(client, "myviews.validate", R"({"_id": "a"})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->outcome(), v1::ValidateResponse::OK) << ok->DebugString();
  auto shown = Show(client, "myviews.show");
  ASSERT_TRUE(shown.ok()) << shown.status();
  EXPECT_THAT(shown->reply(), HasSubstr("show ran"));
}

TEST(InstalledPackagesTest, AVirtualenvsSetuptoolsAndPipAreRefusedWhileTheOperatorsModuleRuns) {
  Layout layout = MakeLayout();
  auto server =
      ServerProcess::StartWithFunctions({layout.views}, 1, {"--virtualenv=" + layout.venv});
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  ExpectSpawnRefused(*client, "setuptools._distutils.spawn.spawn", layout);
  // The standard library's name, which the venv's distutils-precedence.pth shim resolves into
  // setuptools' copy.
  ExpectSpawnRefused(*client, "distutils.spawn.spawn", layout);
  for (const char* function : {"pip.main", "_distutils_hack.add_shim", "wheel.main",
                               "pkg_resources.require", "venvlib.show"}) {
    auto shown = Show(*client, function);
    EXPECT_EQ(shown.status().code(), absl::StatusCode::kPermissionDenied) << function;
  }
  auto library = Show(*client, "venvlib.show");
  EXPECT_THAT(library.status().message(), HasSubstr("--allow-module=venvlib"));
  EXPECT_FALSE(Exists(layout.base + "/pip"));
  EXPECT_FALSE(Exists(layout.base + "/venvlib"));
  ExpectOperatorModuleRuns(*client);
}

// The library rule's other half: a virtualenv's module runs once --allow-module names it, so
// the markers above would have appeared had the functions run.
TEST(InstalledPackagesTest, AVirtualenvLibraryRunsWhenAllowModuleNamesIt) {
  Layout layout = MakeLayout();
  auto server = ServerProcess::StartWithFunctions(
      {layout.views}, 1,
      {"--virtualenv=" + layout.venv, "--allow-module=venvlib", "--allow-module=myviews"});
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  auto shown = Show(*client, "venvlib.show");
  ASSERT_TRUE(shown.ok()) << shown.status();
  EXPECT_THAT(shown->reply(), HasSubstr("venvlib ran"));
  EXPECT_TRUE(Exists(layout.base + "/venvlib"));
  ExpectOperatorModuleRuns(*client);
}

// An --allow-module naming an installer is a bad setting: the server does not start (exit 2),
// where it once started and refused each call. Unnamed, the installers of the virtualenv are
// refused by name and where their files are, the distutils shim included.
TEST(InstalledPackagesTest, InstallersAreRefusedEvenWhenAllowModuleNamesThem) {
  Layout layout = MakeLayout();
  for (const std::string installer : {"pip", "setuptools", "distutils"}) {
    auto refused = ServerProcess::Launch(
        {.args = {"--python-path=" + layout.views, "--workers=1", "--virtualenv=" + layout.venv,
                  "--allow-module=" + installer, "--allow-module=myviews"}});
    ASSERT_FALSE(refused->ready()) << refused->Log();
    EXPECT_EQ(refused->ExitCode(), 2) << refused->Log();
    EXPECT_THAT(refused->Log(), HasSubstr(absl::StrCat("no worker could start: --allow-module=",
                                                       installer, ": module '", installer,
                                                       "'")));
  }
  EXPECT_FALSE(Exists(layout.base + "/pip"));
  auto server = ServerProcess::StartWithFunctions({layout.views}, 1,
                                                  {"--virtualenv=" + layout.venv});
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  auto pip = Show(*client, "pip.main");
  EXPECT_EQ(pip.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(Exists(layout.base + "/pip"));
  ExpectSpawnRefused(*client, "setuptools._distutils.spawn.spawn", layout);
  ExpectSpawnRefused(*client, "distutils.spawn.spawn", layout);
  ExpectOperatorModuleRuns(*client);
}

// Item 2: a path entry that is a package-installation directory holds libraries, whether it
// comes from PYTHONPATH (the old couch-named-python convention) or --python-path.
TEST(InstalledPackagesTest, ASitePackagesDirectoryOnThePathIsALibrary) {
  Layout layout = MakeLayout();
  ::setenv("PYTHONPATH", layout.site.c_str(), 1);
  auto from_env = ServerProcess::StartWithFunctions({layout.views}, 1);
  ::unsetenv("PYTHONPATH");
  ASSERT_NE(from_env, nullptr);
  auto client = from_env->Connect();
  ExpectSpawnRefused(*client, "setuptools._distutils.spawn.spawn", layout);
  EXPECT_EQ(Show(*client, "venvlib.show").status().code(), absl::StatusCode::kPermissionDenied);
  ExpectOperatorModuleRuns(*client);
  from_env.reset();

  // A dist-packages directory (Debian's name) given with --python-path.
  std::string dist = layout.base + "/dist-packages";
  std::filesystem::rename(layout.site, dist);
  auto from_flag =
      ServerProcess::StartWithFunctions({dist, layout.views}, 1);
  ASSERT_NE(from_flag, nullptr);
  client = from_flag->Connect();
  ExpectSpawnRefused(*client, "setuptools._distutils.spawn.spawn", layout);
  EXPECT_EQ(Show(*client, "venvlib.show").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(Exists(layout.base + "/venvlib"));
  ExpectOperatorModuleRuns(*client);
}

// The old convention keeps working: the operator's own modules on PYTHONPATH alone, no
// --allow-module.
TEST(InstalledPackagesTest, OperatorModulesOnPythonPathAloneStillRun) {
  Layout layout = MakeLayout();
  ::setenv("PYTHONPATH", layout.views.c_str(), 1);
  auto server = ServerProcess::StartWithFunctions({}, 1);
  ::unsetenv("PYTHONPATH");
  ASSERT_NE(server, nullptr);
  ExpectOperatorModuleRuns(*server->Connect());
}

std::unique_ptr<ServerProcess> Launch(std::vector<std::string> args) {
  ServerOptions options;
  options.args = std::move(args);
  options.args.push_back("--workers=1");
  return ServerProcess::Launch(std::move(options));
}

void ExpectRefusedToStart(ServerProcess& server, const std::string& dir) {
  ASSERT_FALSE(server.ready()) << "it started: " << server.Log();
  EXPECT_EQ(server.ExitCode(), 2) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr(dir + " is writable by")) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr("chmod go-w " + dir)) << server.Log();
}

TEST(CodeDirectoryTest, APythonPathOthersMayWriteToStopsTheServer) {
  Layout layout = MakeLayout();
  ::chmod(layout.views.c_str(), 0777);
  auto server = Launch({"--python-path=" + layout.views});
  ExpectRefusedToStart(*server, layout.views);
  EXPECT_THAT(server->Log(), HasSubstr("--python-path"));

  // Group-writable is no better; sticky does not help the directory the code is in.
  ::chmod(layout.views.c_str(), 01775);
  server = Launch({"--python-path=" + layout.views});
  ExpectRefusedToStart(*server, layout.views);
  ::chmod(layout.views.c_str(), 0755);

  // A directory above it, writable without the sticky bit: the views could be renamed away.
  std::string outer = layout.base + "/outer";
  std::filesystem::create_directories(outer + "/views");
  ::chmod((outer + "/views").c_str(), 0755);
  WriteOperatorModule(outer + "/views");
  ::chmod(outer.c_str(), 0777);
  server = Launch({"--python-path=" + outer + "/views"});
  ExpectRefusedToStart(*server, outer);
  EXPECT_THAT(server->Log(), HasSubstr("without the sticky bit"));

  // The same on PYTHONPATH.
  ::setenv("PYTHONPATH", (outer + "/views").c_str(), 1);
  server = Launch({});
  ::unsetenv("PYTHONPATH");
  ExpectRefusedToStart(*server, outer);
  EXPECT_THAT(server->Log(), HasSubstr("PYTHONPATH"));

  // With the sticky bit above (as /tmp has), it starts and serves.
  ::chmod(outer.c_str(), 01777);
  server = Launch({"--python-path=" + outer + "/views"});
  ASSERT_TRUE(server->ready()) << server->Log();
  ExpectOperatorModuleRuns(*server->Connect());
}

TEST(CodeDirectoryTest, AVirtualenvOthersMayWriteToStopsTheServer) {
  Layout layout = MakeLayout();
  ::chmod(layout.venv.c_str(), 0777);
  auto server = Launch({"--virtualenv=" + layout.venv, "--python-path=" + layout.views});
  ExpectRefusedToStart(*server, layout.venv);
}

}  // namespace
}  // namespace cnp::security::testing
