// OneShotTimer: the one-shot timerfd a port keeps in its worker's epoll, driven through a
// real epoll.

#include <gtest/gtest.h>
#include <sys/epoll.h>

#include <chrono>

#include "daemon/worker.hpp"
#include "sys/fd.hpp"

namespace vp::daemon {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kTag = EventTag::encode(7, EventKind::kStallTimer);

/// The tags epoll_wait reports within `timeout_ms` (-1: none came).
uint64_t wait_tag(int epoll, int timeout_ms) {
  epoll_event ev{};
  if (::epoll_wait(epoll, &ev, 1, timeout_ms) != 1) return ~uint64_t{0};
  return ev.data.u64;
}

TEST(OneShotTimer, holds_no_fd_until_armed_and_none_after_close) {
  Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  OneShotTimer timer(epoll.get(), kTag);
  EXPECT_FALSE(timer.valid());
  EXPECT_FALSE(timer.armed());
  EXPECT_EQ(timer.consume(), 0u);
  auto armed = timer.arm(10s);
  ASSERT_TRUE(armed.has_value()) << armed.error().message;
  EXPECT_TRUE(*armed);
  EXPECT_TRUE(timer.valid());
  EXPECT_TRUE(timer.armed());
  timer.close();
  EXPECT_FALSE(timer.valid());
  EXPECT_FALSE(timer.armed());
  EXPECT_EQ(wait_tag(epoll.get(), 0), ~uint64_t{0});  // closed: out of the epoll
}

TEST(OneShotTimer, armed_timer_expires_once_in_the_epoll_with_its_tag) {
  Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  OneShotTimer timer(epoll.get(), kTag);
  ASSERT_TRUE(timer.arm(1ms).value_or(false));
  EXPECT_EQ(wait_tag(epoll.get(), 5000), kTag);
  EXPECT_EQ(timer.consume(), 1u);
  EXPECT_FALSE(timer.armed());
  // Consumed: the epoll has nothing more, and a second consume reads nothing.
  EXPECT_EQ(wait_tag(epoll.get(), 50), ~uint64_t{0});
  EXPECT_EQ(timer.consume(), 0u);
}

TEST(OneShotTimer, disarmed_timer_reports_nothing_even_after_it_fired) {
  Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  OneShotTimer timer(epoll.get(), kTag);
  ASSERT_TRUE(timer.arm(1ms).value_or(false));
  ASSERT_EQ(wait_tag(epoll.get(), 5000), kTag);
  timer.disarm();  // after it fired, before its owner read it
  EXPECT_FALSE(timer.armed());
  EXPECT_EQ(timer.consume(), 0u);
  EXPECT_EQ(wait_tag(epoll.get(), 50), ~uint64_t{0});
}

TEST(OneShotTimer, rearmed_timer_keeps_only_the_new_deadline_and_fires_again) {
  Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  OneShotTimer timer(epoll.get(), kTag);
  ASSERT_TRUE(timer.arm(1ms).value_or(false));
  ASSERT_EQ(wait_tag(epoll.get(), 5000), kTag);
  ASSERT_EQ(timer.consume(), 1u);
  // Re-armed far out: nothing now; re-armed short: it fires again.
  ASSERT_TRUE(timer.arm(1h).value_or(false));
  EXPECT_EQ(wait_tag(epoll.get(), 50), ~uint64_t{0});
  ASSERT_TRUE(timer.arm(0ns).value_or(false));  // "now" still arms (1 ns)
  EXPECT_EQ(wait_tag(epoll.get(), 5000), kTag);
  EXPECT_EQ(timer.consume(), 1u);
}

TEST(OneShotTimer, moved_timer_keeps_its_fd_and_registration) {
  Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  OneShotTimer first(epoll.get(), kTag);
  ASSERT_TRUE(first.arm(1ms).value_or(false));
  OneShotTimer second = std::move(first);
  EXPECT_FALSE(first.valid());
  EXPECT_TRUE(second.armed());
  EXPECT_EQ(wait_tag(epoll.get(), 5000), kTag);
  EXPECT_EQ(second.consume(), 1u);
}

TEST(OneShotTimer, timer_without_an_epoll_reports_the_registration_failure_once) {
  // No epoll to register in stands for a failed creation: open() fails every time it is
  // asked, arm() says so once.
  OneShotTimer timer(-1, kTag);
  auto first = timer.arm(1s);
  ASSERT_FALSE(first.has_value());
  EXPECT_NE(first.error().message.find("epoll_ctl"), std::string::npos) << first.error().message;
  auto second = timer.arm(1s);
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(*second);
  EXPECT_FALSE(timer.armed());
  timer.close();  // a new start: the next failure is reported again
  EXPECT_FALSE(timer.arm(1s).has_value());
}

}  // namespace
}  // namespace vp::daemon
