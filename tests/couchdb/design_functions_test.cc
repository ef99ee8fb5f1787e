// The functions of a design document, read in one streaming pass (design_functions.h), and the
// smaller design document that holds only them, which cnp-adapter keeps to teach a new stream.
#include "service/couchdb/design_functions.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::couchdb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Every function seen, as "path.joined=name", in order.
std::vector<std::string> Functions(std::string_view json) {
  std::vector<std::string> seen;
  absl::Status read =
      ReadDesignFunctions(json, [&](const std::vector<std::string>& path, std::string_view name) {
        seen.push_back(absl::StrJoin(path, ".") + "=" + std::string(name));
        return true;
      });
  EXPECT_TRUE(read.ok()) << read << " for " << json;
  return seen;
}

constexpr std::string_view kDesignDoc = R"({"_id":"_design/a","_rev":"1-x","language":"python",
    "views":{"v":{"map":"m.map","reduce":"m.red","opts":{"x":"no"}},"w":{"map":"m.w"},
             "lib":{"a":{"b":"no"}}},
    "options":{"local_seq":true},"shows":{"s":"m.show","n":[1,"no"]},
    "validate_doc_update":"m.vdu","rewrites":[{"from":"/","to":"no"}],
    "_attachments":{"f":{"data":"bm8="}},"filters":{"f":"m.f"},"views":{"v":{"map":"m.again"}}})";

TEST(DesignFunctionsTest, SeesTheStringsOfFunctionSectionsUpToThreeKeysDeepInOrder) {
  EXPECT_THAT(Functions(kDesignDoc),
              ElementsAre("views.v.map=m.map", "views.v.reduce=m.red", "views.w.map=m.w",
                          "shows.s=m.show", "validate_doc_update=m.vdu", "filters.f=m.f",
                          "views.v.map=m.again"));
  // A number past a double's range is a number wherever it stands, and those before it are
  // seen once.
  EXPECT_THAT(Functions(R"({"shows":{"a":"m.a","n":)" + std::string(400, '9') + R"(,"b":"m.b"}})"),
              ElementsAre("shows.a=m.a", "shows.b=m.b"));
  EXPECT_THAT(Functions("{}"), IsEmpty());
}

TEST(DesignFunctionsTest, StopsWhenTheVisitorSaysSo) {
  int seen = 0;
  absl::Status read = ReadDesignFunctions(
      R"({"shows":{"a":"m.a","b":"m.b"},"broken":)",
      [&](const std::vector<std::string>&, std::string_view) { return ++seen < 2; });
  EXPECT_TRUE(read.ok()) << read;  // the broken end is never reached
  EXPECT_EQ(seen, 2);
}

TEST(DesignFunctionsTest, RefusesWhatIsNotOneJsonObjectOfUtf8) {
  auto refused = [](std::string_view json) {
    return ReadDesignFunctions(json, [](const std::vector<std::string>&, std::string_view) {
      return true;
    });
  };
  EXPECT_THAT(refused("[]").message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(refused("\"views\"").message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(refused(std::string(400, '9')).message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(refused(R"({"shows":{"a":"m.a"})").message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(refused("{} {}").message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(refused("{\"shows\":{\"a\":\"m.\xff\"}}").message(), HasSubstr("not valid JSON"));
}

// What the adapter keeps of a design document: its functions only, and read again they are
// the same functions in the same order (the first of a key given twice still comes first).
TEST(DesignFunctionsTest, TheSmallerDocumentHoldsTheSameFunctions) {
  absl::StatusOr<std::string> small = DesignFunctionsJson(kDesignDoc);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(*small,
            R"({"views":{"v":{"map":"m.map","reduce":"m.red"},"w":{"map":"m.w"}},)"
            R"("shows":{"s":"m.show"},"validate_doc_update":"m.vdu","filters":{"f":"m.f"},)"
            R"("views":{"v":{"map":"m.again"}}})");
  EXPECT_EQ(Functions(*small), Functions(kDesignDoc));
  EXPECT_EQ(*DesignFunctionsJson(R"({"data":[1,2,3]})"), "{}");
  // Escapes are written back as JSON.
  const std::string escaped = R"({"shows":{"a\"b":"m.\u00e9\n"}})";
  EXPECT_EQ(Functions(*DesignFunctionsJson(escaped)), Functions(escaped));
  EXPECT_FALSE(DesignFunctionsJson("[]").ok());
}

}  // namespace
}  // namespace cnp::couchdb
