#pragma once

// Events for `vpctl monitor`: what happened to an endpoint, as it happens. Any thread may
// publish one (the control thread: create/set/destroy and changes behind vpd's back; a
// data-path worker: its sessions, queues, carrier, refusals and broken rings); the control
// thread drains them, woken by an eventfd in its epoll, and writes them to the subscribers.
// Events are rare (never one per frame), so the queue takes a lock; a worker never waits on
// the control thread for more than that lock.

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "sys/fd.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

/// What an event is about. Its protocol name (event_type_name) is the documented enum.
enum class EventType : uint8_t {
  kCreated,               ///< "created": an endpoint was created
  kChanged,               ///< "changed": settings changed; `keys` names them
  kDestroyed,             ///< "destroyed": the endpoint and its TAP are gone
  kFrontendConnected,     ///< "frontend-connected": a VMM's session started; `frontend`
  kFrontendDisconnected,  ///< "frontend-disconnected": the session ended; `reason`
  kFrontendRefused,       ///< "frontend-refused": a connection turned away; `peer`, `reason`
  kQueuesStarted,         ///< "queues-started": the guest's driver started queues
  kQueuesStopped,         ///< "queues-stopped": queues stopped
  kCarrierUp,             ///< "carrier-up": the TAP has carrier (the guest's queues run)
  kCarrierDown,           ///< "carrier-down": carrier off
  kRingBroken,            ///< "ring-broken": a virtqueue was marked broken; `queue`, `reason`
  kPutBack,               ///< "put-back": changed behind vpd's back and put back; `found`
  kProblem,               ///< "problem": vpd cannot make the kernel match; `problem`
  kProblemCleared,        ///< "problem-cleared": the endpoint matches its settings again
  kLost,                  ///< "lost": events this subscriber missed; `count`
};

std::string_view event_type_name(EventType type) noexcept;

struct Event {
  std::chrono::system_clock::time_point time;
  std::string endpoint;
  EventType type = EventType::kCreated;
  std::string message;     // one sentence for people
  nlohmann::json details;  // null or an object of the type's fields
};

/// The event as the protocol's JSON object: time (RFC 3339 UTC), endpoint, type, message and
/// the type's fields.
/// Ordered as listed, so that a person reading the JSON line sees the sentence early.
nlohmann::ordered_json event_json(const Event& event);
/// RFC 3339 in UTC, to the millisecond ("2026-12-03T17:30:02.125Z") or the second.
std::string rfc3339_utc(std::chrono::system_clock::time_point t, bool millis = true);
/// The process at the other end of a front-end socket as JSON: pid, uid, gid,
/// connected_since (RFC 3339 UTC), connected_since_unix, and exe and vm_name when known.
nlohmann::json peer_process_json(const PeerProcess& who);

/// The queue between the threads that publish events and the control thread.
class EventQueue {
 public:
  /// Events held while the control thread is busy; beyond it they are counted as lost.
  static constexpr size_t kMaxQueued = 4096;

  EventQueue();

  /// Any thread: queues `event` (stamped now) and wakes the control thread. Never blocks
  /// beyond the queue's lock.
  void publish(EventType type, std::string endpoint, std::string message,
               nlohmann::json details = nullptr);
  /// Control thread: a position in the queue, for publish_at().
  uint64_t mark() const;
  /// Control thread: queues an event before everything published since `mark`, so that a
  /// request's own event ("created") comes before what it caused on a worker meanwhile (the
  /// front-end dialled at once). The control thread drains nothing between mark and this.
  void publish_at(uint64_t mark, EventType type, std::string endpoint, std::string message,
                  nlohmann::json details = nullptr);

  /// The eventfd to watch for EPOLLIN (control thread).
  int fd() const { return wake_.get(); }
  /// Control thread: takes every queued event; `lost` is set to those that did not fit.
  std::vector<Event> drain(uint64_t& lost);

 private:
  void insert(size_t index, Event event);

  mutable std::mutex mutex_;
  std::deque<Event> queue_;
  uint64_t published_ = 0;  // events ever queued (the positions mark() hands out)
  uint64_t lost_ = 0;
  Fd wake_;
};

}  // namespace vp::daemon
