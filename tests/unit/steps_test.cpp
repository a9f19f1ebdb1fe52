// realise()'s step runner: the set path stops at the first failure, restore records every
// failure and goes on, and nothing runs after a failed step that the rest need.

#include "daemon/steps.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace vp::daemon {
namespace {

struct Trace {
  std::vector<std::string> ran;
  Step ok(std::string name) {
    return {name, false, [this, name]() -> Result<void> {
              ran.push_back(name);
              return {};
            }};
  }
  Step failing(std::string name, bool needed = false) {
    return {name, needed, [this, name]() -> Result<void> {
              ran.push_back(name);
              return fail("system", name + " refused");
            }};
  }
};

TEST(StepRunner, stop_mode_returns_the_first_failure_and_runs_nothing_after) {
  Trace t;
  StepRunner runner("vp0", OnFailure::kStop);
  const std::vector<Step> first{t.ok("mac"), t.failing("mtu"), t.ok("bridge")};
  EXPECT_FALSE(runner.run(first));
  const std::vector<Step> second{t.ok("up")};
  EXPECT_FALSE(runner.run(second)) << "a stopped runner runs no later list";
  EXPECT_EQ(t.ran, (std::vector<std::string>{"mac", "mtu"}));
  ASSERT_TRUE(runner.stopped_by().has_value());
  EXPECT_EQ(runner.stopped_by()->message, "mtu refused");
  EXPECT_EQ(runner.failed_steps(), (std::vector<std::string>{"mtu"}));
}

TEST(StepRunner, record_mode_records_every_failure_and_goes_on) {
  Trace t;
  StepRunner runner("vp0", OnFailure::kRecordAndGoOn);
  const std::vector<Step> steps{t.failing("mac"), t.ok("mtu"), t.failing("bridge"), t.ok("up")};
  EXPECT_TRUE(runner.run(steps));
  EXPECT_EQ(t.ran, (std::vector<std::string>{"mac", "mtu", "bridge", "up"}));
  EXPECT_FALSE(runner.stopped_by().has_value()) << "restore returns no error";
  EXPECT_EQ(runner.problems(), (std::vector<std::string>{"mac refused", "bridge refused"}));
  EXPECT_EQ(runner.failed_steps(), (std::vector<std::string>{"mac", "bridge"}));
}

TEST(StepRunner, record_mode_stops_after_a_needed_step_fails) {
  Trace t;
  StepRunner runner("vp0", OnFailure::kRecordAndGoOn);
  const std::vector<Step> steps{t.failing("tap", /*needed=*/true), t.ok("offloads")};
  EXPECT_FALSE(runner.run(steps));
  const std::vector<Step> later{t.ok("mtu")};
  EXPECT_FALSE(runner.run(later));
  EXPECT_EQ(t.ran, (std::vector<std::string>{"tap"}));
  EXPECT_EQ(runner.problems(), (std::vector<std::string>{"tap refused"}));
  EXPECT_FALSE(runner.stopped_by().has_value());
}

TEST(StepRunner, all_steps_passing_leave_no_problem) {
  Trace t;
  StepRunner runner("vp0", OnFailure::kStop);
  const std::vector<Step> steps{t.ok("mac"), t.ok("mtu")};
  EXPECT_TRUE(runner.run(steps));
  EXPECT_TRUE(runner.problems().empty());
  EXPECT_TRUE(runner.failed_steps().empty());
}

}  // namespace
}  // namespace vp::daemon
