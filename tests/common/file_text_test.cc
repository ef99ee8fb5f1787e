// A file a user named is read whole, or refused as bad input saying why.
#include "common/file_text.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;

TEST(FileTextTest, ReadsTheWholeFile) {
  const std::string path = testing::MakeTempDir("text") + "/docs.json";
  const std::string text(200'000, 'x');
  testing::WriteFile(path, text);
  absl::StatusOr<std::string> read = ReadFileText(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, text);
}

TEST(FileTextTest, StopsJustPastTheBound) {
  const std::string path = testing::MakeTempDir("text") + "/big.yml";
  testing::WriteFile(path, std::string(200'000, 'y'));
  absl::StatusOr<std::string> read = ReadFileText(path, 1000);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->size(), 1001u);  // enough to tell "too large"
  absl::StatusOr<std::string> exact = ReadFileText(path, 200'000);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->size(), 200'000u);
}

TEST(FileTextTest, SaysWhyAFileCannotBeRead) {
  const std::string dir = testing::MakeTempDir("text");
  absl::StatusOr<std::string> missing = ReadFileText(dir + "/none.json");
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status()));
  EXPECT_EQ(missing.status().message(),
            "cannot read " + dir + "/none.json: No such file or directory");
  absl::StatusOr<std::string> folder = ReadFileText(dir);
  EXPECT_TRUE(absl::IsInvalidArgument(folder.status()));
  EXPECT_THAT(folder.status().message(), HasSubstr("Is a directory"));
}

}  // namespace
}  // namespace cnp
