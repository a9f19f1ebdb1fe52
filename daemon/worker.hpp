#pragma once

// One data-path thread: an epoll, a command queue woken by an eventfd, and the ports
// (endpoints) it owns. The control thread talks to a worker only by posting commands; the
// ports' fds are touched by the worker thread alone.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "control/endpoint.hpp"
#include "daemon/options.hpp"
#include "dataplane/forward.hpp"
#include "sys/error.hpp"
#include "sys/fd.hpp"

namespace vp::daemon {

class EventQueue;
class Port;
class QueueRunner;
struct PortStatus;

/// Named event kinds: what a port's epoll event is about.
enum class EventKind : uint8_t {
  kListener = 1,    ///< the bind= socket has connections waiting
  kConnection,      ///< the session's socket (vhost-user or stream) is readable or writable
  kTap,             ///< a TAP queue; the tag's queue is the queue pair
  kKick,            ///< a virtqueue's kick eventfd; the tag's queue is the virtqueue
  kRedial,          ///< the peer= redial timer expired
  kUring,           ///< a transmit queue's io_uring has completions; the tag's queue is the pair
  kTxRateTimer,     ///< tx-rate=: the token bucket's refill timer expired (transmit may go on)
  kStallTimer,      ///< a front-end message stayed incomplete for the bound (end the session)
  kRefusalSummary,  ///< the refused-connection log interval ended: log what it held back
};

/// One epoll tag: port id (high 32 bits), kind (bits 16-23) and queue index (low 16 bits).
/// Tag 0 is the worker's own wake-up; port ids start at kFirstPortId, so no port's tag can
/// ever be taken for it.
struct EventTag {
  static constexpr uint64_t kWake = 0;
  /// The worker's queue of lend/take-back commands from other workers (port 0 as well).
  static constexpr uint64_t kPeerWake = 1;
  static constexpr uint32_t kFirstPortId = 1;

  uint32_t port = 0;
  EventKind kind = EventKind::kListener;
  uint16_t queue = 0;

  static constexpr uint64_t encode(uint32_t port, EventKind kind, uint16_t queue = 0) noexcept {
    return uint64_t{port} << 32 | uint64_t{static_cast<uint8_t>(kind)} << 16 | queue;
  }
  static constexpr EventTag decode(uint64_t tag) noexcept {
    return {static_cast<uint32_t>(tag >> 32), static_cast<EventKind>((tag >> 16) & 0xff),
            static_cast<uint16_t>(tag & 0xffff)};
  }
};

/// The epoll interest of one fd, changed by mask: ADD when it goes from nothing to something,
/// DEL when it goes back to nothing, MOD in between; nothing when the mask is unchanged. A
/// `registered_when_empty` fd stays added with an empty mask (a socket that must still report
/// EPOLLHUP).
class Interest {
 public:
  Interest() = default;
  Interest(int epoll, int fd, uint64_t tag, bool registered_when_empty = false) noexcept
      : epoll_(epoll), fd_(fd), tag_(tag), keep_(registered_when_empty) {}
  Interest(Interest&& other) noexcept { *this = std::move(other); }
  Interest& operator=(Interest&& other) noexcept;
  ~Interest() { clear(); }

  /// Watches `mask` (EPOLLIN / EPOLLOUT) from now on.
  void set(uint32_t mask) noexcept;
  /// Removes the fd from the epoll (before the fd is closed or handed on).
  void clear() noexcept;
  uint32_t mask() const noexcept { return mask_; }
  bool registered() const noexcept { return registered_; }

 private:
  void ctl(int op, uint32_t mask) noexcept;

  int epoll_ = -1;
  int fd_ = -1;
  uint64_t tag_ = 0;
  bool keep_ = false;
  bool registered_ = false;
  uint32_t mask_ = 0;
};

/// A one-shot timer in a worker's epoll: a timerfd, created on the first arm() and
/// registered with `tag` (EPOLLIN), closed by close() or with its owner. The owner's event for
/// the tag calls consume() before acting on it.
class OneShotTimer {
 public:
  OneShotTimer() = default;
  OneShotTimer(int epoll, uint64_t tag) noexcept : epoll_(epoll), tag_(tag) {}
  OneShotTimer(OneShotTimer&& other) noexcept { *this = std::move(other); }
  OneShotTimer& operator=(OneShotTimer&& other) noexcept;
  ~OneShotTimer() { close(); }

  /// Creates the timerfd and adds it to the epoll now if that is not done yet (for an owner
  /// that must know before it relies on the timer). The error says why it could not.
  Result<void> open();
  /// Expires once `after` from now, replacing an earlier deadline. True when armed. When
  /// the timerfd cannot be created (or added to the epoll) the error is returned once; later arms
  /// try again and return false, without the error, until close() (the caller logs it once).
  Result<bool> arm(std::chrono::nanoseconds after);
  /// Cancels the deadline (an expiry already in the epoll batch is then consumed as nothing).
  void disarm() noexcept;
  /// Reads the expiry count: 0 when nothing expired since the last arm (re-armed or
  /// disarmed after it fired), else the expirations (1 for a one-shot). armed() is false
  /// afterwards when it expired.
  uint64_t consume() noexcept;
  bool armed() const noexcept { return armed_; }
  bool valid() const noexcept { return fd_.valid(); }
  /// Removes the timer from the epoll and closes it; the next arm() creates it again.
  void close() noexcept;

 private:
  int epoll_ = -1;
  uint64_t tag_ = 0;
  Fd fd_;  // in the epoll while valid
  bool armed_ = false;
  bool failed_ = false;  // creation failed and was reported
};

class Worker {
 public:
  using MakePort = std::function<std::unique_ptr<Port>(Worker&, uint32_t id,
                                                       std::shared_ptr<PortStatus> status)>;

  /// `io_uring`: transmit queues may batch their TAP writes with io_uring (the daemon found
  /// it usable and was not told otherwise); false: every queue uses writev.
  /// `events` (may be null) receives its ports' session events; it must outlive the worker.
  /// `message_timeout`: how long its vhost-user sessions may leave a message incomplete.
  explicit Worker(unsigned index, bool io_uring = false, EventQueue* events = nullptr,
                  std::chrono::seconds message_timeout = kDefaultMessageTimeout);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Control thread ---------------------------------------------------------------------------

  /// Runs `fn` on the worker thread and waits for it, however long it takes: for commands
  /// that must be done before the caller goes on (attach, detach). `fn` may refer to the
  /// caller's stack.
  void call(std::function<void()> fn);
  /// Queues `fn` for the worker thread and returns at once. `fn` must own what it uses.
  void post(std::function<void()> fn);
  /// Posts a no-op; the future is ready once the worker ran it (or broken if the worker stopped
  /// first). The state is shared, so the caller may stop waiting at any time.
  std::future<void> probe();

  /// Serves a new port: `make` runs on the worker thread with the port's id and the status it
  /// publishes. Waits until it is served.
  void attach(const std::string& name, MakePort make);
  /// Stops serving `name` and waits until the worker let go of every fd of it.
  void detach(const std::string& name);
  void set_priority(const std::string& name, int priority);
  /// tx-rate= of a served endpoint, changed beside its running session.
  void set_tx_rate(const std::string& name, const control::Rate& rate);
  /// What `name` publishes (null when this worker does not serve it).
  std::shared_ptr<PortStatus> status_of(const std::string& name) const;
  bool serves(const std::string& name) const { return status_of(name) != nullptr; }
  size_t port_count() const;

  // Worker thread ----------------------------------------------------------------------------

  int epoll() const { return epoll_.get(); }
  dataplane::NetScratch& scratch() { return scratch_; }
  bool io_uring() const { return io_uring_; }
  std::chrono::seconds message_timeout() const { return message_timeout_; }
  /// Where ports publish their session events (null: nowhere).
  EventQueue* events() const { return events_; }
  /// `port` left work for later (budget used up): continue_work() once the epoll is idle.
  void mark_pending(Port* port) { pending_.push_back(port); }
  void forget_pending(Port* port) { std::erase(pending_, port); }
  void mark_pending(QueueRunner* runner) { pending_runners_.push_back(runner); }
  void forget_pending(QueueRunner* runner) { std::erase(pending_runners_, runner); }
  unsigned index() const { return index_; }
  /// Every worker of the daemon (this one included), in index order; set before any port.
  std::span<Worker* const> peers() const { return peers_; }
  void set_peers(std::vector<Worker*> peers) { peers_ = std::move(peers); }

  // Between workers: lending a queue pair to another worker ----------------------------------
  //
  // Deadlock rule: a worker waiting for another (peer_call) serves, while it waits, only the
  // peer commands addressed to it — never the control thread's commands, never its own
  // ports' events — and a peer command never waits for anyone. So A waiting for B while B
  // waits for A ends: each runs the other's command from inside its wait.

  /// Queues `fn` on this worker's peer queue and returns at once (a lend).
  void peer_post(std::function<void()> fn);
  /// Runs `fn` on this worker's thread and waits for it; `caller` is the waiting worker,
  /// which serves its own peer queue meanwhile (a take-back).
  void peer_call(Worker& caller, std::function<void()> fn);
  /// Worker thread: serves `runner`'s events from now on under a new tag id (returned).
  uint32_t add_runner(QueueRunner* runner);
  void remove_runner(uint32_t id, QueueRunner* runner);
  /// Owner thread: a runner of port `id` saw a ring stop (broken): the port takes it back.
  void runner_stopped(uint32_t id, uint16_t pair);
  /// Control thread, at shutdown, before any worker is destroyed: ends every port here (and
  /// so takes back every pair lent to another worker while all of them still run).
  void detach_all();

 private:
  void run();
  void run_commands();
  void run_peer_commands();
  void dispatch(uint64_t tag, uint32_t events);
  void add(uint32_t id, std::unique_ptr<Port> port);
  void remove(const std::string& name);
  /// Sets this thread's scheduling from its ports' priority=.
  void apply_priority();

  unsigned index_;
  bool io_uring_;
  EventQueue* events_;
  std::chrono::seconds message_timeout_;
  Fd epoll_;
  Fd wake_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex commands_mutex_;
  std::deque<std::function<void()>> commands_;
  Fd peer_wake_;
  std::mutex peer_mutex_;
  std::deque<std::function<void()>> peer_commands_;
  std::vector<Worker*> peers_;
  dataplane::NetScratch scratch_;
  // Worker thread only.
  uint32_t next_id_ = EventTag::kFirstPortId;
  int priority_ = 0;
  std::map<uint32_t, Port*> by_id_;
  std::map<std::string, std::unique_ptr<Port>> ports_;
  std::vector<Port*> pending_;
  std::vector<Port*> running_;  // the pending_ being served
  // Queue pairs other workers lent to this one (tag id → runner), and those with work left.
  std::map<uint32_t, QueueRunner*> runners_;
  std::vector<QueueRunner*> pending_runners_;
  std::vector<QueueRunner*> running_runners_;
  // Shared with the control thread.
  mutable std::mutex status_mutex_;
  std::map<std::string, std::shared_ptr<PortStatus>> status_;
};

/// True when every one of `workers` ran a posted no-op within `timeout` (the watchdog's
/// question). Never waits longer than `timeout`: a wedged worker answers later, into state
/// the probe shares with it, not into the caller's stack.
bool all_responsive(std::span<Worker* const> workers, std::chrono::milliseconds timeout);

}  // namespace vp::daemon
