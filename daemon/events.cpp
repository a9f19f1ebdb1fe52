#include "daemon/events.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iterator>

namespace vp::daemon {

std::string_view event_type_name(EventType type) noexcept {
  switch (type) {
    case EventType::kCreated:
      return "created";
    case EventType::kChanged:
      return "changed";
    case EventType::kDestroyed:
      return "destroyed";
    case EventType::kFrontendConnected:
      return "frontend-connected";
    case EventType::kFrontendDisconnected:
      return "frontend-disconnected";
    case EventType::kFrontendRefused:
      return "frontend-refused";
    case EventType::kQueuesStarted:
      return "queues-started";
    case EventType::kQueuesStopped:
      return "queues-stopped";
    case EventType::kCarrierUp:
      return "carrier-up";
    case EventType::kCarrierDown:
      return "carrier-down";
    case EventType::kRingBroken:
      return "ring-broken";
    case EventType::kPutBack:
      return "put-back";
    case EventType::kProblem:
      return "problem";
    case EventType::kProblemCleared:
      return "problem-cleared";
    case EventType::kLost:
      return "lost";
  }
  return "unknown";
}

std::string rfc3339_utc(std::chrono::system_clock::time_point t, bool millis_too) {
  const auto since = t.time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since - secs).count();
  const std::time_t s = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  ::gmtime_r(&s, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  if (millis_too) {
    std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(millis));
  } else {
    std::snprintf(buf + n, sizeof buf - n, "Z");
  }
  return buf;
}

nlohmann::json peer_process_json(const PeerProcess& who) {
  nlohmann::json f{
      {"pid", who.credentials.pid},
      {"uid", who.credentials.uid},
      {"gid", who.credentials.gid},
      {"connected_since", rfc3339_utc(who.since, false)},
      {"connected_since_unix",
       std::chrono::duration_cast<std::chrono::seconds>(who.since.time_since_epoch()).count()},
  };
  // Left out, not empty, when /proc did not say (another PID namespace, a VMM without -name).
  if (!who.exe.empty()) f["exe"] = who.exe;
  if (!who.vm_name.empty()) f["vm_name"] = who.vm_name;
  return f;
}

nlohmann::ordered_json event_json(const Event& e) {
  nlohmann::ordered_json j{{"time", rfc3339_utc(e.time)},
                           {"endpoint", e.endpoint},
                           {"type", std::string(event_type_name(e.type))},
                           {"message", e.message}};
  if (e.details.is_object()) {
    for (const auto& [key, value] : e.details.items()) j[key] = value;
  }
  return j;
}

EventQueue::EventQueue() : wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

void EventQueue::insert(size_t index, Event event) {
  {
    std::lock_guard lock(mutex_);
    ++published_;
    if (queue_.size() >= kMaxQueued) {
      ++lost_;
    } else {
      index = std::min(index, queue_.size());
      queue_.insert(queue_.begin() + static_cast<std::ptrdiff_t>(index), std::move(event));
    }
  }
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void EventQueue::publish(EventType type, std::string endpoint, std::string message,
                         nlohmann::json details) {
  Event e{std::chrono::system_clock::now(), std::move(endpoint), type, std::move(message),
          std::move(details)};
  insert(SIZE_MAX, std::move(e));
}

uint64_t EventQueue::mark() const {
  std::lock_guard lock(mutex_);
  return published_;
}

void EventQueue::publish_at(uint64_t mark, EventType type, std::string endpoint,
                            std::string message, nlohmann::json details) {
  Event e{std::chrono::system_clock::now(), std::move(endpoint), type, std::move(message),
          std::move(details)};
  size_t index = SIZE_MAX;
  {
    std::lock_guard lock(mutex_);
    // Events queued since `mark` sit at the end of the queue (nothing was drained since).
    const uint64_t after = published_ - mark;
    if (after <= queue_.size()) index = queue_.size() - static_cast<size_t>(after);
  }
  insert(index, std::move(e));
}

std::vector<Event> EventQueue::drain(uint64_t& lost) {
  uint64_t wakes = 0;
  (void)!::read(wake_.get(), &wakes, sizeof wakes);
  std::lock_guard lock(mutex_);
  std::vector<Event> out(std::make_move_iterator(queue_.begin()),
                         std::make_move_iterator(queue_.end()));
  queue_.clear();
  lost = std::exchange(lost_, 0);
  return out;
}

}  // namespace vp::daemon
