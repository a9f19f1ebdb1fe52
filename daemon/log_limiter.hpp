#pragma once

// A rate limit for one kind of log line that outsiders can provoke (a refused connection):
// the first `burst` lines of an interval are logged, the rest of that interval only counted,
// and once the interval is over the count goes out as one summary line. Pure: the caller
// passes the time, so the logic is tested with a clock of its own.

#include <chrono>
#include <cstdint>
#include <optional>

namespace vp::daemon {

class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  LogLimiter(uint32_t burst, Clock::duration interval) noexcept
      : burst_(burst), interval_(interval) {}

  struct Decision {
    bool log = false;      ///< log this line
    uint64_t summary = 0;  ///< lines held back in an interval that is over: say so first
  };

  /// One line would be logged at `now`. An interval starts with the first line after the
  /// last one ended; a summary that is due and was not taken yet comes with the decision.
  Decision admit(Clock::time_point now) noexcept {
    Decision d;
    if (!open_ || now - start_ >= interval_) {
      d.summary = held_;
      held_ = 0;
      open_ = true;
      start_ = now;
      logged_ = 0;
    }
    if (logged_ < burst_) {
      ++logged_;
      d.log = true;
    } else {
      ++held_;
    }
    return d;
  }

  /// When the summary of the current interval is due (none: nothing held back).
  std::optional<Clock::time_point> summary_due() const noexcept {
    if (held_ == 0) return std::nullopt;
    return start_ + interval_;
  }

  /// The lines held back in an interval that is over at `now` (0: none, or not over yet);
  /// they are then forgotten.
  uint64_t take_summary(Clock::time_point now) noexcept {
    if (held_ == 0 || now - start_ < interval_) return 0;
    const uint64_t n = held_;
    held_ = 0;
    open_ = false;
    return n;
  }

  /// The lines held back in the current interval, over or not (the limiter's owner goes
  /// away: what it held must still be said); they are then forgotten.
  uint64_t take_held() noexcept {
    const uint64_t n = held_;
    held_ = 0;
    open_ = false;
    return n;
  }

  Clock::duration interval() const noexcept { return interval_; }

 private:
  uint32_t burst_;
  Clock::duration interval_;
  bool open_ = false;  // an interval has started
  Clock::time_point start_{};
  uint32_t logged_ = 0;  // lines logged in the current interval
  uint64_t held_ = 0;    // lines held back in it
};

}  // namespace vp::daemon
