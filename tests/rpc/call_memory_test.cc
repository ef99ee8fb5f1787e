// The budget of what calls hold outside gRPC's quota (service/rpc/call_memory.h): charges past it
// are refused, charges given back free room, and an answer's charge lasts until gRPC has let go
// of the last of its slices.
#include "service/rpc/call_memory.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "gtest/gtest.h"

namespace cnp::rpc {
namespace {

TEST(CallMemoryTest, RefusesPastTheBudgetAndTakesBackWhatIsReleased) {
  CallMemory memory(100);
  std::optional<CallMemory::Charge> first = memory.TryCharge(60);
  ASSERT_TRUE(first.has_value());
  EXPECT_FALSE(memory.TryCharge(41).has_value());
  std::optional<CallMemory::Charge> second = memory.TryCharge(40);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(memory.held(), 100);
  EXPECT_TRUE(memory.TryCharge(0).has_value());
  first.reset();
  EXPECT_EQ(memory.held(), 40);
  CallMemory::Charge moved = std::move(*second);
  second.reset();
  EXPECT_EQ(memory.held(), 40);
  moved.Release();
  EXPECT_EQ(memory.held(), 0);
  // One call larger than the budget is refused, never half counted.
  EXPECT_FALSE(memory.TryCharge(101).has_value());
  EXPECT_EQ(memory.held(), 0);
}

TEST(CallMemoryTest, AChargeGrowsOnlyWithinTheBudgetAndShrinksAlways) {
  CallMemory memory(100);
  std::optional<CallMemory::Charge> request = memory.TryCharge(0);  // may grow later
  ASSERT_TRUE(request.has_value());
  std::optional<CallMemory::Charge> other = memory.TryCharge(30);
  ASSERT_TRUE(request->Resize(70));
  EXPECT_EQ(memory.held(), 100);
  // Past the budget: refused, and the charge stays what it was.
  EXPECT_FALSE(request->Resize(71));
  EXPECT_EQ(request->bytes(), 70);
  EXPECT_EQ(memory.held(), 100);
  ASSERT_TRUE(request->Resize(20));
  EXPECT_EQ(memory.held(), 50);
  other.reset();
  ASSERT_TRUE(request->Resize(100));
  request.reset();
  EXPECT_EQ(memory.held(), 0);
}

TEST(CallMemoryTest, RefusalNamesTheFlag) {
  CallMemory memory(64 << 20);
  const std::string message = memory.RefusalMessage("its request", 80 << 20);
  EXPECT_NE(message.find("--max-grpc-memory"), std::string::npos) << message;
  EXPECT_NE(message.find("80 MiB"), std::string::npos) << message;
}

TEST(CallMemoryTest, AnAnswerIsChargedUntilItsLastSliceIsReleased) {
  CallMemory memory(1000);
  std::vector<grpc::Slice> parts = {grpc::Slice(std::string(300, 'a')),
                                    grpc::Slice(std::string(200, 'b'))};
  grpc::ByteBuffer answer(parts.data(), parts.size());
  parts.clear();
  std::optional<CallMemory::Charge> charge = memory.TryCharge(500);
  ASSERT_TRUE(charge.has_value());
  grpc::ByteBuffer held = CallMemory::HoldWhileSent(answer, std::move(*charge));
  charge.reset();
  answer.Clear();
  EXPECT_EQ(memory.held(), 500);
  EXPECT_EQ(held.Length(), 500u);
  std::vector<grpc::Slice> sent;
  ASSERT_TRUE(held.Dump(&sent).ok());
  std::string bytes;
  for (const grpc::Slice& slice : sent) bytes.append(slice.begin(), slice.end());
  EXPECT_EQ(bytes, std::string(300, 'a') + std::string(200, 'b'));
  held.Clear();
  EXPECT_EQ(memory.held(), 500);  // gRPC still holds a slice of it
  sent.pop_back();
  EXPECT_EQ(memory.held(), 500);
  sent.clear();
  EXPECT_EQ(memory.held(), 0);
}

}  // namespace
}  // namespace cnp::rpc
