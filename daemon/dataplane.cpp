#include "daemon/dataplane.hpp"

#include <algorithm>

#include "daemon/port.hpp"
#include "daemon/stream_port.hpp"
#include "daemon/vhost_user_port.hpp"
#include "daemon/worker.hpp"
#include "dataplane/tx_uring.hpp"
#include "sys/log.hpp"

namespace vp::daemon {

Dataplane::Dataplane(unsigned workers, bool try_io_uring, EventQueue* events,
                     std::chrono::seconds message_timeout) {
  if (!try_io_uring) {
    log::info("guest->host path: writev (io_uring switched off by --no-io-uring)");
  } else if (auto usable = dataplane::TxUring::probe(); !usable) {
    // kernel.io_uring_disabled, a seccomp filter (EPERM, ENOSYS), an old kernel: said once.
    log::warning("io_uring unavailable (", usable.error().message, "): using the writev path");
  } else {
    io_uring_ = true;
    log::info("guest->host path: io_uring (one submission per batch of TAP writes)");
  }
  for (unsigned i = 0; i < std::max(1u, workers); ++i) {
    workers_.push_back(std::make_unique<Worker>(i, io_uring_, events, message_timeout));
  }
  std::vector<Worker*> peers;
  for (const auto& w : workers_) peers.push_back(w.get());
  for (const auto& w : workers_) w->set_peers(peers);
}

Dataplane::~Dataplane() {
  // Every endpoint ends while every worker still runs: an endpoint takes its lent queue
  // pairs back from the other workers as it goes.
  for (const auto& w : workers_) w->detach_all();
}

Worker& Dataplane::worker_of(const std::string& name) const {
  for (const auto& w : workers_) {
    if (w->serves(name)) return *w;
  }
  // New endpoints go to the worker with the fewest.
  Worker* best = workers_.front().get();
  size_t fewest = SIZE_MAX;
  for (const auto& w : workers_) {
    if (const size_t n = w->port_count(); n < fewest) {
      fewest = n;
      best = w.get();
    }
  }
  return *best;
}

void Dataplane::attach(const control::EndpointConfig& config, std::vector<net::Tap> taps,
                       Fd listener) {
  detach(config.name);
  if (taps.empty()) {
    log::error(config.name, ": no TAP queue to serve the guest with");
    return;
  }
  // std::function needs a copyable callable: carry the move-only parts by pointer.
  auto taps_box = std::make_shared<std::vector<net::Tap>>(std::move(taps));
  auto listener_box = std::make_shared<Fd>(std::move(listener));
  worker_of(config.name)
      .attach(
          config.name,
          [&config, taps_box, listener_box](
              Worker& w, uint32_t id, std::shared_ptr<PortStatus> status) -> std::unique_ptr<Port> {
            if (config.transport == control::Transport::kStream) {
              return std::make_unique<StreamPort>(w, id, config, std::move(taps_box->front()),
                                                  std::move(*listener_box), std::move(status));
            }
            return std::make_unique<VhostUserPort>(w, id, config, std::move(*taps_box),
                                                   std::move(*listener_box), std::move(status));
          });
}

void Dataplane::detach(const std::string& name) {
  for (const auto& w : workers_) {
    if (w->serves(name)) w->detach(name);
  }
}

void Dataplane::set_priority(const std::string& name, int priority) {
  for (const auto& w : workers_) {
    if (w->serves(name)) w->set_priority(name, priority);
  }
}

void Dataplane::set_tx_rate(const std::string& name, const control::Rate& rate) {
  for (const auto& w : workers_) {
    if (w->serves(name)) w->set_tx_rate(name, rate);
  }
}

bool Dataplane::attached(const std::string& name) const {
  return std::ranges::any_of(workers_, [&](const auto& w) { return w->serves(name); });
}

bool Dataplane::session_active(const std::string& name) const {
  for (const auto& w : workers_) {
    if (auto s = w->status_of(name)) {
      std::lock_guard lock(s->mutex);
      return s->active;
    }
  }
  return false;
}

std::optional<SessionView> Dataplane::view(const std::string& name) const {
  for (const auto& w : workers_) {
    if (auto s = w->status_of(name)) {
      std::lock_guard lock(s->mutex);
      SessionView v = s->view;
      v.counters = s->read_counters();
      for (uint32_t p = 0; p < v.queue_counts.size(); ++p)
        v.queue_counts[p] = s->read_queue_counts(p);
      return v;
    }
  }
  return std::nullopt;
}

bool Dataplane::responsive(std::chrono::milliseconds timeout) const {
  std::vector<Worker*> workers;
  for (const auto& w : workers_) workers.push_back(w.get());
  return all_responsive(workers, timeout);
}

}  // namespace vp::daemon
