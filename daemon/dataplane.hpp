#pragma once

// The data path of every endpoint, vhost-user or stream: a small pool of worker threads,
// each owning whole endpoints — the endpoint's listening or dialled front-end socket, its
// session (a vhost::Backend and its virtqueues, or a stream connection) and its TAP queues,
// all in the worker's one epoll. The one exception: a vhost-user endpoint's queue pair
// p >= 1 is lent to worker (owner + p) % workers while both its rings run (QueueRunner);
// its fds are then in that worker's epoll alone, and it comes back before the owner handles
// any message. At any moment each fd is touched by one thread. The control thread talks to workers
// only by posting commands (an eventfd-woken queue); the packet path takes no lock and allocates
// nothing.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "control/endpoint.hpp"
#include "daemon/options.hpp"
#include "daemon/session_view.hpp"
#include "net/tap.hpp"
#include "sys/fd.hpp"

namespace vp::daemon {

class EventQueue;
class Worker;

class Dataplane {
 public:
  /// Starts `workers` threads. With `try_io_uring`, guest→host TAP writes are batched with
  /// io_uring if the kernel lets vpd set one up (checked once here; if not, vpd says why in
  /// the log once and every queue uses writev); without it they always use writev.
  /// `events` (may be null; must outlive the Dataplane) receives the session events.
  /// `message_timeout`: how long a vhost-user front-end may leave a message incomplete.
  explicit Dataplane(unsigned workers, bool try_io_uring = true, EventQueue* events = nullptr,
                     std::chrono::seconds message_timeout = kDefaultMessageTimeout);
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
  /// tx-rate= of an attached endpoint, applied beside its session (the guest stays).
  void set_tx_rate(const std::string& name, const control::Rate& rate);
  /// True while a guest has negotiated features: the worker, not the control thread, then
  /// decides the TAP's offloads and header length.
  bool session_active(const std::string& name) const;
  std::optional<SessionView> view(const std::string& name) const;
  /// True when every worker ran a posted no-op within `timeout` (for the systemd watchdog).
  /// Never waits longer than `timeout`, whatever a wedged worker does; its late answer
  /// touches nothing of the caller's.
  bool responsive(std::chrono::milliseconds timeout) const;
  /// True when transmit queues use io_uring (see the constructor).
  bool io_uring() const { return io_uring_; }

 private:
  Worker& worker_of(const std::string& name) const;

  std::vector<std::unique_ptr<Worker>> workers_;
  bool io_uring_ = false;
};

}  // namespace vp::daemon
