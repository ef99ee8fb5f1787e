#include "common/module_name.h"

#include "gtest/gtest.h"

namespace cnp {
namespace {

TEST(ModuleNameTest, DottedIdentifiersAreModuleNames) {
  for (const char* name : {"myviews", "myviews.towns", "_private.v2", "a.b.c", "vues_été"}) {
    EXPECT_TRUE(LooksLikeModuleName(name)) << name;
  }
}

TEST(ModuleNameTest, AnythingElseIsNot) {
  for (const char* name : {"", ".", "myviews.", ".myviews", "a..b", "my-views", "1views",
                           "views.2", "views|2", "my views", "views/towns", "views\n"}) {
    EXPECT_FALSE(LooksLikeModuleName(name)) << name;
  }
}

}  // namespace
}  // namespace cnp
