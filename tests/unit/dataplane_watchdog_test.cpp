// The watchdog probe (Dataplane::responsive, Worker::probe): live workers answer; a wedged
// one makes the probe give up after its timeout, and its late answer harms nothing. Needs no
// privileges: workers without endpoints open no TAP and no socket.

#include <gtest/gtest.h>

#include <chrono>
#include <future>

#include "daemon/dataplane.hpp"
#include "daemon/worker.hpp"

namespace vp::daemon {
namespace {

using namespace std::chrono_literals;

TEST(DataplaneWatchdog, live_workers_answer_within_the_timeout) {
  Dataplane dataplane(3);
  EXPECT_TRUE(dataplane.responsive(5s));
  EXPECT_TRUE(dataplane.responsive(5s));  // again: nothing of the first probe is left over
}

TEST(DataplaneWatchdog, wedged_worker_fails_the_probe_without_blocking_past_the_timeout) {
  Worker live(0);
  Worker wedged(1);
  std::promise<void> release;
  wedged.post([gate = release.get_future().share()] { gate.wait(); });
  Worker* const both[] = {&live, &wedged};

  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(all_responsive(both, 100ms));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_TRUE(all_responsive(std::span<Worker* const>(both, 1), 5s));

  // The probe given up on is answered late, once the worker runs again; a new one passes.
  release.set_value();
  EXPECT_TRUE(all_responsive(both, 5s));
}

}  // namespace
}  // namespace vp::daemon
