#include "daemon/port.hpp"

#include "sys/log.hpp"

namespace vp::daemon {

void PortStatus::add_counters(dataplane::NetCounters& local) noexcept {
  for (size_t i = 0; i < counters.size(); ++i) {
    const uint64_t v = local.*dataplane::kNetCounterFields[i].member;
    if (v != 0)
      counters[i].store(counters[i].load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }
  local = {};
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
      frontend_(config_, frontend,
                [this](Fd conn, PeerProcess who) { connected(std::move(conn), std::move(who)); }) {}

Port::~Port() { worker_.forget_pending(this); }

void Port::open_frontend(Fd listener) {
  frontend_.open(epoll(), std::move(listener), tag(EventKind::kListener), tag(EventKind::kRedial));
  if (frontend_.dials()) frontend_.dial();
  state_dirty_ = true;
  publish();
}

void Port::connected(Fd conn, PeerProcess who) {
  frontend_process_ = std::move(who);
  start_session(std::move(conn));
  ++sessions_;
  state_dirty_ = true;
}

void Port::end_session(std::string_view why) {
  if (!session_open()) return;
  close_session(why);
  state_dirty_ = true;
  if (frontend_.dials() && !detaching_) frontend_.dial();
}

void Port::close_for_detach() {
  detaching_ = true;
  end_session("endpoint detached");
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
  }
  publish();
}

void Port::continue_work() {
  pending_marked_ = false;
  continue_pending();
  publish();
}

void Port::publish() {
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
}

}  // namespace vp::daemon
