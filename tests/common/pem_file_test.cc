// The one reader of PEM certificate files (TLS files of cnp-server and its clients, --ca-file of
// cnp upload, sync and derive): bounded, checked, and refusing with the reason.
#include "common/pem_file.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;

constexpr char kCertificate[] =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";

TEST(PemFileTest, ReadsACertificateFile) {
  const std::string path = testing::MakeTempDir("pem") + "/ca.pem";
  testing::WriteFile(path, kCertificate);
  absl::StatusOr<std::string> pem = ReadPemFile("tls-ca", path);
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_EQ(*pem, kCertificate);
}

TEST(PemFileTest, SaysWhyAFileIsRefused) {
  const std::string dir = testing::MakeTempDir("pem");
  absl::StatusOr<std::string> missing = ReadPemFile("tls-cert", dir + "/none.pem");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_EQ(missing.status().message(),
            "--tls-cert: cannot read " + dir + "/none.pem: No such file or directory");

  absl::StatusOr<std::string> folder = ReadPemFile("ca-file", dir);
  EXPECT_TRUE(absl::IsNotFound(folder.status())) << folder.status();
  EXPECT_THAT(folder.status().message(), HasSubstr("Is a directory"));

  for (const char* text : {"", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}) {
    testing::WriteFile(dir + "/other.pem", text);
    absl::StatusOr<std::string> other = ReadPemFile("ca-file", dir + "/other.pem");
    EXPECT_TRUE(absl::IsInvalidArgument(other.status())) << other.status();
    EXPECT_EQ(other.status().message(),
              "--ca-file: " + dir +
                  "/other.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  }
}

// A certificate at the start of a file far over the limit is still refused: the reader stops
// at the bound instead of taking the whole file into memory.
TEST(PemFileTest, RefusesAFileLargerThanTheBound) {
  const std::string path = testing::MakeTempDir("pem") + "/huge.pem";
  testing::WriteFile(path, kCertificate + std::string(3 * kMaxPemFileBytes, '\n'));
  absl::StatusOr<std::string> pem = ReadPemFile("tls-client-ca", path);
  EXPECT_TRUE(absl::IsInvalidArgument(pem.status())) << pem.status();
  EXPECT_EQ(pem.status().message(),
            "--tls-client-ca: " + path + " is larger than 1 MiB; is it a PEM certificate file?");
}

}  // namespace
}  // namespace cnp
