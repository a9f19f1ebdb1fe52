// The event queue between the threads that publish events and the control thread.

#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <string>
#include <vector>

#include "daemon/events.hpp"

namespace vp::daemon {
namespace {

std::vector<std::string> types_of(const std::vector<Event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.emplace_back(event_type_name(e.type));
  return out;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

TEST(EventQueue, published_event_wakes_the_control_thread_and_is_drained_once) {
  EventQueue q;
  EXPECT_FALSE(readable(q.fd()));
  q.publish(EventType::kCarrierUp, "vp0", "vp0 has carrier");
  EXPECT_TRUE(readable(q.fd()));
  uint64_t lost = 7;
  auto events = q.drain(lost);
  EXPECT_EQ(lost, 0u);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].endpoint, "vp0");
  EXPECT_EQ(events[0].type, EventType::kCarrierUp);
  EXPECT_FALSE(readable(q.fd()));
  EXPECT_TRUE(q.drain(lost).empty());
}

TEST(EventQueue, request_event_published_at_its_mark_comes_before_what_a_worker_sent_meanwhile) {
  EventQueue q;
  q.publish(EventType::kDestroyed, "vp9", "earlier");
  const uint64_t mark = q.mark();
  q.publish(EventType::kFrontendConnected, "vp0", "dialled at once");
  q.publish(EventType::kQueuesStarted, "vp0", "started");
  q.publish_at(mark, EventType::kCreated, "vp0", "created");
  uint64_t lost = 0;
  EXPECT_EQ(
      types_of(q.drain(lost)),
      (std::vector<std::string>{"destroyed", "created", "frontend-connected", "queues-started"}));
}

TEST(EventQueue, events_beyond_the_cap_are_counted_as_lost) {
  EventQueue q;
  for (size_t i = 0; i < EventQueue::kMaxQueued + 5; ++i) {
    q.publish(EventType::kFrontendRefused, "vp0", "refused");
  }
  uint64_t lost = 0;
  EXPECT_EQ(q.drain(lost).size(), EventQueue::kMaxQueued);
  EXPECT_EQ(lost, 5u);
  q.publish(EventType::kCarrierDown, "vp0", "after");
  EXPECT_EQ(q.drain(lost).size(), 1u);
  EXPECT_EQ(lost, 0u);
}

TEST(EventJson, event_has_time_endpoint_type_message_and_its_fields) {
  Event e{std::chrono::system_clock::time_point(std::chrono::milliseconds(1'764'830'401'125)),
          "vp0",
          EventType::kChanged,
          "changed mtu (by uid 0 pid 1)",
          {{"keys", {"mtu"}}}};
  const nlohmann::json j = event_json(e);
  EXPECT_EQ(j["time"], "2025-12-04T06:40:01.125Z");
  EXPECT_EQ(j["endpoint"], "vp0");
  EXPECT_EQ(j["type"], "changed");
  EXPECT_EQ(j["message"], "changed mtu (by uid 0 pid 1)");
  EXPECT_EQ(j["keys"], nlohmann::json({"mtu"}));
}

TEST(EventJson, every_type_has_its_own_protocol_name) {
  std::vector<std::string> names;
  for (int t = 0; t <= static_cast<int>(EventType::kLost); ++t) {
    names.emplace_back(event_type_name(static_cast<EventType>(t)));
    EXPECT_NE(names.back(), "unknown");
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
}

}  // namespace
}  // namespace vp::daemon
