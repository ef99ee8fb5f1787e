// ContextInbox: work handed to an io_context's thread from other threads through an eventfd.
// Every post runs exactly once, on the context's thread, in the order each poster posted; work
// posted before the context runs waits for it; and the context's own posts stay asio posts.
#include "service/pool/context_inbox.h"

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "gtest/gtest.h"

namespace cnp::pool {
namespace {

constexpr auto kBound = std::chrono::seconds(20);

TEST(ContextInbox, WorkFromAnotherThreadRunsOnTheContextThread) {
  asio::io_context context(1);
  ContextInbox inbox(context);
  auto guard = asio::make_work_guard(context);
  std::thread loop([&] { context.run(); });
  for (int i = 0; i < 100; ++i) {
    std::promise<bool> ran_there;
    inbox.Post([&] { ran_there.set_value(context.get_executor().running_in_this_thread()); });
    auto future = ran_there.get_future();
    ASSERT_EQ(future.wait_for(kBound), std::future_status::ready) << "post " << i;
    EXPECT_TRUE(future.get());
  }
  context.stop();
  loop.join();
}

// Posters race the loop taking the list: a write that comes while no read is armed must not be
// lost (the loop would sleep with work queued), and nothing may run twice or out of order.
TEST(ContextInbox, ManyPostersEachPostRunsOnceInTheirOrder) {
  constexpr int kThreads = 4;
  constexpr int kPosts = 20000;
  asio::io_context context(1);
  ContextInbox inbox(context);
  auto guard = asio::make_work_guard(context);
  std::thread loop([&] { context.run(); });

  std::vector<int> last(kThreads, -1);  // touched only on the loop's thread
  int out_of_order = 0;
  int ran = 0;
  std::promise<void> all_ran;
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t) {
    posters.emplace_back([&, t] {
      for (int i = 0; i < kPosts; ++i) {
        inbox.Post([&, t, i] {
          if (last[t] != i - 1) ++out_of_order;
          last[t] = i;
          if (++ran == kThreads * kPosts) all_ran.set_value();
        });
        // Now and then let the loop go back to sleep in epoll, so that wake-ups are needed.
        if (i % 1000 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  for (auto& poster : posters) poster.join();
  ASSERT_EQ(all_ran.get_future().wait_for(kBound), std::future_status::ready);
  context.stop();
  loop.join();
  EXPECT_EQ(ran, kThreads * kPosts);
  EXPECT_EQ(out_of_order, 0);
}

TEST(ContextInbox, WorkPostedBeforeTheContextRunsWaitsForIt) {
  asio::io_context context(1);
  ContextInbox inbox(context);
  std::atomic<int> ran{0};
  std::thread poster([&] {
    for (int i = 0; i < 10; ++i) inbox.Post([&] { ran.fetch_add(1); });
  });
  poster.join();
  EXPECT_EQ(ran.load(), 0);
  const auto limit = std::chrono::steady_clock::now() + kBound;
  while (ran.load() < 10 && std::chrono::steady_clock::now() < limit) {
    context.run_one_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(ran.load(), 10);
}

// On the context's own thread too a post is queued, never run inline, and behind the posts
// made before it from other threads.
TEST(ContextInbox, APostOnTheContextThreadIsQueuedBehindEarlierPosts) {
  asio::io_context context(1);
  ContextInbox inbox(context);
  std::vector<int> order;
  std::thread other([&] { inbox.Post([&] { order.push_back(1); }); });
  other.join();
  inbox.Post([&] {
    inbox.Post([&] { order.push_back(4); });
    order.push_back(2);
  });
  const auto limit = std::chrono::steady_clock::now() + kBound;
  while (order.size() < 3 && std::chrono::steady_clock::now() < limit) {
    context.run_one_for(std::chrono::milliseconds(50));
  }
  inbox.Post([&] { order.push_back(5); });
  while (order.size() < 4 && std::chrono::steady_clock::now() < limit) {
    context.run_one_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(order, (std::vector<int>{1, 2, 4, 5}));
}

// Work never run goes with the inbox; work that posts from its destructor does not bring the
// inbox back to life.
TEST(ContextInbox, WorkNeverRunIsDroppedWithTheInbox) {
  struct PostsWhenDropped {
    ContextInbox* inbox;
    int* dropped;
    PostsWhenDropped(ContextInbox* i, int* d) : inbox(i), dropped(d) {}
    PostsWhenDropped(PostsWhenDropped&& other) noexcept
        : inbox(std::exchange(other.inbox, nullptr)), dropped(other.dropped) {}
    ~PostsWhenDropped() {
      if (inbox == nullptr) return;
      ++*dropped;
      inbox->Post([] { ADD_FAILURE() << "ran after the inbox was gone"; });
    }
  };
  asio::io_context context(1);
  int dropped = 0;
  {
    ContextInbox inbox(context);
    for (int i = 0; i < 3; ++i) {
      inbox.Post([guard = PostsWhenDropped(&inbox, &dropped)] { ADD_FAILURE() << "ran"; });
    }
  }
  EXPECT_EQ(dropped, 3);
  context.run_for(std::chrono::milliseconds(50));  // a queued read completion stays harmless
}
}  // namespace
}  // namespace cnp::pool
