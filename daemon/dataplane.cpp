#include "daemon/dataplane.hpp"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <variant>

#include "dataplane/forward.hpp"
#include "dataplane/net_header.hpp"
#include "net/offloads.hpp"
#include "stream/codec.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"
#include "sys/unix_socket.hpp"
#include "vhost/backend.hpp"
#include "virtio/queue.hpp"

namespace vp::daemon {

namespace {

// Named event ids (STYLE.md item 8): one epoll tag = port id, kind and queue index (kKick:
// the virtqueue; kTap: the queue pair, which is also the TAP queue).
enum class EventKind : uint8_t { kWake = 1, kListener, kConnection, kTap, kKick, kRedial };

constexpr uint64_t tag(uint32_t port, EventKind kind, uint16_t queue = 0) {
  return uint64_t{port} << 32 | uint64_t{static_cast<uint8_t>(kind)} << 16 | queue;
}

// virtio-net feature bits the device side offers besides the offloads (virtio 1.2 §5.1.3).
constexpr uint64_t kNetFMtu = 1ull << 3;
constexpr uint64_t kNetFMac = 1ull << 5;
constexpr uint64_t kNetFStatus = 1ull << 16;
constexpr uint64_t kNetFMq = 1ull << 22;
constexpr uint64_t kFAnyLayout = 1ull << 27;
constexpr uint64_t kGsoFeatures = net::feature::kGuestTso4 | net::feature::kGuestTso6 |
                                  net::feature::kGuestUfo | net::feature::kGuestUso4 |
                                  net::feature::kGuestUso6;
// Rounds of a busy queue served per wake-up before other endpoints get their turn.
constexpr int kRoundsPerWake = 16;

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

/// The frontend (peer=) is not there (yet): arms `timer` to try again, backing off from
/// 100 ms to 5 s.
void arm_redial(int timer, int& backoff_ms) {
  backoff_ms = backoff_ms == 0 ? 100 : std::min(backoff_ms * 2, 5000);
  itimerspec t{};
  t.it_value.tv_sec = backoff_ms / 1000;
  t.it_value.tv_nsec = static_cast<long>(backoff_ms % 1000) * 1'000'000;
  ::timerfd_settime(timer, 0, &t, nullptr);
}

/// allow=: true if the peer on a bind socket may be served; otherwise logs and counts it.
bool admit(const std::string& name, const control::EndpointConfig& config,
           const PeerCredentials& peer, uint64_t& refused) {
  if (control::peer_allowed(config.allow, peer.uid, peer.gid)) return true;
  ++refused;
  log::warning(name, ": refused a frontend on ", config.bind, " (uid ", peer.uid, " gid ", peer.gid,
               " pid ", peer.pid, "): not in allow=");
  return false;
}

struct Shared {
  /// Guards `view` (its counters excepted) and `active`: changed on session events only.
  mutable std::mutex mutex;
  SessionView view;
  bool active = false;
  /// The data path's counters, in kNetCounterFields order. One writer, the worker, which adds
  /// its local counts once per wake-up without a lock (STYLE: no locks on the packet path).
  std::array<std::atomic<uint64_t>, std::size(dataplane::kNetCounterFields)> counters{};

  /// Worker thread: adds `local` and clears it.
  void add_counters(dataplane::NetCounters& local) noexcept {
    for (size_t i = 0; i < counters.size(); ++i) {
      const uint64_t v = local.*dataplane::kNetCounterFields[i].member;
      if (v != 0)
        counters[i].store(counters[i].load(std::memory_order_relaxed) + v,
                          std::memory_order_relaxed);
    }
    local = {};
  }
  dataplane::NetCounters read_counters() const noexcept {
    dataplane::NetCounters c;
    for (size_t i = 0; i < counters.size(); ++i) {
      c.*dataplane::kNetCounterFields[i].member = counters[i].load(std::memory_order_relaxed);
    }
    return c;
  }
};

}  // namespace

/// What a worker owns for one endpoint: the vhost-user Port or the StreamPort. The worker
/// dispatches its events here (one virtual call per event, none per packet).
class Attachment {
 public:
  explicit Attachment(int epoll) : epoll_(epoll) {}
  virtual ~Attachment() = default;
  Attachment(const Attachment&) = delete;
  Attachment& operator=(const Attachment&) = delete;

  virtual const std::string& name() const = 0;
  virtual int priority() const = 0;
  virtual void set_priority(int priority) = 0;
  virtual void on_event(EventKind kind, uint16_t queue, uint32_t events) = 0;
  /// Carries on with work a previous round left for later (budget used up).
  virtual void continue_work() = 0;

 protected:
  void add_fd(int fd, uint64_t t, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = t;
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
  }
  void mod_fd(int fd, uint64_t t, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = t;
    ::epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &ev);
  }
  void del_fd(int fd) { ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr); }

  // The front-end's side, the same for every transport: the bind= socket vpd listens on and
  // the peer= socket it dials (with a backoff timer while the VMM is absent).

  /// Watches `listener` (bind=, may be invalid) and, with peer=, arms the redial timer.
  void open_frontend_sockets(uint32_t id, const control::EndpointConfig& c, Fd listener) {
    listener_ = std::move(listener);
    if (listener_) add_fd(listener_.get(), tag(id, EventKind::kListener), EPOLLIN);
    if (!c.peer.empty()) {
      redial_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
      add_fd(redial_.get(), tag(id, EventKind::kRedial), EPOLLIN);
    }
  }
  void close_frontend_sockets() {
    if (listener_) del_fd(listener_.get());
    if (redial_) del_fd(redial_.get());
  }
  /// Accepts every connection waiting on the bind socket: `start(conn)` for one that may be
  /// served, the others refused and logged (one session at a time; allow=). True if allow=
  /// refused one (the view's refused_peers changed).
  template <class Start>
  bool accept_frontends(const control::EndpointConfig& c, std::string_view what, bool busy,
                        Start start) {
    bool refused = false;
    for (;;) {
      Fd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!conn) return refused;
      const auto peer = peer_credentials(conn.get());
      if (busy) {
        log::warning(c.name, ": refused a second frontend on ", c.bind, " (pid ", peer.pid,
                     "); one is connected");
        continue;
      }
      if (!admit(c.name, c, peer, refused_peers_)) {
        refused = true;
        continue;
      }
      log::notice(c.name, ": ", what, " connected on ", c.bind, " (uid ", peer.uid, " pid ",
                  peer.pid, ")");
      busy = true;
      start(std::move(conn));
    }
  }
  /// Dials peer=: `start(conn)` when the VMM answers, else the redial timer is armed.
  template <class Start>
  void dial_frontend(const control::EndpointConfig& c, std::string_view what, Start start) {
    auto fd = connect_unix(c.peer);
    if (!fd) {
      arm_redial(redial_.get(), backoff_ms_);
      return;
    }
    backoff_ms_ = 0;
    ::fcntl(fd->get(), F_SETFL, ::fcntl(fd->get(), F_GETFL) | O_NONBLOCK);
    log::notice(c.name, ": connected to ", what, " at ", c.peer);
    start(std::move(*fd));
  }

  Fd listener_;
  Fd redial_;
  int backoff_ms_ = 0;
  uint64_t refused_peers_ = 0;  // allow= turned them away

 private:
  int epoll_;
};

/// One data-path thread: an epoll, a command queue, and the endpoints it owns.
class Worker {
 public:
  explicit Worker(unsigned index);
  ~Worker();

  /// Runs `fn` on the worker thread and waits for it.
  void call(std::function<void()> fn);

  int epoll() const { return epoll_.get(); }
  dataplane::NetScratch& scratch() { return scratch_; }
  void mark_pending(Attachment* port) { pending_.push_back(port); }
  void add(uint32_t id, std::unique_ptr<Attachment> port);
  void remove(const std::string& name);
  /// Sets this thread's scheduling from its endpoints' priority= (worker thread only).
  void apply_priority();
  std::shared_ptr<Shared> shared_of(const std::string& name) const;
  bool serves(const std::string& name) const;

 private:
  void run();
  void run_commands();

  unsigned index_;
  Fd epoll_;
  Fd wake_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex commands_mutex_;
  std::deque<std::function<void()>> commands_;
  dataplane::NetScratch scratch_;
  // Worker thread only.
  uint32_t next_id_ = 1;
  int priority_ = 0;
  std::map<uint32_t, Attachment*> by_id_;
  std::map<std::string, std::unique_ptr<Attachment>> ports_;
  std::vector<Attachment*> pending_;
  // Shared with the control thread.
  mutable std::mutex shared_mutex_;
  std::map<std::string, std::shared_ptr<Shared>> shared_;
  friend class Port;
  friend class StreamPort;
  friend class Dataplane;
};

/// One endpoint on its worker: the vhost-user device policy and the forwarding loop.
///
/// Queue pair p is receiveq p (virtqueue 2p), transmitq p (2p+1) and TAP queue p; each pair
/// forwards only between its own rings and its own TAP queue, and all of them run on this
/// worker. TAP queue 0 is the registry's (a dup) and always stays attached: the TAP's
/// device-wide settings (offloads, header size, carrier) go through it. Queues 1..N-1 are
/// attached to the TAP only while a ring of their pair runs, so that the kernel never steers
/// a flow to a queue nobody reads: a pair the guest did not enable supplies no RX and loses
/// nothing.
class Port final : public Attachment, public vhost::Device {
 public:
  Port(Worker& worker, uint32_t id, control::EndpointConfig config, std::vector<net::Tap> taps,
       Fd listener, std::shared_ptr<Shared> shared)
      : Attachment(worker.epoll()),
        worker_(worker),
        id_(id),
        config_(std::move(config)),
        shared_(std::move(shared)) {
    pairs_.resize(taps.size());  // sized once: the worker's tags index it
    for (size_t p = 0; p < taps.size(); ++p) pairs_[p].tap = std::move(taps[p]);
    // No ring runs yet: queues 1..N-1 leave the kernel's queue selection until one does.
    for (uint32_t p = 1; p < pairs(); ++p) pairs_[p].detach_due = true;
    detach_idle_tap_queues();
    build_config_space();
    open_frontend_sockets(id_, config_, std::move(listener));
    if (redial_) dial();
    state_dirty_ = true;
    publish();
  }

  ~Port() override {
    end_session("endpoint detached");
    close_frontend_sockets();
  }

  const std::string& name() const override { return config_.name; }
  int priority() const override { return config_.priority; }
  void set_priority(int priority) override { config_.priority = priority; }

  void on_event(EventKind kind, uint16_t queue, uint32_t events) override {
    switch (kind) {
      case EventKind::kListener:
        accept_frontend();
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
      case EventKind::kRedial: {
        uint64_t expirations = 0;
        (void)!::read(redial_.get(), &expirations, sizeof expirations);
        if (!backend_) dial();
        break;
      }
      case EventKind::kWake:
        break;
    }
    publish();
  }

  void continue_work() override {
    pending_marked_ = false;
    for (uint32_t p = 0; p < pairs(); ++p) {
      if (pairs_[p].tx_pending) run_tx(p);
      if (pairs_[p].rx_pending) run_rx(p);
    }
    publish();
  }

  // vhost::Device ---------------------------------------------------------------------------
  uint64_t features() const override {
    uint64_t f = config_.features() | virtio::kFeatureEventIdx | virtio::kFeatureIndirectDesc |
                 virtio::kFeatureRingPacked | kNetFMtu | kNetFMac | kNetFStatus | kFAnyLayout;
    // `legacy`: a VIRTIO 0.9.5 peer without MRG_RXBUF, so the 10-byte header.
    if (!config_.legacy) f |= virtio::kFeatureVersion1 | dataplane::kFeatureMrgRxbuf;
    // SPEC: virtio 1.2 §5.1.3: MQ says max_virtqueue_pairs is valid. The driver also needs
    // CTRL_VQ to use it; the VMM serves the control queue and tells vpd which pairs it
    // enabled (SET_VRING_ENABLE).
    if (pairs() > 1) f |= kNetFMq;
    return f;
  }
  uint64_t protocol_features() const override {
    using vhost::ProtocolFeature;
    // CONFIG: GET_CONFIG reads the virtio-net config space (mac, status, max_virtqueue_pairs,
    // mtu) for front-ends that ask the device (crosvm, DPDK virtio-user); QEMU's net device
    // does not ack it and uses its own.
    uint64_t f = vhost::bit(ProtocolFeature::kMq) | vhost::bit(ProtocolFeature::kRarp) |
                 vhost::bit(ProtocolFeature::kReplyAck) | vhost::bit(ProtocolFeature::kNetMtu) |
                 vhost::bit(ProtocolFeature::kStatus) | vhost::bit(ProtocolFeature::kConfig);
    // QEMU before 8.0 sends ADD_MEM_REG/REM_MEM_REG once per queue pair (its vhost_dev per
    // pair; later versions send them once, like SET_MEM_TABLE). The engine refuses the second
    // copy of a region as an overlap, and QEMU then gives up vhost for the NIC. With several
    // pairs vpd therefore offers only SET_MEM_TABLE, which every QEMU sends once.
    if (pairs() == 1) f |= vhost::bit(ProtocolFeature::kConfigureMemSlots);
    return f;
  }
  uint32_t num_queues() const override { return 2 * pairs(); }

  Result<void> on_features(uint64_t acked) override {
    dataplane::NetSession s = dataplane::make_net_session(acked);
    if (!(acked & kGsoFeatures)) s.max_rx_frame = config_.mtu + 18;  // Ethernet + VLAN tag
    s.lock_mac = config_.lock_mac;
    s.guest_mac = config_guest_mac_.bytes;
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

  std::span<const std::byte> config() const override { return config_space_; }

  void on_queue_started(uint32_t index) override {
    if (index >= num_queues()) return;
    vhost::Vring& v = backend_->vring(index);
    const uint32_t p = index / 2;
    Pair& pair = pairs_[p];
    if (!v.enabled) {
      // SPEC: vhost-user.rst "Ring states": a started but disabled ring supplies no RX and
      // processes and discards TX. The pair's TAP queue takes no part meanwhile.
      if (is_rx(index)) return;
      add_fd(v.kick.get(), tag(id_, EventKind::kKick, static_cast<uint16_t>(index)), EPOLLIN);
      pair.tx_discarding = true;
      run_tx(p);
      return;
    }
    add_fd(v.kick.get(), tag(id_, EventKind::kKick, static_cast<uint16_t>(index)), EPOLLIN);
    (is_rx(index) ? pair.rx_running : pair.tx_running) = true;
    state_dirty_ = true;
    update_tap(p);
    if (is_rx(index)) {
      run_rx(p);
    } else {
      run_tx(p);
    }
  }

  void on_queue_stopped(uint32_t index) override {
    if (index >= num_queues()) return;
    const uint32_t p = index / 2;
    Pair& pair = pairs_[p];
    if (!is_rx(index) && pair.tx_discarding) {
      del_fd(backend_->vring(index).kick.get());
      pair.tx_discarding = pair.tx_pending = false;
      return;
    }
    bool& running = is_rx(index) ? pair.rx_running : pair.tx_running;
    if (!running) return;
    del_fd(backend_->vring(index).kick.get());
    running = false;
    if (is_rx(index)) {
      pair.rx_pending = pair.rx_paused = false;
      pair.rx_hold.len = 0;  // a frame for a ring that stopped: its guest may never take it
    } else {
      pair.tx_pending = pair.tx_blocked = false;
    }
    state_dirty_ = true;
    update_tap(p);
  }

  Result<void> on_mtu(uint32_t mtu) override {
    if (mtu != config_.mtu) {
      return fail("vhost-refused", str(name(), ": the guest asked for MTU ", mtu, "; vp0's is ",
                                       config_.mtu, " (set it with vpctl ", name(), " mtu=N)"));
    }
    return {};
  }
  void on_rarp(const uint8_t (&mac)[6]) override {
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
  void on_status(uint8_t) override {}

  void publish() {
    shared_->add_counters(local_);
    if (!state_dirty_) return;
    state_dirty_ = false;
    std::lock_guard lock(shared_->mutex);
    SessionView& v = shared_->view;
    v.state = backend_ ? "connected" : listener_ ? "listening" : redial_ ? "dialing" : "stopped";
    v.socket = !config_.bind.empty() ? config_.bind : config_.peer;
    v.features = backend_ ? acked_ : 0;
    v.packed = backend_ && (acked_ & virtio::kFeatureRingPacked);
    v.queues = num_queues();
    v.queues_running = 0;
    for (const Pair& pair : pairs_) v.queues_running += pair.rx_running + pair.tx_running;
    v.hdr_len = backend_ && acked_ ? session_.hdr_len : 0;
    v.tun_offloads = tun_offloads_;
    v.sessions = sessions_;
    v.refused_peers = refused_peers_;
    if (backend_) v.refused_messages = backend_->counters().requests_refused;
    v.broken_queues.clear();
    if (backend_) {
      for (uint32_t q = 0; q < num_queues(); ++q) {
        const auto reason = std::visit([](const auto& queue) { return queue.broken_reason(); },
                                       backend_->vring(q).queue);
        if (reason != virtio::BrokenReason::kNone) {
          v.broken_queues.push_back(
              str(is_rx(q) ? "rx" : "tx", q / 2, ": ", virtio::describe(reason)));
        }
      }
    }
    shared_->active = backend_ && acked_ != 0;
  }

 private:
  /// One queue pair and its TAP queue. Worker thread only.
  struct Pair {
    net::Tap tap;
    bool rx_running = false;  // receiveq p (device → driver) is started
    bool tx_running = false;  // transmitq p (driver → device) is started
    bool attached = true;     // the TAP queue takes part in the kernel's queue selection
    bool detach_due = false;  // no ring runs: detach once the current batch of messages is done
    bool tx_blocked = false;  // the TAP queue said EAGAIN: waiting for EPOLLOUT
    bool rx_paused = false;   // the guest had no RX buffer: waiting for its kick
    bool tx_pending = false;  // budget used up: continue_work() carries on
    bool rx_pending = false;
    uint32_t tap_events = 0;  // epoll interest registered for the TAP queue

    // transmitq p is started but disabled (SET_VRING_ENABLE 0): its chains are discarded.
    bool tx_discarding = false;
    // A frame read while the guest was refilling receiveq p, until it posts enough.
    dataplane::RxHold rx_hold;
  };

  // SPEC: virtio 1.2 §5.1.2: receiveqN is virtqueue 2(N-1), transmitqN is 2(N-1)+1.
  static constexpr bool is_rx(uint32_t index) { return index % 2 == 0; }
  uint32_t pairs() const { return static_cast<uint32_t>(pairs_.size()); }

  void build_config_space() {
    // SPEC: virtio 1.2 §5.1.4 struct virtio_net_config: mac[6], status, max_virtqueue_pairs,
    // mtu (little endian).
    const net::Mac mac = config_guest_mac_;
    for (size_t i = 0; i < 6; ++i) config_space_[i] = std::byte{mac.bytes[i]};
    config_space_[6] = std::byte{1};  // VIRTIO_NET_S_LINK_UP
    config_space_[8] = std::byte{static_cast<uint8_t>(pairs() & 0xff)};
    config_space_[9] = std::byte{static_cast<uint8_t>(pairs() >> 8)};
    config_space_[10] = std::byte{static_cast<uint8_t>(config_.mtu & 0xff)};
    config_space_[11] = std::byte{static_cast<uint8_t>(config_.mtu >> 8)};
  }

  void accept_frontend() {
    if (accept_frontends(config_, "frontend", backend_ != nullptr,
                         [&](Fd conn) { start_session(std::move(conn)); })) {
      state_dirty_ = true;
    }
  }

  void dial() {
    dial_frontend(config_, "frontend", [&](Fd conn) { start_session(std::move(conn)); });
  }

  void start_session(Fd conn) {
    backend_ = std::make_unique<vhost::Backend>(*this, std::move(conn), config_.name);
    add_fd(backend_->fd(), tag(id_, EventKind::kConnection), EPOLLIN);
    ++sessions_;
    acked_ = 0;
    state_dirty_ = true;
  }

  void end_session(std::string_view why) {
    if (!backend_) return;
    const int fd = backend_->fd();
    del_fd(fd);
    // Stop the rings (on_queue_stopped() for each) while backend_ still points at the
    // session: unique_ptr::reset() clears the pointer before the destructor runs.
    backend_->close();
    backend_.reset();
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
    log::notice(name(), ": frontend session ended (", why, ")");
    state_dirty_ = true;
    if (redial_) dial();
  }

  void on_connection(uint32_t events) {
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
    // While a reply waits for room the session reads nothing, so it must not watch EPOLLIN:
    // requests the front-end queued behind it would wake this worker in a loop.
    const uint32_t interest = backend_->wants_write() ? EPOLLOUT : EPOLLIN;
    mod_fd(backend_->fd(), tag(id_, EventKind::kConnection), interest);
    state_dirty_ = true;
  }

  /// Pair p's TAP queue: attached while a ring of the pair runs (queue 0 always), readable
  /// while RX runs and has buffers, writable while TX waits for room. Carrier follows pair 0.
  void update_tap(uint32_t p) {
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
    if (events == pair.tap_events) return;
    const uint64_t t = tag(id_, EventKind::kTap, static_cast<uint16_t>(p));
    if (pair.tap_events == 0) {
      add_fd(pair.tap.fd(), t, events);
    } else if (events == 0) {
      del_fd(pair.tap.fd());
    } else {
      mod_fd(pair.tap.fd(), t, events);
    }
    pair.tap_events = events;
  }

  /// Detaches the TAP queues of pairs where no ring runs any more (not queue 0). Frames the
  /// kernel had queued there are dropped by the kernel.
  void detach_idle_tap_queues() {
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

  void on_kick(uint16_t queue) {
    if (queue >= num_queues()) return;
    const uint32_t p = queue / 2u;
    Pair& pair = pairs_[p];
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

  void on_tap(uint16_t p, uint32_t events) {
    if (p >= pairs()) return;
    Pair& pair = pairs_[p];
    if ((events & EPOLLOUT) && pair.tx_blocked) {
      pair.tx_blocked = false;
      update_tap(p);
      run_tx(p);
    }
    if (events & EPOLLIN) run_rx(p);
  }

  void mark_pending() {
    if (pending_marked_) return;
    pending_marked_ = true;
    worker_.mark_pending(this);
  }

  void run_tx(uint32_t p) {
    Pair& pair = pairs_[p];
    if (!pair.tx_running && !pair.tx_discarding) return;
    vhost::Vring& v = backend_->vring(2 * p + 1);
    pair.tx_pending = false;
    for (int round = 0; round < kRoundsPerWake; ++round) {
      const dataplane::ForwardResult r = std::visit(
          [&](auto& q) {
            return pair.tx_discarding
                       ? dataplane::discard_tx(q, v.call.get(), session_, worker_.scratch(), local_)
                       : dataplane::forward_tx(q, pair.tap.fd(), v.call.get(), session_,
                                               worker_.scratch(), local_);
          },
          v.queue);
      if (r.status == dataplane::ForwardStatus::kBudget) continue;
      if (r.status == dataplane::ForwardStatus::kTapFull) {
        pair.tx_blocked = true;
        update_tap(p);
      }
      if (r.status == dataplane::ForwardStatus::kQueueStopped) state_dirty_ = true;
      return;
    }
    pair.tx_pending = true;
    mark_pending();
  }

  void run_rx(uint32_t p) {
    Pair& pair = pairs_[p];
    if (!pair.rx_running) return;
    vhost::Vring& v = backend_->vring(2 * p);
    pair.rx_pending = false;
    for (int round = 0; round < kRoundsPerWake; ++round) {
      const dataplane::ForwardResult r = std::visit(
          [&](auto& q) {
            return dataplane::forward_rx(q, pair.tap.fd(), v.call.get(), session_,
                                         worker_.scratch(), local_, &pair.rx_hold);
          },
          v.queue);
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

  Worker& worker_;
  uint32_t id_;
  control::EndpointConfig config_;
  net::Mac config_guest_mac_ = guest_mac_for(config_);
  std::vector<Pair> pairs_;
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<vhost::Backend> backend_;
  std::array<std::byte, 12> config_space_{};
  dataplane::NetSession session_;
  dataplane::NetCounters local_;  // every pair adds here; published once per wake-up
  uint64_t acked_ = 0;
  unsigned tun_offloads_ = 0;
  uint64_t sessions_ = 0;
  bool carrier_ = false;
  bool pending_marked_ = false;
  bool state_dirty_ = false;

 public:
  static net::Mac guest_mac_for(const control::EndpointConfig& c);
};

net::Mac Port::guest_mac_for(const control::EndpointConfig& c) {
  return control::guest_mac_of(c, net::read_machine_id());
}

/// One transport=stream endpoint on its worker: QEMU's `-netdev stream` framing (4-byte
/// big-endian length + raw Ethernet frame) on one Unix socket, forwarded to and from the
/// endpoint's TAP queue. The TAP has no offloads (TUNSETOFFLOAD 0), so the kernel hands
/// complete frames; its vnet header is read and dropped towards the frontend and written as
/// zeros towards the TAP.
///
/// Buffering is bounded by construction: one reassembly buffer for the frame coming in and
/// one frame going out, both sized once for QEMU's largest frame. When the TAP says EAGAIN,
/// vpd stops reading the socket; when the frontend does not read, vpd stops reading the
/// TAP. Either way the other side's kernel queue holds the rest and the worker goes on
/// serving its other endpoints.
class StreamPort final : public Attachment {
 public:
  StreamPort(Worker& worker, uint32_t id, control::EndpointConfig config, net::Tap tap, Fd listener,
             std::shared_ptr<Shared> shared)
      : Attachment(worker.epoll()),
        worker_(worker),
        id_(id),
        config_(std::move(config)),
        tap_(std::move(tap)),
        shared_(std::move(shared)),
        in_(std::make_unique<stream::Reassembler>()),
        out_(std::make_unique<OutBuffer>()),
        hdr_len_(static_cast<size_t>(config_.vnet_hdr_len())) {
    // Whatever a previous transport left: the header size vpd reads and writes, no offloads
    // (there is no header on the wire to carry them), no carrier until a frontend connects.
    if (auto ok = tap_.set_vnet_hdr_size(config_.vnet_hdr_len()); !ok) {
      log::error(name(), ": ", ok.error().message);
    }
    if (auto ok = tap_.set_offload(0); !ok) log::error(name(), ": ", ok.error().message);
    (void)tap_.set_carrier(false);
    open_frontend_sockets(id_, config_, std::move(listener));
    if (redial_) dial();
    state_dirty_ = true;
    publish();
  }

  ~StreamPort() override {
    redial_after_end_ = false;
    end_session("endpoint detached");
    close_frontend_sockets();
  }

  const std::string& name() const override { return config_.name; }
  int priority() const override { return config_.priority; }
  void set_priority(int priority) override { config_.priority = priority; }

  void on_event(EventKind kind, uint16_t, uint32_t events) override {
    switch (kind) {
      case EventKind::kListener:
        accept_frontend();
        break;
      case EventKind::kConnection:
        on_connection(events);
        break;
      case EventKind::kTap:
        on_tap(events);
        break;
      case EventKind::kRedial: {
        uint64_t expirations = 0;
        (void)!::read(redial_.get(), &expirations, sizeof expirations);
        if (!conn_) dial();
        break;
      }
      case EventKind::kKick:
      case EventKind::kWake:
        break;
    }
    publish();
  }

  void continue_work() override {
    pending_marked_ = false;
    if (from_peer_pending_) from_peer();
    if (to_peer_pending_) to_peer();
    publish();
  }

 private:
  /// One framed frame on its way to the frontend: prefix + frame, and how much is sent.
  struct OutBuffer {
    std::array<std::byte, stream::kLengthSize + stream::kMaxFrame> bytes;
    size_t len = 0;
    size_t sent = 0;
  };

  void publish() {
    shared_->add_counters(local_);
    if (!state_dirty_) return;
    state_dirty_ = false;
    std::lock_guard lock(shared_->mutex);
    SessionView& v = shared_->view;
    v.state = conn_ ? "connected" : listener_ ? "listening" : redial_ ? "dialing" : "stopped";
    v.socket = !config_.bind.empty() ? config_.bind : config_.peer;
    v.sessions = sessions_;
    v.refused_peers = refused_peers_;
    v.tun_offloads = 0;
    shared_->active = false;  // no negotiation: the registry's settings stand
  }

  void accept_frontend() {
    if (accept_frontends(config_, "stream frontend", conn_.valid(),
                         [&](Fd conn) { start_session(std::move(conn)); })) {
      state_dirty_ = true;
    }
  }

  void dial() {
    dial_frontend(config_, "stream frontend", [&](Fd conn) { start_session(std::move(conn)); });
  }

  void start_session(Fd conn) {
    conn_ = std::move(conn);
    in_->clear();
    out_->len = out_->sent = 0;
    tap_blocked_ = peer_blocked_ = false;
    from_peer_pending_ = to_peer_pending_ = false;
    conn_events_ = tap_events_ = 0;
    conn_registered_ = false;
    ++sessions_;
    (void)tap_.set_carrier(true);
    state_dirty_ = true;
    update_interest();
    to_peer();  // frames already queued in the TAP
  }

  void end_session(std::string_view why) {
    if (!conn_) return;
    if (conn_registered_) del_fd(conn_.get());
    if (tap_events_) del_fd(tap_.fd());
    conn_events_ = tap_events_ = 0;
    conn_registered_ = false;
    conn_.reset();
    from_peer_pending_ = to_peer_pending_ = false;
    std::erase(worker_.pending_, this);
    pending_marked_ = false;
    (void)tap_.set_carrier(false);
    log::notice(name(), ": stream session ended (", why, ")");
    state_dirty_ = true;
    if (redial_ && redial_after_end_) dial();
  }

  /// Socket: readable unless the TAP is full, writable while a frame waits for room; it
  /// stays registered with an empty mask too, for EPOLLHUP. TAP: readable unless the
  /// frontend is full, writable while a frame waits for room.
  void update_interest() {
    if (!conn_) return;
    const uint32_t conn_events = (tap_blocked_ ? 0u : static_cast<uint32_t>(EPOLLIN)) |
                                 (peer_blocked_ ? static_cast<uint32_t>(EPOLLOUT) : 0u);
    const uint32_t tap_events = (peer_blocked_ ? 0u : static_cast<uint32_t>(EPOLLIN)) |
                                (tap_blocked_ ? static_cast<uint32_t>(EPOLLOUT) : 0u);
    const uint64_t ct = tag(id_, EventKind::kConnection);
    if (!conn_registered_) {
      add_fd(conn_.get(), ct, conn_events);
      conn_registered_ = true;
    } else if (conn_events != conn_events_) {
      mod_fd(conn_.get(), ct, conn_events);
    }
    conn_events_ = conn_events;
    if (tap_events == tap_events_) return;
    const uint64_t tt = tag(id_, EventKind::kTap);
    if (tap_events_ == 0) {
      add_fd(tap_.fd(), tt, tap_events);
    } else if (tap_events == 0) {
      del_fd(tap_.fd());
    } else {
      mod_fd(tap_.fd(), tt, tap_events);
    }
    tap_events_ = tap_events;
  }

  void mark_pending() {
    if (pending_marked_) return;
    pending_marked_ = true;
    worker_.mark_pending(this);
  }

  void on_connection(uint32_t events) {
    if ((events & EPOLLOUT) && peer_blocked_) {
      if (!flush_out()) return;
      if (!peer_blocked_) to_peer();
      if (!conn_) return;
    }
    if (events & EPOLLIN) {
      from_peer();
      return;
    }
    if (events & (EPOLLHUP | EPOLLERR)) {
      // Gone while vpd was not reading (the TAP is full): what it sent cannot be delivered.
      if (in_->pending()) ++local_.stream_truncated;
      end_session("the frontend closed the connection");
    }
  }

  void on_tap(uint32_t events) {
    if (!conn_) return;
    if ((events & EPOLLOUT) && tap_blocked_) {
      tap_blocked_ = false;
      update_interest();
      from_peer();
      if (!conn_) return;
    }
    if (events & EPOLLIN) to_peer();
  }

  /// Frontend → TAP: whole frames out of the reassembly buffer, then more from the socket.
  void from_peer() {
    from_peer_pending_ = false;
    for (int round = 0; round < kRoundsPerWake; ++round) {
      for (;;) {
        const stream::Decoded d = in_->next();
        if (d.status == stream::Decode::kNeedMore) break;
        if (d.status == stream::Decode::kBadLength) {
          ++local_.stream_bad_length;
          if (d.length != 0) ++local_.tx_dropped_too_long;
          log::warning(name(), ": the stream frontend sent a frame length of ", d.length,
                       " (allowed: 1-", stream::kMaxFrame, "); closing the connection");
          end_session("bad frame length");
          return;
        }
        if (d.status == stream::Decode::kRunt) {
          ++local_.tx_dropped_too_short;
          continue;
        }
        // lock-mac: no frame from the guest poses as another host (the frame is in vpd's
        // own buffer: what is checked is what is sent).
        if (config_.lock_mac && std::memcmp(d.frame.data() + 6, guest_mac_.bytes.data(), 6) != 0) {
          ++local_.tx_dropped_spoofed_mac;
          continue;
        }
        iovec iov[2] = {{const_cast<std::byte*>(kZeroHdr.data()), hdr_len_},
                        {const_cast<std::byte*>(d.frame.data()), d.frame.size()}};
        const ssize_t n = ::writev(tap_.fd(), iov, 2);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          // SPEC(STYLE 5): rewind and wait for EPOLLOUT; stop reading the socket meanwhile.
          in_->unget(d);
          ++local_.tx_tap_full;
          tap_blocked_ = true;
          update_interest();
          return;
        }
        if (n < 0) {
          ++local_.tap_write_fails;
          continue;
        }
        ++local_.tx_packets;
        local_.tx_bytes += d.frame.size();
      }
      in_->compact();
      const auto room = in_->space();
      const ssize_t n = ::read(conn_.get(), room.data(), room.size());
      if (n > 0) {
        in_->commit(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0 && errno == EINTR) continue;
      if (in_->pending()) ++local_.stream_truncated;
      end_session(n == 0 ? "the frontend closed the connection" : std::strerror(errno));
      return;
    }
    from_peer_pending_ = true;
    mark_pending();
  }

  /// Sends what is left of the frame in out_. False when the session ended.
  bool flush_out() {
    while (out_->sent < out_->len) {
      const ssize_t n = ::send(conn_.get(), out_->bytes.data() + out_->sent, out_->len - out_->sent,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!peer_blocked_) {
          ++local_.stream_peer_full;
          peer_blocked_ = true;
          update_interest();
        }
        return true;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        end_session(std::strerror(errno));
        return false;
      }
      out_->sent += static_cast<size_t>(n);
    }
    out_->len = out_->sent = 0;
    if (peer_blocked_) {
      peer_blocked_ = false;
      update_interest();
    }
    return true;
  }

  /// TAP → frontend: one frame at a time through out_, as long as the frontend takes them.
  void to_peer() {
    to_peer_pending_ = false;
    std::byte* const frame = out_->bytes.data() + stream::kLengthSize;
    for (int i = 0; i < kRoundsPerWake * 16; ++i) {
      if (!conn_ || peer_blocked_) return;
      iovec iov[2] = {{hdr_in_.data(), hdr_len_}, {frame, stream::kMaxFrame}};
      const ssize_t n = ::readv(tap_.fd(), iov, 2);
      if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ++local_.tap_read_fails;
        return;
      }
      if (static_cast<size_t>(n) < hdr_len_ + stream::kMinFrame) {
        ++local_.rx_dropped_runt;
        continue;
      }
      const auto len = static_cast<uint32_t>(static_cast<size_t>(n) - hdr_len_);
      // The TAP has no offloads, so the kernel completes checksums and segments before it
      // hands a frame over; should one still come partial, finish it here or drop it.
      const dataplane::NetHdr h = dataplane::decode_net_hdr(hdr_in_);
      if ((h.gso_type & ~dataplane::kGsoEcn) != dataplane::kGsoNone ||
          ((h.flags & dataplane::kHdrFNeedsCsum) &&
           !stream::complete_checksum({frame, len}, h.csum_start, h.csum_offset))) {
        ++local_.rx_dropped_offload;
        continue;
      }
      stream::encode_length(
          len, std::span<std::byte, stream::kLengthSize>(out_->bytes.data(), stream::kLengthSize));
      out_->len = stream::kLengthSize + len;
      out_->sent = 0;
      ++local_.rx_packets;
      local_.rx_bytes += len;
      if (!flush_out()) return;
    }
    to_peer_pending_ = true;
    mark_pending();
  }

  static constexpr std::array<std::byte, dataplane::kNetHdrSize> kZeroHdr{};

  Worker& worker_;
  uint32_t id_;
  control::EndpointConfig config_;
  net::Tap tap_;
  std::shared_ptr<Shared> shared_;
  Fd conn_;
  std::unique_ptr<stream::Reassembler> in_;  // sized once, for the largest legal frame
  std::unique_ptr<OutBuffer> out_;
  std::array<std::byte, dataplane::kNetHdrSize> hdr_in_{};
  size_t hdr_len_;
  dataplane::NetCounters local_;
  uint64_t sessions_ = 0;
  net::Mac guest_mac_ = control::guest_mac_of(config_, net::read_machine_id());
  uint32_t conn_events_ = 0;
  uint32_t tap_events_ = 0;
  bool conn_registered_ = false;
  bool tap_blocked_ = false;   // the TAP said EAGAIN: the socket is not read until EPOLLOUT
  bool peer_blocked_ = false;  // the frontend's socket is full: the TAP is not read
  bool from_peer_pending_ = false;
  bool to_peer_pending_ = false;
  bool pending_marked_ = false;
  bool redial_after_end_ = true;
  bool state_dirty_ = false;
};

// Worker ----------------------------------------------------------------------------------

Worker::Worker(unsigned index)
    : index_(index),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag(0, EventKind::kWake);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
  thread_ = std::thread([this] { run(); });
}

Worker::~Worker() {
  call([this] {
    pending_.clear();
    by_id_.clear();
    ports_.clear();
    stop_ = true;
  });
  thread_.join();
}

void Worker::call(std::function<void()> fn) {
  std::mutex done_mutex;
  std::condition_variable done_cv;
  bool done = false;
  {
    std::lock_guard lock(commands_mutex_);
    commands_.push_back([&] {
      fn();
      std::lock_guard done_lock(done_mutex);
      done = true;
      done_cv.notify_one();
    });
  }
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  std::unique_lock lock(done_mutex);
  done_cv.wait(lock, [&] { return done; });
}

void Worker::run_commands() {
  uint64_t count = 0;
  (void)!::read(wake_.get(), &count, sizeof count);
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard lock(commands_mutex_);
    batch.swap(commands_);
  }
  for (auto& fn : batch) fn();
}

void Worker::add(uint32_t id, std::unique_ptr<Attachment> port) {
  by_id_[id] = port.get();
  ports_[port->name()] = std::move(port);
  apply_priority();
}

void Worker::apply_priority() {
  // priority=N puts the data-path thread in SCHED_FIFO at N; a worker serving several
  // endpoints runs at the highest of theirs. 0 everywhere: normal scheduling.
  int wanted = 0;
  for (const auto& [name, port] : ports_) wanted = std::max(wanted, port->priority());
  if (wanted == priority_) return;
  sched_param param{};
  param.sched_priority = wanted;
  const int rc =
      ::pthread_setschedparam(::pthread_self(), wanted ? SCHED_FIFO : SCHED_OTHER, &param);
  if (rc != 0) {
    log::warning("data-path worker ", index_, ": cannot set SCHED_FIFO priority ", wanted, ": ",
                 std::strerror(rc), " (vpd needs CAP_SYS_NICE)");
    return;
  }
  priority_ = wanted;
  log::info("data-path worker ", index_, ": scheduling ",
            wanted ? str("SCHED_FIFO priority ", wanted) : std::string("normal"));
}

void Worker::remove(const std::string& name) {
  auto it = ports_.find(name);
  if (it == ports_.end()) return;
  std::erase(pending_, it->second.get());
  for (auto i = by_id_.begin(); i != by_id_.end();) {
    i = i->second == it->second.get() ? by_id_.erase(i) : std::next(i);
  }
  ports_.erase(it);
  apply_priority();
  std::lock_guard lock(shared_mutex_);
  shared_.erase(name);
}

std::shared_ptr<Shared> Worker::shared_of(const std::string& name) const {
  std::lock_guard lock(shared_mutex_);
  auto it = shared_.find(name);
  return it == shared_.end() ? nullptr : it->second;
}

bool Worker::serves(const std::string& name) const { return shared_of(name) != nullptr; }

void Worker::run() {
  log::info("data-path worker ", index_, " running");
  epoll_event events[64];
  while (!stop_) {
    const int n = ::epoll_wait(epoll_.get(), events, 64, pending_.empty() ? -1 : 0);
    if (n < 0 && errno != EINTR) {
      log::error("data-path worker ", index_, ": epoll_wait: ", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t t = events[i].data.u64;
      const auto kind = static_cast<EventKind>((t >> 16) & 0xff);
      if (kind == EventKind::kWake) {
        run_commands();
        continue;
      }
      auto it = by_id_.find(static_cast<uint32_t>(t >> 32));
      if (it == by_id_.end()) continue;  // the port went away earlier in this batch
      it->second->on_event(kind, static_cast<uint16_t>(t & 0xffff), events[i].events);
    }
    if (n <= 0 && !pending_.empty()) {
      std::vector<Attachment*> now;
      now.swap(pending_);
      for (Attachment* p : now) p->continue_work();
    }
  }
}

// Dataplane --------------------------------------------------------------------------------

Dataplane::Dataplane(unsigned workers) {
  for (unsigned i = 0; i < std::max(1u, workers); ++i) {
    workers_.push_back(std::make_unique<Worker>(i));
  }
}

Dataplane::~Dataplane() = default;

Worker& Dataplane::worker_of(const std::string& name) const {
  for (const auto& w : workers_) {
    if (w->serves(name)) return *w;
  }
  // New endpoints go to the worker with the fewest.
  Worker* best = workers_.front().get();
  size_t fewest = SIZE_MAX;
  for (const auto& w : workers_) {
    std::lock_guard lock(w->shared_mutex_);
    if (w->shared_.size() < fewest) {
      fewest = w->shared_.size();
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
  Worker& w = worker_of(config.name);
  auto shared = std::make_shared<Shared>();
  {
    std::lock_guard lock(w.shared_mutex_);
    w.shared_[config.name] = shared;
  }
  // std::function needs a copyable callable: carry the move-only parts by pointer.
  auto taps_box = std::make_shared<std::vector<net::Tap>>(std::move(taps));
  auto listener_box = std::make_shared<Fd>(std::move(listener));
  w.call([&w, &config, taps_box, listener_box, shared] {
    const uint32_t id = w.next_id_++;
    if (config.transport == control::Transport::kStream) {
      w.add(id, std::make_unique<StreamPort>(w, id, config, std::move(taps_box->front()),
                                             std::move(*listener_box), shared));
    } else {
      w.add(id, std::make_unique<Port>(w, id, config, std::move(*taps_box),
                                       std::move(*listener_box), shared));
    }
  });
}

void Dataplane::detach(const std::string& name) {
  for (const auto& w : workers_) {
    if (!w->serves(name)) continue;
    Worker& worker = *w;
    worker.call([&worker, &name] { worker.remove(name); });
  }
}

void Dataplane::set_priority(const std::string& name, int priority) {
  for (const auto& w : workers_) {
    if (!w->serves(name)) continue;
    Worker& worker = *w;
    worker.call([&worker, &name, priority] {
      if (auto it = worker.ports_.find(name); it != worker.ports_.end()) {
        it->second->set_priority(priority);
        worker.apply_priority();
      }
    });
  }
}

bool Dataplane::attached(const std::string& name) const {
  for (const auto& w : workers_) {
    if (w->serves(name)) return true;
  }
  return false;
}

bool Dataplane::session_active(const std::string& name) const {
  for (const auto& w : workers_) {
    if (auto s = w->shared_of(name)) {
      std::lock_guard lock(s->mutex);
      return s->active;
    }
  }
  return false;
}

std::optional<SessionView> Dataplane::view(const std::string& name) const {
  for (const auto& w : workers_) {
    if (auto s = w->shared_of(name)) {
      std::lock_guard lock(s->mutex);
      SessionView v = s->view;
      v.counters = s->read_counters();
      return v;
    }
  }
  return std::nullopt;
}

}  // namespace vp::daemon
