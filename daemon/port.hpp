#pragma once

// What a worker owns for one endpoint, whatever its transport: the front-end socket, the one
// dispatch point for the endpoint's events, and what it publishes to the control thread. The
// transports (VhostUserPort, StreamPort) supply the session and the forwarding.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "control/endpoint.hpp"
#include "daemon/events.hpp"
#include "daemon/frontend_socket.hpp"
#include "daemon/session_view.hpp"
#include "daemon/worker.hpp"
#include "dataplane/net_counters.hpp"
#include "sys/fd.hpp"

namespace vp::daemon {

/// Rounds of a busy queue served per wake-up before other endpoints get their turn.
inline constexpr int kRoundsPerWake = 16;

/// What a port publishes to the control thread; shared by both, outliving either.
struct PortStatus {
  /// Guards `view` (its counters excepted) and `active`: changed on session events only.
  mutable std::mutex mutex;
  SessionView view;
  /// A guest negotiated features: the worker, not the control thread, owns the TAP's
  /// offloads and header length.
  bool active = false;
  /// The data path's counters, in kNetCounterFields order. Writers: the endpoint's worker and
  /// each worker serving one of its lent queue pairs (QueueRunner); each adds its local counts
  /// once per wake-up with atomic adds, without a lock: the packet path takes no lock.
  std::array<std::atomic<uint64_t>, std::size(dataplane::kNetCounterFields)> counters{};

  /// Each queue pair's share of `counters` (vhost-user), QueueCounts fields in order; written
  /// like `counters`.
  std::array<std::array<std::atomic<uint64_t>, std::size(dataplane::kQueueCountFields)>,
             control::kMaxQueuePairs>
      queue_counters{};

  /// A worker thread: adds `local` (atomically) and clears it.
  void add_counters(dataplane::NetCounters& local) noexcept;
  /// A worker thread: adds pair `pair`'s `local` share (atomically) and clears it.
  void add_queue_counts(uint32_t pair, dataplane::QueueCounts& local) noexcept;
  dataplane::NetCounters read_counters() const noexcept;
  dataplane::QueueCounts read_queue_counts(uint32_t pair) const noexcept;
};

class Port {
 public:
  virtual ~Port();
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  const std::string& name() const { return config_.name; }
  int priority() const { return config_.priority; }
  /// priority= raises only this worker's thread: lent queue pairs come home while it is set.
  void set_priority(int priority);
  /// tx-rate= changed beside the session: the transport applies it from now on.
  void set_tx_rate(const control::Rate& rate);

  /// The one dispatch point for this port's epoll events; publishes once afterwards (one
  /// virtual call per event, none per packet).
  void on_event(EventKind kind, uint16_t queue, uint32_t events);
  /// Carries on with work a previous round left for later (budget used up).
  void continue_work();
  /// A worker serving lent pair `pair` found a ring stopped (broken): take it back, show it.
  void runner_stopped(uint16_t pair);

 protected:
  /// `frontend` names the frontend in log lines. The derived constructor calls
  /// open_frontend() once it can take a session.
  Port(Worker& worker, uint32_t id, control::EndpointConfig config,
       std::shared_ptr<PortStatus> status, std::string_view frontend);

  /// Watches `listener` (bind=, may be invalid), dials peer= and publishes.
  void open_frontend(Fd listener);
  /// Ends the running session (if any) and, with peer=, dials again.
  void end_session(std::string_view why);
  /// The derived destructor's first step: ends the session without dialling again.
  void close_for_detach();
  /// Asks the worker for a continue_work() once it is idle (at most once until then).
  void mark_pending();
  /// Takes back a mark_pending() (the session ended).
  void forget_pending();
  /// Adds the local counters to the published ones and, if the state changed, the view.
  void publish();

  uint64_t tag(EventKind kind, uint16_t queue = 0) const {
    return EventTag::encode(id_, kind, queue);
  }
  int epoll() const { return worker_.epoll(); }
  Worker& worker() { return worker_; }
  const Worker& worker() const { return worker_; }
  uint32_t id() const { return id_; }
  const std::shared_ptr<PortStatus>& status() const { return status_; }

  // The transport's part.
  virtual bool session_open() const = 0;
  virtual void start_session(Fd conn) = 0;
  /// Lets go of the session's fds; called only while session_open().
  virtual void close_session(std::string_view why) = 0;
  virtual void on_connection(uint32_t events) = 0;
  virtual void on_tap(uint16_t pair, uint32_t events) = 0;
  virtual void on_kick(uint16_t /*virtqueue*/) {}
  /// Queue pair `pair`'s transmit io_uring has completions to reap.
  virtual void on_uring(uint16_t /*pair*/) {}
  /// tx-rate=: the refill timer expired.
  virtual void on_tx_rate_timer() {}
  /// A message from the front-end stayed incomplete for the transport's bound.
  virtual void on_stall_timer() {}
  /// config_.tx_rate changed.
  virtual void apply_tx_rate() {}
  /// Around a settings change beside the session (tx-rate=): lent queue pairs come back to
  /// this worker first and may leave again after.
  virtual void before_settings_change() {}
  virtual void after_settings_change() {}
  /// See runner_stopped().
  virtual void on_runner_stopped(uint16_t /*pair*/) {}
  /// Adds each queue pair's share of this wake-up's counts to `status` (vhost-user).
  virtual void publish_queue_counts(PortStatus& /*status*/) {}
  virtual void continue_pending() = 0;
  /// Fills the transport's fields of `v`; true if a guest negotiated features.
  virtual bool fill_view(SessionView& v) const = 0;

  /// Who the running session is with (read once as it connected).
  const PeerProcess& frontend_process() const { return frontend_process_; }

  control::EndpointConfig config_;
  dataplane::NetCounters local_;  // this wake-up's counts; published once
  bool state_dirty_ = false;      // the view must be published again

 private:
  void connected(Fd conn, PeerProcess who);
  /// Publishes an event about this endpoint (nothing when the worker has no event queue).
  void emit(EventType type, std::string message, nlohmann::json details = nullptr);
  /// Events from what changed in the view since the last publish: queues started or stopped,
  /// carrier, rings marked broken. Session events are rare; nothing here runs per frame.
  void emit_changes(const SessionView& v);

  Worker& worker_;
  uint32_t id_;
  std::shared_ptr<PortStatus> status_;
  FrontendSocket frontend_;
  uint64_t sessions_ = 0;
  PeerProcess frontend_process_;  // who the running session is with
  // What the last publish showed, for emit_changes().
  uint32_t seen_queues_running_ = 0;
  bool seen_carrier_ = false;
  std::vector<std::string> seen_broken_;
  bool pending_marked_ = false;
  bool detaching_ = false;
};

}  // namespace vp::daemon
