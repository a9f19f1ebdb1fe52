#pragma once

// One transport=vhost-user endpoint on its worker: the vhost::Device policy (features,
// config space, ring start/stop) and the forwarding loop of its queue pairs.
//
// Queue pair p is receiveq p (virtqueue 2p), transmitq p (2p+1) and TAP queue p; each pair
// forwards only between its own rings and its own TAP queue. The session (every vhost-user
// message) always runs on this worker, the owner; pair p >= 1 runs on worker
// (owner + p) % workers while both its rings run and neither tx-rate= nor priority= is set
// (a QueueRunner: the pair is lent), and comes back here before any message is handled. TAP queue 0
// is the registry's (a dup) and always stays attached: the TAP's device-wide settings (offloads,
// header size, carrier) go through it. Queues 1..N-1 are attached to the TAP only while a ring of
// their pair runs, so that the kernel never steers a flow to a queue nobody reads: a pair the guest
// did not enable supplies no RX and loses nothing.

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "daemon/port.hpp"
#include "daemon/queue_runner.hpp"
#include "daemon/ring_pass.hpp"
#include "dataplane/forward.hpp"
#include "dataplane/tx_uring.hpp"
#include "net/mac.hpp"
#include "net/tap.hpp"
#include "vhost/backend.hpp"

namespace vp::daemon {

class VhostUserPort final : public Port, public vhost::Device {
 public:
  /// `taps` holds one TAP queue per queue pair (at least one).
  VhostUserPort(Worker& worker, uint32_t id, control::EndpointConfig config,
                std::vector<net::Tap> taps, Fd listener, std::shared_ptr<PortStatus> status);
  ~VhostUserPort() override;

  // vhost::Device
  uint64_t features() const override;
  uint64_t protocol_features() const override;
  uint32_t num_queues() const override { return 2 * pairs(); }
  Result<void> on_features(uint64_t acked) override;
  std::span<const std::byte> config() const override { return config_space_; }
  void on_queue_started(uint32_t index) override;
  void on_queue_stopped(uint32_t index) override;
  Result<void> on_mtu(uint32_t mtu) override;
  void on_rarp(const uint8_t (&mac)[6]) override;
  void on_status(uint8_t) override {}

 private:
  /// One queue pair and its TAP queue. Worker thread only.
  struct Pair {
    net::Tap tap;
    Interest tap_interest;      // EPOLLIN / EPOLLOUT of the TAP queue
    Interest rx_kick;           // receiveq p's kick eventfd, while the ring runs
    Interest tx_kick;           // transmitq p's, while it runs or discards
    bool rx_running = false;    // receiveq p (device → driver) is started
    bool tx_running = false;    // transmitq p (driver → device) is started
    bool attached = true;       // the TAP queue takes part in the kernel's queue selection
    bool detach_due = false;    // no ring runs: detach once the current batch of messages is done
    bool tx_blocked = false;    // the TAP queue said EAGAIN: waiting for EPOLLOUT
    bool rx_paused = false;     // the guest had no RX buffer: waiting for its kick
    bool tx_pending = false;    // budget used up: continue_work() carries on
    bool tx_throttled = false;  // tx-rate= bucket empty: the refill timer carries on
    bool rx_pending = false;

    // transmitq p is started but disabled (SET_VRING_ENABLE 0): its chains are discarded.
    bool tx_discarding = false;
    // A frame read while the guest was refilling receiveq p, until it posts enough.
    dataplane::RxHold rx_hold;

    // transmitq p's io_uring, set up when the ring first starts in a session (null: writev).
    // It holds chains until their writes complete; on_queue_stopped() drains it.
    std::unique_ptr<dataplane::TxUring> tx_uring;
    Interest uring_interest;    // its fd, while writes are in flight
    bool uring_failed = false;  // setting it up failed in this session: writev, said once

    // This pair's share of local_ since the last publish (per-queue counters).
    dataplane::QueueCounts counts;

    // Lent to another worker (`runner` serves it there): this worker touches none of the
    // pair's rings, fds, io_uring, RxHold or the flags above but the *_running ones.
    std::unique_ptr<QueueRunner> runner;
    bool lent = false;
  };

  // SPEC: virtio 1.2 §5.1.2: receiveqN is virtqueue 2(N-1), transmitqN is 2(N-1)+1.
  static constexpr bool is_rx(uint32_t index) { return index % 2 == 0; }
  uint32_t pairs() const { return static_cast<uint32_t>(pairs_.size()); }

  // Port
  bool session_open() const override { return backend_ != nullptr; }
  void start_session(Fd conn) override;
  void close_session(std::string_view why) override;
  void on_connection(uint32_t events) override;
  void on_tap(uint16_t pair, uint32_t events) override;
  void on_kick(uint16_t virtqueue) override;
  void on_uring(uint16_t pair) override;
  void continue_pending() override;
  bool fill_view(SessionView& v) const override;
  void publish_queue_counts(PortStatus& status) override;
  void on_tx_rate_timer() override;
  void apply_tx_rate() override;
  void on_stall_timer() override;
  void before_settings_change() override { take_back_pairs(); }
  void after_settings_change() override { lend_pairs(); }
  void on_runner_stopped(uint16_t pair) override;

  /// Every lent pair comes back (synchronously) before a message, a close or a setting may
  /// change what the pair uses; lend_pairs() hands out again those that may go.
  void take_back_pairs();
  void take_back(uint32_t p);
  void lend_pairs();
  /// Pair p may run on another worker: not pair 0, both rings run and are healthy, a guest
  /// negotiated features, no tx-rate= (its one bucket is this worker's) and no priority=
  /// (which raises only this worker's thread).
  bool lendable(uint32_t p) const;

  /// After a batch of messages: arms the stall timer when a message is left incomplete (and
  /// was not already being timed), disarms it when none is.
  void watch_stall();
  void disarm_stall();

  void build_config_space();
  /// Watches `index`'s kick eventfd (the ring started).
  void watch_kick(uint32_t index);
  void update_tap(uint32_t p);
  void detach_idle_tap_queues();
  void run_tx(uint32_t p);
  /// Sets up pair p's transmit io_uring if the worker uses io_uring and it has none yet.
  void start_tx_uring(uint32_t p);
  /// Waits for every write pair p's io_uring has in flight and gives their chains back:
  /// before transmitq p stops, nothing may read guest memory or write its used ring later.
  void drain_tx_uring(uint32_t p);
  void run_rx(uint32_t p);
  /// tx-rate=: pair p found the bucket empty; the timer wakes it when tokens are back.
  void throttle_tx(uint32_t p);
  /// Runs transmit again on every pair the bucket held back.
  void resume_throttled_tx();

  net::Mac guest_mac_;
  std::unique_ptr<vhost::Backend> backend_;
  // After backend_, so destroyed before it: a pair still lent out is taken back while the
  // rings its runner uses exist.
  std::vector<Pair> pairs_;
  Interest conn_;  // the session's socket
  std::array<std::byte, 12> config_space_{};
  dataplane::NetSession session_;
  uint64_t acked_ = 0;
  unsigned tun_offloads_ = 0;
  bool carrier_ = false;
  bool io_uring_ = false;  // the worker's choice: transmit queues try io_uring
  // tx-rate=: one bucket for the endpoint, shared by its pairs (all on this worker), and its
  // refill timer (created when a limit is first set).
  dataplane::TxBucket tx_bucket_;
  OneShotTimer tx_timer_{epoll(), tag(EventKind::kTxRateTimer)};
  uint64_t throttled_since_ns_ = 0;  // when the timer was armed
  // The worker's message_timeout() (vpd --message-timeout): created when a message of the session
  // is first left incomplete, closed with the session, armed only while one is; whole messages cost
  // nothing.
  OneShotTimer stall_timer_{epoll(), tag(EventKind::kStallTimer)};
  uint64_t stall_message_ = 0;  // backend_->messages_read() when armed: the message timed
};

}  // namespace vp::daemon
