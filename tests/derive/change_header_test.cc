// Where a change that cannot be parsed is, and whose it is, found without building its tree.
#include "client/derive/change_header.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/json.h"

namespace cnp::derive {
namespace {

using ::testing::Optional;
using ::testing::FieldsAre;

TEST(ChangeHeaderTest, FindsSeqAndIdOfARowPastADocumentNestedAMillionDeep) {
  // The document first, then seq and id: the scan goes through it with a counter.
  const std::string row = absl::StrCat(R"({"doc":{"x":)", std::string(1000000, '['), std::string(1000000, ']'),
                                       R"(},"seq":"7-g1AA","id":"deep\u00e9","changes":[]})");
  EXPECT_THAT(ScanChangeHeader(row, ChangeText::kRow), Optional(FieldsAre(R"("7-g1AA")", "deep\xc3\xa9")));
  EXPECT_THAT(ScanChangeHeader(R"({"seq":12,"id":"n"})", ChangeText::kRow), Optional(FieldsAre("12", "n")));
}

TEST(ChangeHeaderTest, FindsTheFirstResultOfAnAnswerCutOffInItsDocument) {
  const std::string answer = absl::StrCat(R"({"results":[{"seq":"3-g1AA","id":"big","changes":[{"rev":"1-x"}],)",
                                          R"("doc":{"_id":"big","pad":")", std::string(1000, 'x'));
  EXPECT_THAT(ScanChangeHeader(answer, ChangeText::kFirstResult), Optional(FieldsAre(R"("3-g1AA")", "big")));
  // Members named seq and id elsewhere are not the change's.
  EXPECT_EQ(ScanChangeHeader(R"({"seq":1,"id":"top","results":[]})", ChangeText::kFirstResult), std::nullopt);
  EXPECT_EQ(ScanChangeHeader(R"({"results":[{"doc":{"seq":1,"id":"inner"}}]})", ChangeText::kFirstResult),
            std::nullopt);
  EXPECT_EQ(ScanChangeHeader(R"({"doc":{"seq":1,"id":"inner"}})", ChangeText::kRow), std::nullopt);
}

TEST(ChangeHeaderTest, GivesNothingWithoutBothOrWithAnIdThatIsNotUtf8) {
  EXPECT_EQ(ScanChangeHeader(R"({"id":"a","doc":{}})", ChangeText::kRow), std::nullopt);
  EXPECT_EQ(ScanChangeHeader(R"({"seq":null,"id":"a"})", ChangeText::kRow), std::nullopt);
  EXPECT_EQ(ScanChangeHeader("{\"seq\":1,\"id\":\"\xff\"}", ChangeText::kRow), std::nullopt);
  EXPECT_EQ(ScanChangeHeader("not json", ChangeText::kRow), std::nullopt);
}

TEST(ChangeHeaderTest, AnUnreadableChangeIsJsonWithItsSeqIdAndWhy) {
  absl::StatusOr<rapidjson::Document> change =
      couchdb::ParseJson(UnreadableChangeJson({R"("3-g1AA")", "a\"b"}, "JSON nested deeper than 4096 levels"));
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_EQ(couchdb::ToJson(*change),
            R"({"seq":"3-g1AA","id":"a\"b","cnp_unreadable":"JSON nested deeper than 4096 levels"})");
}

}  // namespace
}  // namespace cnp::derive
