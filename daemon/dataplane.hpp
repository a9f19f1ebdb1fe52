#pragma once

// The data path of every vhost-user endpoint: a small pool of worker threads, each owning
// whole endpoints (DESIGN.md) — the endpoint's listening or dialled vhost-user socket, its
// vhost::Backend, the virtqueues and one TAP queue per queue pair, all in the worker's one
// epoll. The control thread talks to workers only by posting commands (an eventfd-woken
// queue); the packet path takes no lock and allocates nothing.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "control/endpoint.hpp"
#include "dataplane/net_counters.hpp"
#include "net/tap.hpp"
#include "sys/fd.hpp"

namespace vp::daemon {

/// What vpctl shows of an endpoint's guest side.
struct SessionView {
  std::string state;  // "listening", "dialing", "connected", "stopped"
  std::string socket;
  uint64_t features = 0;  // acked virtio features (0 before SET_FEATURES)
  bool packed = false;
  uint32_t queues_running = 0;  // virtqueues started (both of a pair when it runs)
  uint32_t queues = 0;          // virtqueues served: 2 per queue pair
  uint32_t hdr_len = 0;
  unsigned tun_offloads = 0;
  uint64_t sessions = 0;       // frontends served since vpd started
  uint64_t refused_peers = 0;  // connections turned away by allow=
  uint64_t refused_messages = 0;
  std::vector<std::string> broken_queues;  // "rx0: avail-index-jump"
  dataplane::NetCounters counters;
};

class Worker;

class Dataplane {
 public:
  /// Starts `workers` threads.
  explicit Dataplane(unsigned workers);
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  /// Serves `config`'s guest side: `listener` (bind=, may be invalid) and/or dialling
  /// config.peer. `taps` holds one TAP queue per queue pair (config.queues of them, at least
  /// one): taps[0] is a handle on the endpoint's own queue and stays attached; the others
  /// are queues of a multiqueue TAP that the data plane detaches while their pair does not
  /// run. Replaces any earlier attachment of the same name (the guest reconnects).
  void attach(const control::EndpointConfig& config, std::vector<net::Tap> taps, Fd listener);
  /// Stops serving `name` and waits until its worker let go of every fd.
  void detach(const std::string& name);
  bool attached(const std::string& name) const;
  /// priority=N of an attached endpoint: its worker thread runs SCHED_FIFO at the highest
  /// priority of its endpoints (0: normal scheduling).
  void set_priority(const std::string& name, int priority);
  /// True while a guest has negotiated features: the worker, not the control thread, then
  /// decides the TAP's offloads and header length.
  bool session_active(const std::string& name) const;
  std::optional<SessionView> view(const std::string& name) const;

 private:
  Worker& worker_of(const std::string& name) const;

  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace vp::daemon
