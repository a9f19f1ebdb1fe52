#include "daemon/vhost_user_port.hpp"

#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <variant>

#include "dataplane/net_header.hpp"
#include "net/offloads.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"
#include "virtio/queue.hpp"

namespace vp::daemon {

namespace {

// virtio-net feature bits the device side offers besides the offloads (virtio 1.2 §5.1.3).
constexpr uint64_t kNetFMtu = 1ull << 3;
constexpr uint64_t kNetFMac = 1ull << 5;
constexpr uint64_t kNetFStatus = 1ull << 16;
constexpr uint64_t kNetFGuestAnnounce = 1ull << 21;
constexpr uint64_t kNetFMq = 1ull << 22;
constexpr uint64_t kFAnyLayout = 1ull << 27;
constexpr uint64_t kGsoFeatures = net::feature::kGuestTso4 | net::feature::kGuestTso6 |
                                  net::feature::kGuestUfo | net::feature::kGuestUso4 |
                                  net::feature::kGuestUso6;

/// TUNSETQUEUE: a detached queue of a multiqueue TAP takes no part in the kernel's choice
/// of queue for frames towards the guest; its reads, writes and polls fail (EBADFD, EPOLLERR).
Result<void> set_tap_queue_attached(const net::Tap& tap, bool attached) {
  ifreq ifr{};
  ifr.ifr_flags = static_cast<short>(attached ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE);
  if (::ioctl(tap.fd(), TUNSETQUEUE, &ifr) < 0) {
    return sys_fail(attached ? "TUNSETQUEUE IFF_ATTACH_QUEUE" : "TUNSETQUEUE IFF_DETACH_QUEUE",
                    errno);
  }
  return {};
}

uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

VhostUserPort::VhostUserPort(Worker& worker, uint32_t id, control::EndpointConfig config,
                             std::vector<net::Tap> taps, Fd listener,
                             std::shared_ptr<PortStatus> status)
    : Port(worker, id, std::move(config), std::move(status), "frontend"),
      guest_mac_(control::guest_mac_of(config_, net::read_machine_id())),
      io_uring_(worker.io_uring()) {
  pairs_.resize(taps.size());  // sized once: the worker's tags index it
  for (size_t p = 0; p < taps.size(); ++p) {
    Pair& pair = pairs_[p];
    pair.tap = std::move(taps[p]);
    pair.tap_interest =
        Interest(epoll(), pair.tap.fd(), tag(EventKind::kTap, static_cast<uint16_t>(p)));
  }
  // No ring runs yet: queues 1..N-1 leave the kernel's queue selection until one does.
  for (uint32_t p = 1; p < pairs(); ++p) pairs_[p].detach_due = true;
  detach_idle_tap_queues();
  build_config_space();
  if (!config_.tx_rate.unset()) apply_tx_rate();
  open_frontend(std::move(listener));
}

VhostUserPort::~VhostUserPort() { close_for_detach(); }

// vhost::Device -----------------------------------------------------------------------------

uint64_t VhostUserPort::features() const {
  // LOG_ALL: live migration. The engine keeps the log and the queues mark their ring
  // writes; forward_rx() marks the RX buffers it fills.
  uint64_t f = config_.features() | virtio::kFeatureEventIdx | virtio::kFeatureIndirectDesc |
               virtio::kFeatureRingPacked | kNetFMtu | kNetFMac | kNetFStatus | kFAnyLayout |
               vhost::kFeatureLogAll;
  // GUEST_ANNOUNCE, to QEMU only: after a migration the guest announces itself (a
  // gratuitous ARP per address, IPv6 neighbour advertisements), which tells peers more
  // than a RARP from its MAC. SPEC: virtio 1.2 §5.1.3.1: it requires CTRL_VQ, and the
  // device raises VIRTIO_NET_S_ANNOUNCE in its config space. QEMU serves both itself (its
  // virtio-net keeps the control queue and the status; it passes GUEST_ANNOUNCE through
  // from the back-end and then sends no SEND_RARP). A front-end that passes vpd's bits to
  // its guest without a control queue of its own would offer the bit without what it
  // requires, and Linux's driver refuses such a device; so others get SEND_RARP (on_rarp).
  if (is_qemu_executable(frontend_process().exe)) f |= kNetFGuestAnnounce;
  // `legacy`: a VIRTIO 0.9.5 peer without MRG_RXBUF, so the 10-byte header.
  if (!config_.legacy) f |= virtio::kFeatureVersion1 | dataplane::kFeatureMrgRxbuf;
  // SPEC: virtio 1.2 §5.1.3: MQ says max_virtqueue_pairs is valid. The driver also needs
  // CTRL_VQ to use it; the VMM serves the control queue and tells vpd which pairs it
  // enabled (SET_VRING_ENABLE).
  if (pairs() > 1) f |= kNetFMq;
  return f;
}

uint64_t VhostUserPort::protocol_features() const {
  using vhost::ProtocolFeature;
  // CONFIG: GET_CONFIG reads the virtio-net config space (mac, status, max_virtqueue_pairs,
  // mtu) for front-ends that ask the device (crosvm, DPDK virtio-user); QEMU's net device
  // does not ack it and uses its own.
  // LOG_SHMFD: the dirty log arrives as shared memory (SET_LOG_BASE); QEMU refuses to
  // migrate a guest whose vhost-user back-end lacks it.
  uint64_t f = vhost::bit(ProtocolFeature::kMq) | vhost::bit(ProtocolFeature::kLogShmfd) |
               vhost::bit(ProtocolFeature::kRarp) | vhost::bit(ProtocolFeature::kReplyAck) |
               vhost::bit(ProtocolFeature::kNetMtu) | vhost::bit(ProtocolFeature::kStatus) |
               vhost::bit(ProtocolFeature::kConfig);
  // QEMU before 8.0 sends ADD_MEM_REG/REM_MEM_REG once per queue pair (its vhost_dev per
  // pair; later versions send them once, like SET_MEM_TABLE). The engine refuses the second
  // copy of a region as an overlap, and QEMU then gives up vhost for the NIC. With several
  // pairs vpd therefore offers only SET_MEM_TABLE, which every QEMU sends once.
  if (pairs() == 1) f |= vhost::bit(ProtocolFeature::kConfigureMemSlots);
  return f;
}

Result<void> VhostUserPort::on_features(uint64_t acked) {
  dataplane::NetSession s = dataplane::make_net_session(acked);
  if (!(acked & kGsoFeatures)) s.max_rx_frame = config_.mtu + 18;  // Ethernet + VLAN tag
  s.lock_mac = config_.lock_mac;
  s.guest_mac = guest_mac_.bytes;
  // Header size and offloads belong to the TAP device, not to one queue: set them once,
  // through queue 0 (always attached).
  net::Tap& tap = pairs_[0].tap;
  if (auto ok = tap.set_vnet_hdr_size(static_cast<int>(s.hdr_len)); !ok) return ok;
  // The TAP may hand vpd only what the guest acked: consistent by construction.
  auto offloads = tap.set_offload(net::tun_offloads_for(acked));
  if (!offloads) return std::unexpected(offloads.error());
  session_ = s;
  tun_offloads_ = *offloads;
  acked_ = acked;
  state_dirty_ = true;
  log::info(name(), ": guest acked ", net::feature_names(acked & net::kOffloadsSupported), ", ",
            s.hdr_len, "-byte header, TAP offloads ", net::tun_offload_names(*offloads),
            pairs() > 1 ? str(", up to ", pairs(), " queue pairs") : std::string());
  return {};
}

void VhostUserPort::watch_kick(uint32_t index) {
  Pair& pair = pairs_[index / 2];
  Interest& kick = is_rx(index) ? pair.rx_kick : pair.tx_kick;
  kick = Interest(epoll(), backend_->vring(index).kick.get(),
                  tag(EventKind::kKick, static_cast<uint16_t>(index)));
  kick.set(EPOLLIN);
}

void VhostUserPort::on_queue_started(uint32_t index) {
  if (index >= num_queues()) return;
  const vhost::Vring& v = backend_->vring(index);
  const uint32_t p = index / 2;
  Pair& pair = pairs_[p];
  if (!v.enabled) {
    // SPEC: vhost-user.rst "Ring states": a started but disabled ring supplies no RX and
    // processes and discards TX. The pair's TAP queue takes no part meanwhile.
    if (is_rx(index)) return;
    watch_kick(index);
    pair.tx_discarding = true;
    run_tx(p);
    return;
  }
  watch_kick(index);
  if (!is_rx(index)) start_tx_uring(p);
  (is_rx(index) ? pair.rx_running : pair.tx_running) = true;
  state_dirty_ = true;
  update_tap(p);
  if (is_rx(index)) {
    run_rx(p);
  } else {
    run_tx(p);
  }
}

void VhostUserPort::on_queue_stopped(uint32_t index) {
  if (index >= num_queues()) return;
  const uint32_t p = index / 2;
  Pair& pair = pairs_[p];
  if (!is_rx(index)) drain_tx_uring(p);
  if (!is_rx(index) && pair.tx_discarding) {
    pair.tx_kick.clear();
    pair.tx_discarding = pair.tx_pending = false;
    return;
  }
  bool& running = is_rx(index) ? pair.rx_running : pair.tx_running;
  if (!running) return;
  (is_rx(index) ? pair.rx_kick : pair.tx_kick).clear();
  running = false;
  if (is_rx(index)) {
    pair.rx_pending = pair.rx_paused = false;
    pair.rx_hold.len = 0;     // a frame for a ring that stopped: its guest may never take it
    pair.rx_hold.expect = 0;  // the next session learns its own frame sizes
  } else {
    pair.tx_pending = pair.tx_blocked = pair.tx_throttled = false;
  }
  state_dirty_ = true;
  update_tap(p);
}

Result<void> VhostUserPort::on_mtu(uint32_t mtu) {
  if (mtu != config_.mtu) {
    return fail("vhost-refused",
                str(name(), ": the guest asked for MTU ", mtu, "; ", name(), "'s is ", config_.mtu,
                    " (set it with vpctl ", name(), " mtu=N)"));
  }
  return {};
}

void VhostUserPort::on_rarp(const uint8_t (&mac)[6]) {
  // The guest moved here (live migration): broadcast a RARP request from its MAC into
  // the TAP, so bridges and switches learn where it is now (what QEMU's announce does).
  std::array<uint8_t, dataplane::kNetHdrSize + 60> frame{};
  const size_t hdr = acked_ ? session_.hdr_len : static_cast<size_t>(config_.vnet_hdr_len());
  uint8_t* f = frame.data() + hdr;
  std::memset(f, 0xff, 6);
  std::memcpy(f + 6, mac, 6);
  const uint8_t rarp[] = {0x80, 0x35, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x03};
  std::memcpy(f + 12, rarp, sizeof rarp);
  std::memcpy(f + 22, mac, 6);  // sender hardware address
  std::memcpy(f + 32, mac, 6);  // target hardware address
  const ssize_t n = ::write(pairs_[0].tap.fd(), frame.data(), hdr + 60);
  if (n < 0) {
    log::warning(name(), ": could not announce the migrated guest: ", std::strerror(errno));
  } else {
    log::info(name(), ": announced the guest's MAC after SEND_RARP");
  }
}

// Port --------------------------------------------------------------------------------------

bool VhostUserPort::fill_view(SessionView& v) const {
  // VHOST_F_LOG_ALL is the engine's, not the guest's: shown as "dirty logging" instead.
  v.features = backend_ ? acked_ & ~vhost::kFeatureLogAll : 0;
  v.packed = backend_ && (acked_ & virtio::kFeatureRingPacked);
  v.queues = num_queues();
  v.carrier = carrier_;
  v.queues_running = 0;
  for (const Pair& pair : pairs_) v.queues_running += pair.rx_running + pair.tx_running;
  v.hdr_len = backend_ && acked_ ? session_.hdr_len : 0;
  // Guest→host writes: what the running transmit queues use, or before one runs, what they
  // will try.
  uint32_t tx_queues = 0;
  uint32_t uring_queues = 0;
  for (const Pair& pair : pairs_) {
    if (!pair.tx_running) continue;
    ++tx_queues;
    if (pair.tx_uring) ++uring_queues;
  }
  if (tx_queues == 0) {
    v.tx_path = io_uring_ ? "io_uring" : "writev";
  } else if (uring_queues == tx_queues) {
    v.tx_path = "io_uring";
  } else if (uring_queues == 0) {
    v.tx_path = "writev";
  } else {
    v.tx_path = str("io_uring on ", uring_queues, " of ", tx_queues, " queues, writev on the rest");
  }
  v.tun_offloads = tun_offloads_;
  if (backend_) v.refused_messages = backend_->counters().requests_refused;
  v.dirty_logging = backend_ && backend_->logging();
  // Which worker serves each running pair (-1: the pair does not run).
  v.queue_workers.assign(pairs(), -1);
  for (uint32_t p = 0; p < pairs(); ++p) {
    const Pair& pair = pairs_[p];
    if (!backend_ || !pair.rx_running || !pair.tx_running) continue;
    v.queue_workers[p] =
        static_cast<int>(pair.lent ? pair.runner->remote_index() : worker().index());
  }
  v.broken_queues.clear();
  if (backend_) {
    for (uint32_t q = 0; q < num_queues(); ++q) {
      // A lent pair's rings are the remote's; a ring that breaks there brings the pair back
      // (on_runner_stopped), and it is shown then.
      if (pairs_[q / 2].lent) continue;
      const auto reason = std::visit([](const auto& queue) { return queue.broken_reason(); },
                                     backend_->vring(q).queue);
      if (reason != virtio::BrokenReason::kNone) {
        v.broken_queues.push_back(
            str(is_rx(q) ? "rx" : "tx", q / 2, ": ", virtio::describe(reason)));
      }
    }
  }
  return backend_ && acked_ != 0;
}

void VhostUserPort::build_config_space() {
  // SPEC: virtio 1.2 §5.1.4 struct virtio_net_config: mac[6], status, max_virtqueue_pairs,
  // mtu (little endian).
  for (size_t i = 0; i < 6; ++i) config_space_[i] = std::byte{guest_mac_.bytes[i]};
  config_space_[6] = std::byte{1};  // VIRTIO_NET_S_LINK_UP
  config_space_[8] = std::byte{static_cast<uint8_t>(pairs() & 0xff)};
  config_space_[9] = std::byte{static_cast<uint8_t>(pairs() >> 8)};
  config_space_[10] = std::byte{static_cast<uint8_t>(config_.mtu & 0xff)};
  config_space_[11] = std::byte{static_cast<uint8_t>(config_.mtu >> 8)};
}

void VhostUserPort::start_session(Fd conn) {
  backend_ = std::make_unique<vhost::Backend>(*this, std::move(conn), config_.name);
  conn_ = Interest(epoll(), backend_->fd(), tag(EventKind::kConnection));
  conn_.set(EPOLLIN);
  acked_ = 0;
}

void VhostUserPort::close_session(std::string_view why) {
  take_back_pairs();
  conn_.clear();
  // Stop the rings (on_queue_stopped() for each) while backend_ still points at the
  // session: unique_ptr::reset() clears the pointer before the destructor runs.
  backend_->close();
  backend_.reset();
  // Every ring stopped above, so every io_uring is drained: nothing reads guest memory now.
  for (Pair& pair : pairs_) {
    pair.uring_interest.clear();
    pair.tx_uring.reset();
    pair.uring_failed = false;
  }
  detach_idle_tap_queues();
  acked_ = 0;
  // Back to what the endpoint's settings say while no guest is attached.
  net::Tap& tap = pairs_[0].tap;
  (void)tap.set_vnet_hdr_size(config_.vnet_hdr_len());
  if (auto applied = tap.set_offload(net::tun_offloads_for(config_.features()))) {
    tun_offloads_ = *applied;
  }
  (void)tap.set_carrier(false);
  carrier_ = false;
  // The stall timer belongs to the session: an endpoint without one holds no fd for it.
  stall_timer_.close();
  log::notice(name(), ": frontend session ended (", why, ")");
}

void VhostUserPort::watch_stall() {
  if (!backend_->mid_message()) {
    disarm_stall();
    return;
  }
  // The bound is per message: more bytes of the same one do not restart it.
  if (stall_timer_.armed() && stall_message_ == backend_->messages_read()) return;
  auto armed = stall_timer_.arm(worker().message_timeout());
  if (!armed) {
    // Said once per session; later messages are not timed either.
    log::error(name(), ": a stalled front-end message cannot be timed: ", armed.error().message);
    return;
  }
  if (*armed) stall_message_ = backend_->messages_read();
}

void VhostUserPort::disarm_stall() { stall_timer_.disarm(); }

void VhostUserPort::on_stall_timer() {
  // Nothing expired: re-armed (or disarmed) since it fired, e.g. for a message that began in
  // the same wake-up; that one has its own deadline.
  if (stall_timer_.consume() == 0) return;
  if (!backend_ || !backend_->mid_message()) return;
  const std::string why =
      str("the front-end sent ", backend_->describe_partial_message(), " and not the rest within ",
          worker().message_timeout().count(), " s: disconnected");
  log::warning(name(), ": ", why);
  end_session(why);
}

void VhostUserPort::on_connection(uint32_t events) {
  if (!backend_) return;
  // Any message may stop a ring, replace the memory table or the dirty log, change the
  // features or the call/kick eventfds: no other worker serves a pair while one is handled.
  take_back_pairs();
  Result<vhost::Backend::Status> r = vhost::Backend::Status::kOpen;
  if (events & EPOLLOUT) r = backend_->on_writable();
  if (r && *r == vhost::Backend::Status::kOpen && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
    r = backend_->on_readable();
  }
  if (!r) {
    end_session(r.error().message);
    return;
  }
  if (*r == vhost::Backend::Status::kClosed) {
    end_session("the frontend closed the connection");
    return;
  }
  // After the whole batch: a ring that a message stopped and a later one restarted (a
  // memory table change, SET_VRING_ADDR) keeps its TAP queue.
  detach_idle_tap_queues();
  watch_stall();
  // While a reply waits for room the session reads nothing, so it must not watch EPOLLIN:
  // requests the front-end queued behind it would wake this worker in a loop.
  conn_.set(backend_->wants_write() ? EPOLLOUT : EPOLLIN);
  state_dirty_ = true;
  // The batch is done: pairs whose rings both run go back to their workers.
  lend_pairs();
}

/// Pair p's TAP queue: attached while a ring of the pair runs (queue 0 always), readable
/// while RX runs and has buffers, writable while TX waits for room. Carrier follows pair 0.
void VhostUserPort::update_tap(uint32_t p) {
  Pair& pair = pairs_[p];
  if (p == 0) {
    const bool pair_running = pair.rx_running && pair.tx_running;
    if (pair_running != carrier_) {
      (void)pair.tap.set_carrier(pair_running);
      carrier_ = pair_running;
    }
  }
  const bool in_use = p == 0 || pair.rx_running || pair.tx_running;
  pair.detach_due = !in_use && pair.attached;
  if (in_use && !pair.attached) {
    // Attaching is cheap; detaching waits for the kernel (synchronize_net), so it is left
    // to detach_idle_tap_queues().
    if (auto ok = set_tap_queue_attached(pair.tap, true); !ok) {
      log::error(name(), ": queue pair ", p, " cannot use its TAP queue: ", ok.error().message);
    } else {
      pair.attached = true;
    }
  }
  uint32_t events = 0;
  // A detached queue polls as EPOLLERR: never watch one.
  if (pair.attached && pair.rx_running && !pair.rx_paused) events |= EPOLLIN;
  if (pair.attached && pair.tx_running && pair.tx_blocked) events |= EPOLLOUT;
  pair.tap_interest.set(events);
}

/// Detaches the TAP queues of pairs where no ring runs any more (not queue 0). Frames the
/// kernel had queued there are dropped by the kernel.
void VhostUserPort::detach_idle_tap_queues() {
  for (uint32_t p = 1; p < pairs(); ++p) {
    Pair& pair = pairs_[p];
    if (!pair.detach_due) continue;
    pair.detach_due = false;
    if (!pair.attached || pair.rx_running || pair.tx_running) continue;
    if (auto ok = set_tap_queue_attached(pair.tap, false); !ok) {
      log::warning(name(), ": TAP queue ", p, " stays attached: ", ok.error().message);
      continue;
    }
    pair.attached = false;
  }
}

void VhostUserPort::on_kick(uint16_t queue) {
  if (!backend_ || queue >= num_queues()) return;
  const uint32_t p = queue / 2u;
  Pair& pair = pairs_[p];
  if (pair.lent) return;  // an event of this batch from before the pair was lent
  if (!(is_rx(queue) ? pair.rx_running : pair.tx_running || pair.tx_discarding)) return;
  dataplane::consume_kick(backend_->vring(queue).kick.get(), local_);
  if (!is_rx(queue)) {
    run_tx(p);
    return;
  }
  if (pair.rx_paused) {
    pair.rx_paused = false;
    update_tap(p);
  }
  run_rx(p);
}

void VhostUserPort::on_tap(uint16_t p, uint32_t events) {
  if (p >= pairs()) return;
  Pair& pair = pairs_[p];
  if (pair.lent) return;
  if ((events & EPOLLOUT) && pair.tx_blocked) {
    pair.tx_blocked = false;
    update_tap(p);
    run_tx(p);
  }
  if (events & EPOLLIN) run_rx(p);
}

void VhostUserPort::continue_pending() {
  for (uint32_t p = 0; p < pairs(); ++p) {
    if (pairs_[p].lent) continue;
    if (pairs_[p].tx_pending) run_tx(p);
    if (pairs_[p].rx_pending) run_rx(p);
  }
}

void VhostUserPort::start_tx_uring(uint32_t p) {
  Pair& pair = pairs_[p];
  if (!io_uring_ || pair.tx_uring || pair.uring_failed) return;
  auto ring = dataplane::TxUring::create(pair.tap.fd());
  if (!ring) {
    pair.uring_failed = true;
    log::warning(name(), ": transmit queue ", p, ": io_uring unavailable (", ring.error().message,
                 "): using the writev path");
    return;
  }
  pair.tx_uring = std::move(*ring);
  pair.uring_interest =
      Interest(epoll(), pair.tx_uring->fd(), tag(EventKind::kUring, static_cast<uint16_t>(p)));
}

void VhostUserPort::publish_queue_counts(PortStatus& status) {
  for (uint32_t p = 0; p < pairs(); ++p) {
    if (pairs_[p].counts != dataplane::QueueCounts{}) status.add_queue_counts(p, pairs_[p].counts);
  }
}

void VhostUserPort::drain_tx_uring(uint32_t p) {
  Pair& pair = pairs_[p];
  if (!pair.tx_uring) return;
  const ShareCounts share(local_, pair.counts);
  if (!pair.tx_uring->idle()) {
    vhost::Vring& v = backend_->vring(2 * p + 1);
    std::visit([&](auto& q) { dataplane::drain_tx_uring(q, *pair.tx_uring, v.call.get(), local_); },
               v.queue);
  }
  pair.uring_interest.set(0);
}

void VhostUserPort::on_uring(uint16_t p) {
  if (!backend_ || p >= pairs() || pairs_[p].lent) return;
  run_tx(p);
}

void VhostUserPort::run_tx(uint32_t p) {
  Pair& pair = pairs_[p];
  if (!pair.tx_running && !pair.tx_discarding) return;
  vhost::Vring& v = backend_->vring(2 * p + 1);
  pair.tx_pending = false;
  const ShareCounts share(local_, pair.counts);
  dataplane::TxUring* uring = pair.tx_discarding ? nullptr : pair.tx_uring.get();
  // tx-rate=: refilled once per pass; a disabled ring discards without a limit.
  dataplane::TxBucket* bucket = nullptr;
  if (tx_bucket_.limited() && !pair.tx_discarding) {
    tx_bucket_.refill(monotonic_ns());
    bucket = &tx_bucket_;
  }
  // A write the kernel parked completes later: watch the ring's fd until it has.
  const WatchCompletions watch(pair.uring_interest, uring);
  for (int round = 0; round < kRoundsPerWake; ++round) {
    const dataplane::ForwardResult r = tx_pass(v, pair.tap.fd(), pair.tx_discarding, uring,
                                               session_, worker().scratch(), local_, bucket);
    if (r.status == dataplane::ForwardStatus::kBudget) continue;
    if (r.status == dataplane::ForwardStatus::kTapFull) {
      pair.tx_blocked = true;
      update_tap(p);
    }
    if (r.status == dataplane::ForwardStatus::kThrottled) throttle_tx(p);
    if (r.status == dataplane::ForwardStatus::kQueueStopped) state_dirty_ = true;
    return;
  }
  pair.tx_pending = true;
  mark_pending();
}

void VhostUserPort::run_rx(uint32_t p) {
  Pair& pair = pairs_[p];
  if (!pair.rx_running) return;
  vhost::Vring& v = backend_->vring(2 * p);
  pair.rx_pending = false;
  const ShareCounts share(local_, pair.counts);
  for (int round = 0; round < kRoundsPerWake; ++round) {
    const dataplane::ForwardResult r =
        rx_pass(v, pair.tap.fd(), session_, worker().scratch(), local_, &pair.rx_hold);
    if (r.status == dataplane::ForwardStatus::kBudget) continue;
    if (r.status == dataplane::ForwardStatus::kNoBuffers) {
      pair.rx_paused = true;  // until the guest kicks with new buffers
      update_tap(p);
    }
    if (r.status == dataplane::ForwardStatus::kQueueStopped) state_dirty_ = true;
    return;
  }
  pair.rx_pending = true;
  mark_pending();
}

void VhostUserPort::apply_tx_rate() {
  const control::Rate& rate = config_.tx_rate;
  tx_bucket_.configure(rate.bits / 8, rate.packets, monotonic_ns());
  if (tx_bucket_.limited()) {
    if (auto opened = tx_timer_.open(); !opened) {
      // Without a timer a throttled ring would never resume: run without the limit.
      log::error(name(), ": tx-rate=", control::rate_text(rate),
                 " not applied: ", opened.error().message);
      tx_bucket_.configure(0, 0, 0);
    }
  }
  // A new bucket starts full (or there is none): whatever it held back may go now.
  if (tx_timer_.armed()) {
    tx_timer_.disarm();
    local_.tx_throttled_us += (monotonic_ns() - throttled_since_ns_) / 1000;
  }
  resume_throttled_tx();
}

void VhostUserPort::throttle_tx(uint32_t p) {
  Pair& pair = pairs_[p];
  if (!pair.tx_throttled) {
    pair.tx_throttled = true;
    ++local_.tx_throttled;
  }
  if (tx_timer_.armed()) return;
  // The timer exists: apply_tx_rate() runs without a limit when it cannot be created.
  if (tx_timer_.arm(std::chrono::nanoseconds(tx_bucket_.refill_wait_ns())).value_or(false)) {
    throttled_since_ns_ = monotonic_ns();
  }
}

void VhostUserPort::on_tx_rate_timer() {
  // Nothing expired: disarmed by a new tx-rate= after it fired.
  if (tx_timer_.consume() == 0) return;
  local_.tx_throttled_us += (monotonic_ns() - throttled_since_ns_) / 1000;
  resume_throttled_tx();
}

void VhostUserPort::resume_throttled_tx() {
  for (uint32_t p = 0; p < pairs(); ++p) {
    if (!pairs_[p].tx_throttled) continue;
    pairs_[p].tx_throttled = false;
    if (backend_) run_tx(p);
  }
}

// Lending pairs to other workers -----------------------------------------------------------

bool VhostUserPort::lendable(uint32_t p) const {
  const Pair& pair = pairs_[p];
  if (p == 0 || pair.lent || !backend_ || acked_ == 0) return false;
  if (!pair.rx_running || !pair.tx_running || pair.tx_discarding || !pair.attached) return false;
  // One bucket for the endpoint (this worker's); priority= raises only this worker's thread.
  if (tx_bucket_.limited() || config_.priority != 0) return false;
  for (const uint32_t q : {2 * p, 2 * p + 1}) {
    const auto reason = std::visit([](const auto& queue) { return queue.broken_reason(); },
                                   backend_->vring(q).queue);
    if (reason != virtio::BrokenReason::kNone) return false;
  }
  return true;
}

void VhostUserPort::lend_pairs() {
  const auto peers = worker().peers();
  if (peers.size() < 2) return;
  for (uint32_t p = 1; p < pairs(); ++p) {
    Worker* target = peers[(worker().index() + p) % peers.size()];
    if (target == &worker() || !lendable(p)) continue;
    Pair& pair = pairs_[p];
    // This worker lets go of every fd of the pair before the remote watches them.
    pair.rx_kick.clear();
    pair.tx_kick.clear();
    pair.tap_interest.clear();
    pair.uring_interest.clear();
    LentPair lent;
    lent.pair = p;
    lent.tap_fd = pair.tap.fd();
    lent.rx = &backend_->vring(2 * p);
    lent.tx = &backend_->vring(2 * p + 1);
    lent.session = session_;
    lent.uring = pair.tx_uring.get();
    lent.hold = &pair.rx_hold;
    lent.tx_blocked = pair.tx_blocked;
    lent.rx_paused = pair.rx_paused;
    lent.tx_pending = pair.tx_pending;
    lent.rx_pending = pair.rx_pending;
    pair.tx_pending = pair.rx_pending = false;
    if (!pair.runner) pair.runner = std::make_unique<QueueRunner>(worker(), id(), status());
    pair.lent = true;
    pair.runner->lend(*target, lent);
    state_dirty_ = true;
  }
}

void VhostUserPort::take_back(uint32_t p) {
  Pair& pair = pairs_[p];
  if (!pair.lent) return;
  const LentPair back = pair.runner->take_back();
  pair.lent = false;
  pair.tx_blocked = back.tx_blocked;
  pair.rx_paused = back.rx_paused;
  pair.tx_pending = back.tx_pending;
  pair.rx_pending = back.rx_pending;
  // Served here again: its kicks, its TAP queue and its io_uring in this worker's epoll.
  pair.rx_kick.set(EPOLLIN);
  pair.tx_kick.set(EPOLLIN);
  if (pair.tx_uring)
    pair.uring_interest.set(pair.tx_uring->in_flight() > 0 ? uint32_t{EPOLLIN} : 0u);
  update_tap(p);
  if (pair.tx_pending || pair.rx_pending) mark_pending();
  state_dirty_ = true;
}

void VhostUserPort::take_back_pairs() {
  for (uint32_t p = 1; p < pairs(); ++p) take_back(p);
}

void VhostUserPort::on_runner_stopped(uint16_t p) {
  if (p >= pairs() || !pairs_[p].lent) return;
  take_back(p);
  lend_pairs();  // not the broken pair: lendable() says no
}

}  // namespace vp::daemon
