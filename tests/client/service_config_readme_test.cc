// The README prints the service config cnp's clients give every channel, for callers in other
// languages to give theirs (README "Calling it over gRPC"): the printed JSON must be what
// client/lib/service_config.cc builds, compared as JSON (the README's is laid out for reading).
#include <string>

#include "client/lib/service_config.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"

namespace cnp::client {
namespace {

std::string Compact(const rapidjson::Document& document) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  document.Accept(writer);
  return buffer.GetString();
}

TEST(ServiceConfigReadmeTest, TheReadmesServiceConfigIsTheClientsOne) {
  const std::string readme = testing::ReadFile(testing::Runfile("README.md"));
  const size_t marker = readme.find("<!-- service-config:");
  ASSERT_NE(marker, std::string::npos) << "README.md has no service-config block";
  const size_t start = readme.find("```json\n", marker);
  ASSERT_NE(start, std::string::npos);
  const size_t body = start + 8;
  const size_t end = readme.find("```", body);
  ASSERT_NE(end, std::string::npos);

  rapidjson::Document shown;
  shown.Parse(readme.substr(body, end - body).c_str());
  ASSERT_FALSE(shown.HasParseError()) << "README.md's service config is not JSON";
  rapidjson::Document built;
  const std::string config = ClientServiceConfig(RetryPolicy::kIdempotentCalls, true);
  built.Parse(config.c_str());
  ASSERT_FALSE(built.HasParseError()) << config;
  // rapidjson compares objects member by member, whatever their order.
  EXPECT_TRUE(shown == built) << "README.md shows\n" << Compact(shown) << "\nthe clients use\n"
                              << Compact(built);
}

}  // namespace
}  // namespace cnp::client
