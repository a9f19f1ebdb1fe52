// The refused-connection log limit, against a clock the test moves by hand.

#include "daemon/log_limiter.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace vp::daemon {
namespace {

using namespace std::chrono_literals;
using Clock = LogLimiter::Clock;

const Clock::time_point t0 = Clock::time_point{} + 1000s;

TEST(LogLimiter, first_burst_of_an_interval_is_logged_and_the_rest_counted) {
  LogLimiter limiter(3, 10s);
  for (int i = 0; i < 3; ++i) {
    const auto d = limiter.admit(t0 + std::chrono::milliseconds(i));
    EXPECT_TRUE(d.log) << i;
    EXPECT_EQ(d.summary, 0u);
  }
  EXPECT_FALSE(limiter.summary_due());
  for (int i = 3; i < 50; ++i) {
    const auto d = limiter.admit(t0 + std::chrono::milliseconds(i));
    EXPECT_FALSE(d.log) << i;
    EXPECT_EQ(d.summary, 0u);
  }
  ASSERT_TRUE(limiter.summary_due());
  EXPECT_EQ(*limiter.summary_due(), t0 + 10s);
  // Not before the interval is over.
  EXPECT_EQ(limiter.take_summary(t0 + 9s), 0u);
  EXPECT_EQ(limiter.take_summary(t0 + 10s), 47u);
  // Taken once.
  EXPECT_EQ(limiter.take_summary(t0 + 11s), 0u);
  EXPECT_FALSE(limiter.summary_due());
}

TEST(LogLimiter, held_lines_are_taken_before_the_interval_is_over_when_the_owner_goes) {
  LogLimiter limiter(2, 10s);
  for (int i = 0; i < 7; ++i) (void)limiter.admit(t0 + std::chrono::milliseconds(i));
  EXPECT_EQ(limiter.take_summary(t0 + 1s), 0u);  // not over yet
  EXPECT_EQ(limiter.take_held(), 5u);
  EXPECT_EQ(limiter.take_held(), 0u);
  EXPECT_FALSE(limiter.summary_due());
  // The next line starts an interval of its own.
  EXPECT_TRUE(limiter.admit(t0 + 2s).log);
}

TEST(LogLimiter, next_interval_logs_a_fresh_burst) {
  LogLimiter limiter(2, 10s);
  for (int i = 0; i < 5; ++i) (void)limiter.admit(t0 + std::chrono::seconds(i));
  EXPECT_EQ(limiter.take_summary(t0 + 10s), 3u);
  // The next refusal, however much later, starts an interval of its own.
  const Clock::time_point t1 = t0 + 60s;
  EXPECT_TRUE(limiter.admit(t1).log);
  EXPECT_TRUE(limiter.admit(t1 + 1s).log);
  EXPECT_FALSE(limiter.admit(t1 + 2s).log);
  EXPECT_EQ(*limiter.summary_due(), t1 + 10s);
}

TEST(LogLimiter, summary_not_taken_comes_with_the_next_line) {
  LogLimiter limiter(1, 10s);
  EXPECT_TRUE(limiter.admit(t0).log);
  EXPECT_FALSE(limiter.admit(t0 + 1s).log);
  EXPECT_FALSE(limiter.admit(t0 + 2s).log);
  // The timer that would have taken it did not fire: the next line reports it first.
  const auto d = limiter.admit(t0 + 10s);
  EXPECT_EQ(d.summary, 2u);
  EXPECT_TRUE(d.log);
  EXPECT_FALSE(limiter.summary_due());
  EXPECT_EQ(limiter.take_summary(t0 + 30s), 0u);
}

TEST(LogLimiter, lines_within_the_burst_leave_nothing_to_summarise) {
  LogLimiter limiter(5, 10s);
  for (int round = 0; round < 4; ++round) {
    const Clock::time_point start = t0 + std::chrono::seconds(20 * round);
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.admit(start + std::chrono::seconds(i)).log);
    EXPECT_FALSE(limiter.summary_due());
    EXPECT_EQ(limiter.take_summary(start + 15s), 0u);
  }
}

}  // namespace
}  // namespace vp::daemon
