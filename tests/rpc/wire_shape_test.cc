// A request's wire form checked before it is parsed (service/rpc/wire_shape.h): fields the type
// does not have, at any depth, known fields sent as another wire type, repeated fields past
// their caps and bytes that are no message are refused; a valid request passes, packed or not.
#include "service/rpc/wire_shape.h"

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "cnp/v1/functions.pb.h"
#include "cnp/v1/upload.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "gtest/gtest.h"

namespace cnp::rpc {
namespace {

using ::testing::HasSubstr;

std::string Varint(uint64_t value) {
  std::string out;
  do {
    out += static_cast<char>((value & 0x7f) | (value > 0x7f ? 0x80 : 0));
    value >>= 7;
  } while (value > 0);
  return out;
}

std::string Tag(int number, int wire_type) {
  return Varint((static_cast<uint64_t>(number) << 3) | wire_type);
}

std::string Bytes(int number, const std::string& bytes) {
  return Tag(number, 2) + Varint(bytes.size()) + bytes;
}

absl::Status TooMany(int64_t most) {
  return absl::ResourceExhaustedError(absl::StrCat("more than ", most));
}

const google::protobuf::FieldDescriptor* FieldOf(const google::protobuf::Descriptor* type,
                                                 int number) {
  return type->FindFieldByNumber(number);
}

absl::Status Check(const google::protobuf::Descriptor& type, const std::string& bytes,
                   const std::vector<RepeatedFieldCap>& caps = {}) {
  // In slices of 3 bytes, as gRPC hands a large request over in many: a field may straddle two.
  google::protobuf::io::ArrayInputStream wire(bytes.data(), static_cast<int>(bytes.size()), 3);
  return CheckWireShape(type, wire, caps);
}

TEST(WireShapeTest, AValidRequestPasses) {
  v1::ValidateRequest validate;
  validate.set_function("checks.strict");
  validate.set_new_doc(R"({"_id":"a"})");
  validate.set_sec_obj("{}");
  EXPECT_TRUE(Check(*v1::ValidateRequest::descriptor(), validate.SerializeAsString()).ok());

  v1::UploadRequest upload;
  v1::UploadFile* file = upload.add_files();
  file->set_name("views.yaml");
  file->set_text("design: x\n");
  upload.set_couchdb_url("http://127.0.0.1:5984");
  upload.set_ca_pem("pem");
  upload.set_max_conflict_retries(3);
  upload.set_staged(true);
  EXPECT_TRUE(Check(*v1::UploadRequest::descriptor(), upload.SerializeAsString()).ok());

  v1::DesignFunctionRequest design;
  design.set_kind(static_cast<v1::DesignFunctionKind>(1));
  design.set_function("shows.page");
  EXPECT_TRUE(Check(*v1::DesignFunctionRequest::descriptor(), design.SerializeAsString()).ok());

  EXPECT_TRUE(Check(*v1::MapRequest::descriptor(), "").ok());
}

TEST(WireShapeTest, AnUnknownFieldIsRefusedNamingTypeAndNumber) {
  v1::ValidateRequest validate;
  validate.set_function("checks.strict");
  const std::string bytes = validate.SerializeAsString() + Bytes(15, "");
  const absl::Status refused = Check(*v1::ValidateRequest::descriptor(), bytes);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("cnp.v1.ValidateRequest has no field 15"));
  // Whatever its wire type.
  EXPECT_THAT(Check(*v1::SessionInput::descriptor(), Tag(9, 0) + Varint(1)).message(),
              HasSubstr("cnp.v1.SessionInput has no field 9"));
}

TEST(WireShapeTest, AnUnknownFieldInsideANestedMessageIsRefused) {
  const std::string file = Bytes(1, "a.yaml") + Bytes(15, "");
  const absl::Status refused =
      Check(*v1::UploadRequest::descriptor(), Bytes(2, "http://x") + Bytes(1, file));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("cnp.v1.UploadFile has no field 15"));
}

TEST(WireShapeTest, AKnownFieldOfAnotherWireTypeIsRefused) {
  // ResolveRequest.functions is a string, sent here as a varint.
  const absl::Status refused = Check(*v1::ResolveRequest::descriptor(), Tag(1, 0) + Varint(7));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(),
              HasSubstr("field 1 (functions) of cnp.v1.ResolveRequest came as a varint"));
  // A bool sent as bytes.
  EXPECT_EQ(Check(*v1::ReduceRequest::descriptor(), Bytes(2, "x")).code(),
            absl::StatusCode::kInvalidArgument);
  // A nested message's field, as 4 fixed bytes.
  EXPECT_EQ(Check(*v1::UploadRequest::descriptor(), Bytes(1, Tag(2, 5) + "abcd")).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WireShapeTest, ARepeatedFieldPastItsCapIsRefusedAsTheCapSays) {
  const std::vector<RepeatedFieldCap> caps = {
      {FieldOf(v1::ResolveRequest::descriptor(), 1), 3, &TooMany}};
  std::string names;
  for (int i = 0; i < 3; ++i) names += Bytes(1, "");
  EXPECT_TRUE(Check(*v1::ResolveRequest::descriptor(), names, caps).ok());
  const absl::Status refused =
      Check(*v1::ResolveRequest::descriptor(), names + Bytes(1, "x"), caps);
  EXPECT_EQ(refused, TooMany(3));
  // Counted per message: two files of one name each, under a cap of one name per file.
  const std::vector<RepeatedFieldCap> files = {
      {FieldOf(v1::UploadRequest::descriptor(), 1), 2, &TooMany}};
  const std::string two = Bytes(1, "") + Bytes(1, "");
  EXPECT_TRUE(Check(*v1::UploadRequest::descriptor(), two, files).ok());
  EXPECT_EQ(Check(*v1::UploadRequest::descriptor(), two + Bytes(1, ""), files), TooMany(2));
}

TEST(WireShapeTest, UncappedRepeatedFieldsAreBoundByTheRequestsBytes) {
  // Resolve's names without a cap: 1,024 empty ones pass, whatever the request's size...
  std::string names;
  for (int64_t i = 0; i < kUncappedElementsFloor; ++i) names += Bytes(1, "");
  EXPECT_TRUE(Check(*v1::ResolveRequest::descriptor(), names).ok());
  // ...one more in as few bytes does not...
  const absl::Status refused = Check(*v1::ResolveRequest::descriptor(), names + Bytes(1, ""));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("1025 elements of repeated fields in 2050 bytes"));
  // ...and names of 16 bytes each pass in any number.
  std::string long_names;
  for (int i = 0; i < 5000; ++i) long_names += Bytes(1, std::string(14, 'f'));
  EXPECT_TRUE(Check(*v1::ResolveRequest::descriptor(), long_names).ok());
}

// SourceCodeInfo.Location.path is a packed repeated int32: parsers take it packed or not, and
// its elements count one by one.
TEST(WireShapeTest, APackedRepeatedFieldIsTakenAndItsElementsCounted) {
  const google::protobuf::Descriptor& location =
      *google::protobuf::SourceCodeInfo::Location::descriptor();
  google::protobuf::SourceCodeInfo::Location packed;
  for (int i = 0; i < 5; ++i) packed.add_path(i * 1000);
  packed.add_span(1);
  EXPECT_TRUE(Check(location, packed.SerializeAsString()).ok());
  const std::string unpacked = Tag(1, 0) + Varint(7) + Tag(1, 0) + Varint(300);
  EXPECT_TRUE(Check(location, unpacked).ok());
  const std::vector<RepeatedFieldCap> caps = {{FieldOf(&location, 1), 5, &TooMany}};
  EXPECT_TRUE(Check(location, packed.SerializeAsString(), caps).ok());
  packed.add_path(1);
  EXPECT_EQ(Check(location, packed.SerializeAsString(), caps), TooMany(5));
  // A packed run that ends inside a varint is no message.
  EXPECT_EQ(Check(location, Bytes(1, "\x81")).code(), absl::StatusCode::kInvalidArgument);
}

TEST(WireShapeTest, BytesThatAreNoMessageAreRefused) {
  for (const std::string& broken :
       {std::string("\xff\xff\xff\xff"), Bytes(2, "abc").substr(0, 3), std::string("\x0a"),
        // A nested message whose own field runs past its length.
        Bytes(1, Bytes(1, "abc").substr(0, 4)) + Bytes(2, "x")}) {
    const absl::Status refused = Check(*v1::UploadRequest::descriptor(), broken);
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
    EXPECT_THAT(refused.message(), HasSubstr("no protobuf message")) << refused;
  }
}

// Found by a review: a first tag of field number 0 (0x01: field 0, 8 fixed bytes), which no
// message has, skipped the field's lookup and read through a null field: one byte crashed the
// server, through the health service too, which needs no token. Refused, at any depth.
TEST(WireShapeTest, AFieldNumberedZeroIsNoMessage) {
  for (const std::string& broken :
       {std::string("\x01") + std::string(8, '\0'), std::string("\x05") + std::string(4, '\0'),
        std::string("\x01"), Tag(0, 2) + Varint(1) + "x"}) {
    for (const google::protobuf::Descriptor* type :
         {v1::UploadRequest::descriptor(), v1::ValidateRequest::descriptor()}) {
      const absl::Status refused = Check(*type, broken);
      EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument)
          << refused << " " << type->full_name() << " " << absl::CEscape(broken);
    }
  }
  // Inside a nested message (UploadRequest's field 1 is one) as well.
  const absl::Status nested =
      Check(*v1::UploadRequest::descriptor(), Bytes(1, std::string("\x01") + std::string(8, '\0')));
  EXPECT_EQ(nested.code(), absl::StatusCode::kInvalidArgument) << nested;
}

// The walk's cost on a normal Map: 1,000 documents of about 200 bytes and 3 functions, one
// pass over contiguous bytes as a unary Map has them. Printed for the record; bounded loosely
// (a loaded CI machine shares its cores).
TEST(WireShapeTest, AThousandDocumentMapIsWalkedQuickly) {
  v1::MapRequest map;
  for (const char* f : {"views.by_town", "views.by_date", "views.total"}) map.add_functions(f);
  for (int i = 0; i < 1000; ++i) {
    map.add_docs(absl::StrCat(R"({"_id":"doc-)", i, R"(","town":"Zurich","date":"2026-12-02",)",
                              R"("tags":["a","b","c"],"body":")", std::string(120, 'x'), "\"}"));
  }
  const std::string bytes = map.SerializeAsString();
  const std::vector<RepeatedFieldCap> caps = {
      {FieldOf(v1::MapRequest::descriptor(), 1), 4096, &TooMany},
      {FieldOf(v1::MapRequest::descriptor(), 2), 1'000'000, &TooMany}};
  constexpr int kRounds = 2000;
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < kRounds; ++round) {
    google::protobuf::io::ArrayInputStream wire(bytes.data(), static_cast<int>(bytes.size()));
    ASSERT_TRUE(CheckWireShape(*v1::MapRequest::descriptor(), wire, caps).ok());
  }
  const double micros =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
          .count() / kRounds;
  // For scale: what protobuf's parse of the same bytes costs.
  const auto parse_start = std::chrono::steady_clock::now();
  for (int round = 0; round < kRounds; ++round) {
    v1::MapRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes));
  }
  const double parse_micros =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - parse_start)
          .count() / kRounds;
  std::printf("walked a %zu-byte Map of 1000 documents in %.2f us (parsing it: %.2f us)\n",
              bytes.size(), micros, parse_micros);
  EXPECT_LT(micros, 2000.0);
}

}  // namespace
}  // namespace cnp::rpc
