#include "daemon/port.hpp"

#include <algorithm>

#include "sys/log.hpp"
#include "sys/str.hpp"

namespace vp::daemon {

void PortStatus::add_counters(dataplane::NetCounters& local) noexcept {
  for (size_t i = 0; i < counters.size(); ++i) {
    const uint64_t v = local.*dataplane::kNetCounterFields[i].member;
    if (v != 0) counters[i].fetch_add(v, std::memory_order_relaxed);
  }
  local = {};
}

void PortStatus::add_queue_counts(uint32_t pair, dataplane::QueueCounts& local) noexcept {
  if (pair >= queue_counters.size()) return;
  auto& slots = queue_counters[pair];
  for (size_t i = 0; i < slots.size(); ++i) {
    const uint64_t v = local.*dataplane::kQueueCountFields[i].member;
    if (v != 0) slots[i].fetch_add(v, std::memory_order_relaxed);
  }
  local = {};
}

dataplane::QueueCounts PortStatus::read_queue_counts(uint32_t pair) const noexcept {
  dataplane::QueueCounts c;
  if (pair >= queue_counters.size()) return c;
  for (size_t i = 0; i < queue_counters[pair].size(); ++i) {
    c.*dataplane::kQueueCountFields[i].member =
        queue_counters[pair][i].load(std::memory_order_relaxed);
  }
  return c;
}

dataplane::NetCounters PortStatus::read_counters() const noexcept {
  dataplane::NetCounters c;
  for (size_t i = 0; i < counters.size(); ++i) {
    c.*dataplane::kNetCounterFields[i].member = counters[i].load(std::memory_order_relaxed);
  }
  return c;
}

Port::Port(Worker& worker, uint32_t id, control::EndpointConfig config,
           std::shared_ptr<PortStatus> status, std::string_view frontend)
    : config_(std::move(config)),
      worker_(worker),
      id_(id),
      status_(std::move(status)),
      frontend_(
          config_, frontend,
          [this](Fd conn, PeerProcess who) { connected(std::move(conn), std::move(who)); },
          worker.events()) {}

Port::~Port() { worker_.forget_pending(this); }

void Port::open_frontend(Fd listener) {
  frontend_.open(epoll(), std::move(listener), tag(EventKind::kListener), tag(EventKind::kRedial),
                 tag(EventKind::kRefusalSummary));
  if (frontend_.dials()) frontend_.dial();
  state_dirty_ = true;
  publish();
}

void Port::emit(EventType type, std::string message, nlohmann::json details) {
  if (EventQueue* events = worker_.events()) {
    events->publish(type, config_.name, std::move(message), std::move(details));
  }
}

void Port::connected(Fd conn, PeerProcess who) {
  emit(EventType::kFrontendConnected,
       str("a frontend connected on ", frontend_.socket(), " (", describe_process(who), ")"),
       {{"frontend", peer_process_json(who)}, {"socket", std::string(frontend_.socket())}});
  frontend_process_ = std::move(who);
  start_session(std::move(conn));
  ++sessions_;
  state_dirty_ = true;
}

void Port::end_session(std::string_view why) {
  if (!session_open()) return;
  close_session(why);
  emit(EventType::kFrontendDisconnected, str("the frontend session ended (", why, ")"),
       {{"reason", std::string(why)}});
  state_dirty_ = true;
  if (frontend_.dials() && !detaching_) frontend_.dial();
}

void Port::close_for_detach() {
  detaching_ = true;
  end_session("endpoint detached");
  // The session's last events (queues stopped, carrier down) go out before the endpoint's
  // own (destroyed): a subscriber's view of it ends as it would on a disconnect.
  publish();
}

void Port::mark_pending() {
  if (pending_marked_) return;
  pending_marked_ = true;
  worker_.mark_pending(this);
}

void Port::forget_pending() {
  worker_.forget_pending(this);
  pending_marked_ = false;
}

void Port::on_event(EventKind kind, uint16_t queue, uint32_t events) {
  switch (kind) {
    case EventKind::kListener:
      if (frontend_.accept(session_open())) state_dirty_ = true;
      break;
    case EventKind::kConnection:
      on_connection(events);
      break;
    case EventKind::kTap:
      on_tap(queue, events);
      break;
    case EventKind::kKick:
      on_kick(queue);
      break;
    case EventKind::kRedial:
      frontend_.on_redial_timer(session_open());
      break;
    case EventKind::kUring:
      on_uring(queue);
      break;
    case EventKind::kTxRateTimer:
      on_tx_rate_timer();
      break;
    case EventKind::kStallTimer:
      on_stall_timer();
      break;
    case EventKind::kRefusalSummary:
      frontend_.on_summary_timer();
      break;
  }
  publish();
}

void Port::set_tx_rate(const control::Rate& rate) {
  // The endpoint's one bucket is not shared across workers: pairs come home first.
  before_settings_change();
  config_.tx_rate = rate;
  apply_tx_rate();
  after_settings_change();
  publish();
}

void Port::set_priority(int priority) {
  before_settings_change();
  config_.priority = priority;
  after_settings_change();
  publish();
}

void Port::runner_stopped(uint16_t pair) {
  on_runner_stopped(pair);
  publish();
}

void Port::continue_work() {
  pending_marked_ = false;
  continue_pending();
  publish();
}

void Port::publish() {
  publish_queue_counts(*status_);
  status_->add_counters(local_);
  if (!state_dirty_) return;
  state_dirty_ = false;
  std::lock_guard lock(status_->mutex);
  SessionView& v = status_->view;
  v.state = session_open()          ? SessionState::kConnected
            : frontend_.listening() ? SessionState::kListening
            : frontend_.dials()     ? SessionState::kDialing
                                    : SessionState::kStopped;
  v.socket = std::string(frontend_.socket());
  v.sessions = sessions_;
  v.refused_peers = frontend_.refused_peers();
  if (session_open()) {
    v.frontend = frontend_process_;
  } else {
    v.frontend.reset();
  }
  status_->active = fill_view(v);
  emit_changes(v);
}

void Port::emit_changes(const SessionView& v) {
  if (v.queues_running != seen_queues_running_) {
    const bool started = v.queues_running > seen_queues_running_;
    const nlohmann::json details{{"queues_running", v.queues_running}, {"queues", v.queues}};
    if (started) {
      emit(EventType::kQueuesStarted,
           str("the guest's driver started its queues (", v.queues_running, " of ", v.queues,
               " running)"),
           details);
    } else {
      emit(EventType::kQueuesStopped,
           str("queues stopped (", v.queues_running, " of ", v.queues, " running)"), details);
    }
    seen_queues_running_ = v.queues_running;
  }
  if (v.carrier != seen_carrier_) {
    if (v.carrier) {
      emit(EventType::kCarrierUp, str(name(), " has carrier: the guest's queues run"));
    } else {
      emit(EventType::kCarrierDown, str(name(), " lost carrier: the guest's queues stopped"));
    }
    seen_carrier_ = v.carrier;
  }
  for (const std::string& broken : v.broken_queues) {
    if (std::find(seen_broken_.begin(), seen_broken_.end(), broken) != seen_broken_.end()) {
      continue;
    }
    const size_t colon = broken.find(": ");
    const std::string queue = broken.substr(0, colon);
    const std::string reason = colon == std::string::npos ? "" : broken.substr(colon + 2);
    emit(EventType::kRingBroken, str("ring ", queue, " marked broken: ", reason),
         {{"queue", queue}, {"reason", reason}});
  }
  seen_broken_ = v.broken_queues;
}

}  // namespace vp::daemon
