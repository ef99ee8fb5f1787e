// The launch settings' canonical line: two spellings of one configuration are one line, so an
// adapter does not replace a server that already runs its settings (found by a review:
// `--python-path=/x/py/` against `/x/py`, `/x/./py`, `--allow-module=revfns,revfns` each
// replaced the server).
#include "service/session/launch_settings.h"

#include "gtest/gtest.h"

namespace cnp::session {
namespace {

TEST(LaunchSettingsTest, PathsAreCanonicalLexically) {
  EXPECT_EQ(CanonicalSettingsPath("/x/py/"), "/x/py");
  EXPECT_EQ(CanonicalSettingsPath("/x/./py"), "/x/py");
  EXPECT_EQ(CanonicalSettingsPath("//x//py//"), "/x/py");
  EXPECT_EQ(CanonicalSettingsPath("/"), "/");
  EXPECT_EQ(CanonicalSettingsPath("/."), "/");
  // After a symbolic link ".." is not the parent the text shows: kept.
  EXPECT_EQ(CanonicalSettingsPath("/x/link/../py"), "/x/link/../py");
}

TEST(LaunchSettingsTest, SpellingsOfOneConfigurationAreOneLine) {
  const std::string plain = LaunchSettingsText({"/x/py"}, {"revfns"}, 0);
  EXPECT_EQ(plain, "python-path=/x/py allow-module=revfns workers=default");
  EXPECT_EQ(LaunchSettingsText({"/x/py/"}, {"revfns"}, 0), plain);
  EXPECT_EQ(LaunchSettingsText({"/x/./py"}, {"revfns"}, 0), plain);
  EXPECT_EQ(LaunchSettingsText({"/x/py", "/x/py/"}, {"revfns"}, 0), plain);
  EXPECT_EQ(LaunchSettingsText({"/x/py"}, {"revfns", "revfns"}, 0), plain);
  EXPECT_EQ(LaunchSettingsText({"/a"}, {"b", "a", "b"}, 2),
            "python-path=/a allow-module=a,b workers=2");
}

TEST(LaunchSettingsTest, PythonPathOrderStillCounts) {
  // The first directory holding a module is the one imported: another order is another
  // configuration. A repeated directory keeps its first place.
  EXPECT_NE(LaunchSettingsText({"/a", "/b"}, {}, 0), LaunchSettingsText({"/b", "/a"}, {}, 0));
  EXPECT_EQ(LaunchSettingsText({"/a", "/b", "/a/"}, {}, 0),
            "python-path=/a,/b allow-module= workers=default");
}

TEST(LaunchSettingsTest, PreloadedModulesKeepTheirOrderAndAreGivenOnce) {
  // A server that preloads nothing has the line it had before preloading existed.
  EXPECT_EQ(LaunchSettingsText({"/x/py"}, {"a"}, 0, {}),
            "python-path=/x/py allow-module=a workers=default");
  EXPECT_EQ(LaunchSettingsText({"/x/py"}, {"a"}, 0, {"a.slow", "a.big", "a.slow"}),
            "python-path=/x/py allow-module=a workers=default preload-module=a.slow,a.big");
  // Imports run in their order: another order is another configuration.
  EXPECT_NE(LaunchSettingsText({"/x/py"}, {"a"}, 0, {"a.slow", "a.big"}),
            LaunchSettingsText({"/x/py"}, {"a"}, 0, {"a.big", "a.slow"}));
}

TEST(LaunchSettingsTest, CallTimeoutIsPartOfTheLine) {
  // Zero: none given (the line of a server started before adapters passed one on).
  EXPECT_EQ(LaunchSettingsText({"/x/py"}, {"a"}, 0, {}, absl::ZeroDuration()),
            "python-path=/x/py allow-module=a workers=default");
  EXPECT_EQ(LaunchSettingsText({"/x/py"}, {"a"}, 0, {}, kAdapterCallTimeout),
            "python-path=/x/py allow-module=a workers=default call-timeout=10m");
  // Spelt as a duration, so 90s and 1m30s are one line, and another value another line.
  EXPECT_EQ(LaunchSettingsText({}, {}, 0, {"m"}, absl::Seconds(90)),
            "python-path= allow-module= workers=default preload-module=m call-timeout=1m30s");
  EXPECT_NE(LaunchSettingsText({}, {}, 0, {}, absl::Seconds(60)),
            LaunchSettingsText({}, {}, 0, {}, kAdapterCallTimeout));
}

TEST(LaunchSettingsTest, DifferentSettingsStayDifferent) {
  EXPECT_NE(LaunchSettingsText({"/x/py"}, {"a"}, 0), LaunchSettingsText({"/x/py2"}, {"a"}, 0));
  EXPECT_NE(LaunchSettingsText({"/x/py"}, {"a"}, 0), LaunchSettingsText({"/x/py"}, {"a", "b"}, 0));
  EXPECT_NE(LaunchSettingsText({"/x/py"}, {"a"}, 0), LaunchSettingsText({"/x/py"}, {"a"}, 3));
}

}  // namespace
}  // namespace cnp::session
