// The plan for one design document: what is kept, what changes, and when the index rebuilds.
#include "common/couchdb/design_diff.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/json.h"

namespace cnp::couchdb {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

rapidjson::Document Json(const char* text) {
  absl::StatusOr<rapidjson::Document> doc = ParseJson(text);
  EXPECT_TRUE(doc.ok()) << text;
  return std::move(*doc);
}

std::vector<std::string> Paths(const DesignDocPlan& plan) {
  std::vector<std::string> paths;
  for (const auto& c : plan.changes) paths.push_back(c.path());
  return paths;
}

constexpr char kDesired[] =
    R"({"_id": "_design/d", "language": "python",
        "views": {"a": {"map": "m.a|2"}, "b": {"map": "m.b|1"}},
        "validate_doc_update": "m.v|1"})";

TEST(DesignDiffTest, NothingStoredMeansEveryFieldIsNewAndTheIndexBuilds) {
  DesignDocPlan plan = PlanDesignDoc(Json(kDesired), nullptr, false);
  EXPECT_THAT(Paths(plan), ElementsAre("_id", "language", "views", "validate_doc_update"));
  EXPECT_TRUE(plan.index_rebuild);
  EXPECT_THAT(plan.rebuilt_views, ElementsAre("a", "b"));
}

TEST(DesignDiffTest, SameContentInAnotherOrderWithARevIsUnchanged) {
  rapidjson::Document stored = Json(
      R"({"validate_doc_update": "m.v|1", "_rev": "3-abc",
          "views": {"b": {"map": "m.b|1"}, "a": {"map": "m.a|2"}},
          "language": "python", "_id": "_design/d"})");
  DesignDocPlan plan = PlanDesignDoc(Json(kDesired), &stored, false);
  EXPECT_THAT(plan.changes, IsEmpty());
  EXPECT_FALSE(plan.index_rebuild);
  EXPECT_THAT(plan.rebuilt_views, IsEmpty());
}

TEST(DesignDiffTest, ANewVersionOfAMapRebuildsEveryViewOfTheDocument) {
  rapidjson::Document stored = Json(
      R"({"_id": "_design/d", "_rev": "1-a", "language": "python",
          "views": {"a": {"map": "m.a|1"}, "b": {"map": "m.b|1"}},
          "validate_doc_update": "m.v|1"})");
  DesignDocPlan plan = PlanDesignDoc(Json(kDesired), &stored, false);
  ASSERT_EQ(plan.changes.size(), 1u);
  EXPECT_EQ(plan.changes[0].path(), "views.a.map");
  EXPECT_EQ(plan.changes[0].old_json(), "\"m.a|1\"");
  EXPECT_EQ(plan.changes[0].new_json(), "\"m.a|2\"");
  EXPECT_TRUE(plan.index_rebuild);
  EXPECT_THAT(plan.rebuilt_views, ElementsAre("a", "b"));
}

TEST(DesignDiffTest, ChangingOnlyValidationDoesNotRebuild) {
  rapidjson::Document stored = Json(
      R"({"_id": "_design/d", "_rev": "1-a", "language": "python",
          "views": {"a": {"map": "m.a|2"}, "b": {"map": "m.b|1"}},
          "validate_doc_update": "m.v|0"})");
  DesignDocPlan plan = PlanDesignDoc(Json(kDesired), &stored, false);
  EXPECT_THAT(Paths(plan), ElementsAre("validate_doc_update"));
  EXPECT_FALSE(plan.index_rebuild);
}

TEST(DesignDiffTest, FieldsTheYamlDoesNotMentionAreKeptOrDropped) {
  const char* stored_text =
      R"({"_id": "_design/d", "_rev": "1-a", "language": "python",
          "views": {"a": {"map": "m.a|2"}, "b": {"map": "m.b|1"}, "old": {"map": "m.o|1"}},
          "validate_doc_update": "m.v|1", "owner": "ops", "shows": {"s": "m.s|1"}})";
  rapidjson::Document stored = Json(stored_text);

  DesignDocPlan kept = PlanDesignDoc(Json(kDesired), &stored, false);
  EXPECT_THAT(kept.kept_fields, ElementsAre("views.old", "owner", "shows"));
  EXPECT_THAT(kept.changes, IsEmpty());
  EXPECT_TRUE(kept.document.HasMember("owner"));

  DesignDocPlan dropped = PlanDesignDoc(Json(kDesired), &stored, true);
  EXPECT_THAT(dropped.dropped_fields, ElementsAre("views.old", "owner", "shows"));
  EXPECT_THAT(Paths(dropped), ElementsAre("views.old", "owner", "shows"));
  EXPECT_TRUE(dropped.index_rebuild);  // a view went away
  EXPECT_FALSE(dropped.document.HasMember("owner"));
  EXPECT_EQ(dropped.changes[1].old_json(), "\"ops\"");
  EXPECT_EQ(dropped.changes[1].new_json(), "");
}

TEST(DesignDiffTest, IndexInputsAreViewsOptionsAndLanguage) {
  rapidjson::Document a = Json(R"({"views": {"v": {"map": "m|1"}}, "language": "python"})");
  rapidjson::Document other_language =
      Json(R"({"views": {"v": {"map": "m|1"}}, "language": "cnp"})");
  rapidjson::Document with_options =
      Json(R"({"views": {"v": {"map": "m|1"}}, "language": "python", "options": {"x": 1}})");
  rapidjson::Document with_shows =
      Json(R"({"views": {"v": {"map": "m|1"}}, "language": "python", "shows": {"s": "s|1"}})");
  EXPECT_FALSE(SameIndexInputs(a, other_language));
  EXPECT_FALSE(SameIndexInputs(a, with_options));
  EXPECT_TRUE(SameIndexInputs(a, with_shows));
}

// CouchDB's index signature hashes the inputs as stored (couch_mrview_util:ddoc_to_mrst):
// views that share a map are listed in the order of "views", option lists keep their order,
// and 1 is not 1.0.
TEST(DesignDiffTest, IndexInputsAreTheSameOnlyInTheSameOrderAndSpelling) {
  rapidjson::Document a = Json(
      R"({"views": {"total": {"map": "m.f|1", "reduce": "_sum"},
                    "count": {"map": "m.f|1", "reduce": "_count"}}})");
  rapidjson::Document b = Json(
      R"({"views": {"count": {"map": "m.f|1", "reduce": "_count"},
                    "total": {"map": "m.f|1", "reduce": "_sum"}}})");
  EXPECT_TRUE(SameIndexInputs(a, a));
  EXPECT_FALSE(SameIndexInputs(a, b));
  EXPECT_FALSE(SameIndexInputs(Json(R"({"options": {"x": 1}})"), Json(R"({"options": {"x": 1.0}})")));
}

// A YAML file whose views were reordered, written for another change (a filter), must not
// rebuild the index: the views go back as stored, so the signature stays.
TEST(DesignDiffTest, AnUnrelatedChangeWritesReorderedIndexInputsAsStored) {
  rapidjson::Document stored = Json(
      R"({"_id": "_design/d", "_rev": "2-b", "language": "python",
          "views": {"total": {"map": "m.f|1", "reduce": "_sum"},
                    "count": {"map": "m.f|1", "reduce": "_count"}},
          "options": {"local_seq": true, "collation": "raw", "n": 1}})");
  rapidjson::Document desired = Json(
      R"({"_id": "_design/d", "language": "python",
          "views": {"count": {"map": "m.f|1", "reduce": "_count"},
                    "total": {"map": "m.f|1", "reduce": "_sum"}},
          "options": {"n": 1.0, "collation": "raw", "local_seq": true},
          "filters": {"f": "m.g|1"}})");
  DesignDocPlan plan = PlanDesignDoc(desired, &stored, false);
  EXPECT_THAT(Paths(plan), ElementsAre("filters"));
  EXPECT_FALSE(plan.index_rebuild);
  EXPECT_EQ(ToJson(plan.document["views"]), ToJson(stored["views"]));
  EXPECT_EQ(ToJson(plan.document["options"]), ToJson(stored["options"]));
  EXPECT_TRUE(SameIndexInputs(plan.document, stored));
}

}  // namespace
}  // namespace cnp::couchdb
