// The declaration file of cnp derive: qvarn-mr's handlers dict, naming functions.
#include "client/derive/declaration.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::derive {
namespace {

using ::testing::HasSubstr;

TEST(DeclarationTest, MapStagesComeBeforeReduceStages) {
  absl::StatusOr<Declaration> d = ParseDeclaration(R"(
name: reports
handlers:
  company_reports:
    company_reports__map: {type: reduce, version: 2, handler: h.join, sources: true}
  company_reports__map:
    orgs: {type: map, version: 1, handler: h.org_key|3}
    reports: {type: map, version: 1, handler: h.report_org}
)", "d.yml");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name, "reports");
  ASSERT_EQ(d->stages.size(), 3u);
  EXPECT_FALSE(d->stages[0].reduce);
  EXPECT_EQ(d->stages[0].source, "orgs");
  EXPECT_EQ(d->stages[0].handler, "h.org_key|3");
  EXPECT_EQ(d->stages[1].source, "reports");
  EXPECT_TRUE(d->stages[2].reduce);
  EXPECT_TRUE(d->stages[2].with_sources);
  EXPECT_EQ(d->stages[2].version, 2);
  EXPECT_EQ(d->stages[2].target, "company_reports");
}

TEST(DeclarationTest, JsonWorksToo) {
  absl::StatusOr<Declaration> d = ParseDeclaration(
      R"({"name": "n", "handlers": {"t": {"s": {"type": "map", "version": 0, "handler": "m.f"}}}})",
      "d.json");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->stages.size(), 1u);
}

void ExpectProblem(const std::string& yaml, const std::string& text) {
  absl::StatusOr<Declaration> d = ParseDeclaration(yaml, "d.yml");
  ASSERT_FALSE(d.ok()) << yaml;
  EXPECT_TRUE(absl::IsInvalidArgument(d.status()));
  EXPECT_THAT(d.status().message(), HasSubstr(text)) << yaml;
  EXPECT_THAT(d.status().message(), HasSubstr("d.yml")) << yaml;
}

TEST(DeclarationTest, ProblemsAreNamed) {
  ExpectProblem("handlers: {t: {s: {type: map, version: 1, handler: m.f}}}", "needs 'name'");
  ExpectProblem("name: n\nhandlers: {t: {s: {type: mop, version: 1, handler: m.f}}}",
                "must be map or reduce");
  ExpectProblem("name: n\nhandlers: {t: {s: {type: map, version: x, handler: m.f}}}",
                "version must be a whole number");
  ExpectProblem("name: n\nhandlers: {t: {s: {type: map, version: 1}}}", "needs 'handler'");
  ExpectProblem("name: n\nhandlers: {t: {s: {type: map, version: 1, handler: m.f, color: red}}}",
                "unknown field 'color'");
  ExpectProblem("name: n\nhandlers: {Bad: {s: {type: map, version: 1, handler: m.f}}}",
                "not a CouchDB database name");
  ExpectProblem("name: n\nhandlers: {r: {s: {type: reduce, version: 1, handler: m.f}}}",
                "not a map target");
  ExpectProblem(
      "name: n\nhandlers: {m: {s: {type: map, version: 1, handler: m.f}},"
      " r: {m: {type: reduce, version: 1, handler: m.g}, s: {type: reduce, version: 1, handler: m.g}}}",
      "more than one source");
  ExpectProblem("name: n\nhandlers: {t: {s: {type: map, version: 1, handler: m.f, sources: true}}}",
                "reduce handlers only");
  ExpectProblem("name: n\nhandlers: {t: {s: {type: map, version: 1, handler: [m.f]}}}",
                "single value");
}

}  // namespace
}  // namespace cnp::derive
