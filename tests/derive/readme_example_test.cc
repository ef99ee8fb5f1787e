// The README's cnp derive section shows the example declaration that its commands run
// (examples/derive/derive.yml): the two must declare the same stages.
#include <string>

#include "client/derive/declaration.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"

namespace cnp::derive {
namespace {

TEST(ReadmeExampleTest, TheReadmesDeclarationIsTheExamplesOne) {
  const std::string readme = testing::ReadFile(testing::Runfile("README.md"));
  const size_t section = readme.find("\n## Derived databases: cnp derive\n");
  ASSERT_NE(section, std::string::npos);
  const size_t start = readme.find("```yaml\n", section);
  ASSERT_NE(start, std::string::npos);
  const size_t body = start + 8;
  const size_t end = readme.find("```", body);
  ASSERT_NE(end, std::string::npos);
  absl::StatusOr<Declaration> shown = ParseDeclaration(readme.substr(body, end - body), "README.md");
  ASSERT_TRUE(shown.ok()) << shown.status();
  absl::StatusOr<Declaration> example = ReadDeclaration(testing::Runfile("examples/derive/derive.yml"));
  ASSERT_TRUE(example.ok()) << example.status();

  EXPECT_EQ(shown->name, example->name);
  ASSERT_EQ(shown->stages.size(), example->stages.size());
  for (size_t i = 0; i < shown->stages.size(); ++i) {
    const Stage& a = shown->stages[i];
    const Stage& b = example->stages[i];
    EXPECT_EQ(a.target, b.target) << i;
    EXPECT_EQ(a.source, b.source) << i;
    EXPECT_EQ(a.reduce, b.reduce) << a.target;
    EXPECT_EQ(a.version, b.version) << a.target;
    EXPECT_EQ(a.handler, b.handler) << a.target;
    EXPECT_EQ(a.with_sources, b.with_sources) << a.target;
  }
}

}  // namespace
}  // namespace cnp::derive
