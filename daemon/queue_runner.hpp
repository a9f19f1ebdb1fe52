#pragma once

// One vhost-user queue pair lent by its endpoint's worker (the owner) to another worker
// (the remote), so that an endpoint's pairs run on several cores. The owner keeps the
// session: every vhost-user message, the memory table, the dirty log, features and the TAP's
// device-wide settings. While a pair is lent the remote alone touches its rings, its TAP
// queue, its kick and call eventfds, its transmit io_uring and its RxHold; the owner touches
// none of them and reads only what it alone writes (which rings run, the io_uring pointer).
//
// The owner takes the pair back, synchronously, before it acts on anything the pair uses
// (any vhost-user message, session close, detach, tx-rate=): the remote stops serving it,
// removes its fds from its epoll and adds its last counts; only then does take_back()
// return. Writes still in flight in the pair's io_uring go home with it, as on a pair that
// never left: the owner drains them where a ring stops (GET_VRING_BASE, SET_MEM_TABLE, reset
// and session end all stop the rings first), so no write reads guest memory after that. The owner
// lends it out again once both rings of the pair run. Only the pair moves: nothing is allocated or
// locked per frame on either side.

#include <cstdint>
#include <memory>

#include "daemon/worker.hpp"
#include "dataplane/forward.hpp"
#include "dataplane/net_counters.hpp"
#include "dataplane/tx_uring.hpp"
#include "vhost/backend.hpp"

namespace vp::daemon {

struct PortStatus;

/// What a lent pair is made of; owned by the owner's port, used by the remote while lent.
struct LentPair {
  uint32_t pair = 0;
  int tap_fd = -1;
  vhost::Vring* rx = nullptr;           // receiveq p
  vhost::Vring* tx = nullptr;           // transmitq p
  dataplane::NetSession session;        // a copy: features change only while the pair is back
  dataplane::TxUring* uring = nullptr;  // null: writev
  dataplane::RxHold* hold = nullptr;
  // The pair's state, handed over and back.
  bool tx_blocked = false;
  bool rx_paused = false;
  bool tx_pending = false;
  bool rx_pending = false;
};

class QueueRunner {
 public:
  /// `owner_port`: the owner's tag id of the endpoint (for runner_stopped()).
  QueueRunner(Worker& owner, uint32_t owner_port, std::shared_ptr<PortStatus> status);
  ~QueueRunner();
  QueueRunner(const QueueRunner&) = delete;
  QueueRunner& operator=(const QueueRunner&) = delete;

  // Owner thread ------------------------------------------------------------------------------

  /// Hands `pair` to `remote` (returns at once; the owner must not touch it from now on).
  void lend(Worker& remote, const LentPair& pair);
  /// Takes the pair back and waits until the remote let go of it; the pair's state (flags)
  /// as the remote left it. Only while lent().
  LentPair take_back();
  bool lent() const { return remote_ != nullptr; }
  /// The worker serving the pair while lent.
  unsigned remote_index() const { return remote_ ? remote_->index() : owner_.index(); }

  // Remote thread ----------------------------------------------------------------------------

  void on_event(EventKind kind, uint16_t queue, uint32_t events);
  void continue_work();

 private:
  void start();
  void stop();
  void run_tx();
  void run_rx();
  /// A ring of the pair broke: tells the owner once (a post, never a wait).
  void report_stopped();
  void update_tap();
  void mark_pending();
  /// Adds this wake-up's counts to the endpoint's (atomic adds: the owner adds too).
  void publish();

  Worker& owner_;
  uint32_t owner_port_;
  std::shared_ptr<PortStatus> status_;
  Worker* remote_ = nullptr;  // owner thread: set by lend(), cleared by take_back()
  // Remote thread only, while lent.
  Worker* here_ = nullptr;  // the remote
  LentPair p_;
  uint32_t id_ = 0;  // the remote's tag id of this runner
  Interest tap_;
  Interest rx_kick_;
  Interest tx_kick_;
  Interest uring_;
  bool pending_marked_ = false;
  bool stop_reported_ = false;
  dataplane::NetCounters local_;
  dataplane::QueueCounts counts_;
};

}  // namespace vp::daemon
