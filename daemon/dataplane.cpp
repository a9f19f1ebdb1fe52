#include "daemon/dataplane.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
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
#include "sys/log.hpp"
#include "sys/str.hpp"
#include "sys/unix_socket.hpp"
#include "vhost/backend.hpp"
#include "virtio/queue.hpp"

namespace vp::daemon {

namespace {

// Named event ids (STYLE.md item 8): one epoll tag = port id, kind and queue index.
enum class EventKind : uint8_t { kWake = 1, kListener, kConnection, kTap, kKick, kRedial };

constexpr uint64_t tag(uint32_t port, EventKind kind, uint16_t queue = 0) {
  return uint64_t{port} << 32 | uint64_t{static_cast<uint8_t>(kind)} << 16 | queue;
}

// virtio-net feature bits the device side offers besides the offloads (virtio 1.2 §5.1.3).
constexpr uint64_t kNetFMtu = 1ull << 3;
constexpr uint64_t kNetFMac = 1ull << 5;
constexpr uint64_t kNetFStatus = 1ull << 16;
constexpr uint64_t kFAnyLayout = 1ull << 27;
constexpr uint64_t kGsoFeatures = net::feature::kGuestTso4 | net::feature::kGuestTso6 |
                                  net::feature::kGuestUfo | net::feature::kGuestUso4 |
                                  net::feature::kGuestUso6;
// Rounds of a busy queue served per wake-up before other endpoints get their turn.
constexpr int kRoundsPerWake = 16;

struct Shared {
  mutable std::mutex mutex;
  SessionView view;
  bool active = false;
};

}  // namespace

class Port;

/// One data-path thread: an epoll, a command queue, and the endpoints it owns.
class Worker {
 public:
  explicit Worker(unsigned index);
  ~Worker();

  /// Runs `fn` on the worker thread and waits for it.
  void call(std::function<void()> fn);

  int epoll() const { return epoll_.get(); }
  dataplane::NetScratch& scratch() { return scratch_; }
  void mark_pending(Port* port) { pending_.push_back(port); }
  void add(uint32_t id, std::unique_ptr<Port> port);
  void remove(const std::string& name);
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
  std::map<uint32_t, Port*> by_id_;
  std::map<std::string, std::unique_ptr<Port>> ports_;
  std::vector<Port*> pending_;
  // Shared with the control thread.
  mutable std::mutex shared_mutex_;
  std::map<std::string, std::shared_ptr<Shared>> shared_;
  friend class Port;
  friend class Dataplane;
};

/// One endpoint on its worker: the vhost-user device policy and the forwarding loop.
class Port final : public vhost::Device {
 public:
  Port(Worker& worker, uint32_t id, control::EndpointConfig config, net::Tap tap, Fd listener,
       std::shared_ptr<Shared> shared)
      : worker_(worker),
        id_(id),
        config_(std::move(config)),
        tap_(std::move(tap)),
        listener_(std::move(listener)),
        shared_(std::move(shared)) {
    build_config_space();
    if (listener_) add_fd(listener_.get(), tag(id_, EventKind::kListener), EPOLLIN);
    if (!config_.peer.empty()) {
      redial_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
      add_fd(redial_.get(), tag(id_, EventKind::kRedial), EPOLLIN);
      dial();
    }
    state_dirty_ = true;
    publish();
  }

  ~Port() override {
    end_session("endpoint detached");
    if (listener_) del_fd(listener_.get());
    if (redial_) del_fd(redial_.get());
  }

  const std::string& name() const { return config_.name; }

  void on_event(EventKind kind, uint16_t queue, uint32_t events) {
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

  /// Carries on with work a previous round left for later (budget used up).
  void continue_work() {
    if (tx_pending_) run_tx();
    if (rx_pending_) run_rx();
    publish();
  }

  // vhost::Device ---------------------------------------------------------------------------
  uint64_t features() const override {
    uint64_t f = config_.features() | virtio::kFeatureEventIdx | virtio::kFeatureIndirectDesc |
                 virtio::kFeatureRingPacked | kNetFMtu | kNetFMac | kNetFStatus | kFAnyLayout;
    // `legacy`: a VIRTIO 0.9.5 peer without MRG_RXBUF, so the 10-byte header.
    if (!config_.legacy) f |= virtio::kFeatureVersion1 | dataplane::kFeatureMrgRxbuf;
    return f;
  }
  uint64_t protocol_features() const override {
    using vhost::ProtocolFeature;
    return vhost::bit(ProtocolFeature::kMq) | vhost::bit(ProtocolFeature::kRarp) |
           vhost::bit(ProtocolFeature::kReplyAck) | vhost::bit(ProtocolFeature::kNetMtu) |
           vhost::bit(ProtocolFeature::kConfigureMemSlots) | vhost::bit(ProtocolFeature::kStatus);
  }
  uint32_t num_queues() const override { return 2; }

  Result<void> on_features(uint64_t acked) override {
    dataplane::NetSession s = dataplane::make_net_session(acked);
    if (!(acked & kGsoFeatures)) s.max_rx_frame = config_.mtu + 18;  // Ethernet + VLAN tag
    if (auto ok = tap_.set_vnet_hdr_size(static_cast<int>(s.hdr_len)); !ok) return ok;
    // The TAP may hand vpd only what the guest acked: consistent by construction.
    auto offloads = tap_.set_offload(net::tun_offloads_for(acked));
    if (!offloads) return std::unexpected(offloads.error());
    session_ = s;
    tun_offloads_ = *offloads;
    acked_ = acked;
    state_dirty_ = true;
    log::info(name(), ": guest acked ", net::feature_names(acked & net::kOffloadsSupported), ", ",
              s.hdr_len, "-byte header, TAP offloads ", net::tun_offload_names(*offloads));
    return {};
  }

  std::span<const std::byte> config() const override { return config_space_; }

  void on_queue_started(uint32_t index) override {
    vhost::Vring& v = backend_->vring(index);
    add_fd(v.kick.get(), tag(id_, EventKind::kKick, static_cast<uint16_t>(index)), EPOLLIN);
    running_[index] = true;
    state_dirty_ = true;
    update_tap();
    if (index == kTxQueue) run_tx();
    if (index == kRxQueue) run_rx();
  }

  void on_queue_stopped(uint32_t index) override {
    if (!running_[index]) return;
    del_fd(backend_->vring(index).kick.get());
    running_[index] = false;
    if (index == kTxQueue) tx_pending_ = tx_blocked_ = false;
    if (index == kRxQueue) rx_pending_ = rx_paused_ = false;
    state_dirty_ = true;
    update_tap();
  }

  Result<void> on_mtu(uint32_t mtu) override {
    if (mtu != config_.mtu) {
      return fail("vhost-refused", str(name(), ": the guest asked for MTU ", mtu, "; vp0's is ",
                                       config_.mtu, " (set it with vpctl ", name(), " mtu=N)"));
    }
    return {};
  }
  void on_rarp(const uint8_t (&)[6]) override {}
  void on_status(uint8_t) override {}

  void publish() {
    std::lock_guard lock(shared_->mutex);
    SessionView& v = shared_->view;
    v.counters += local_;
    local_ = {};
    if (!state_dirty_) return;
    state_dirty_ = false;
    v.state = backend_ ? "connected" : listener_ ? "listening" : redial_ ? "dialing" : "stopped";
    v.socket = !config_.bind.empty() ? config_.bind : config_.peer;
    v.features = backend_ ? acked_ : 0;
    v.packed = backend_ && (acked_ & virtio::kFeatureRingPacked);
    v.queues = 2;
    v.queues_running = running_[0] + running_[1];
    v.hdr_len = backend_ && acked_ ? session_.hdr_len : 0;
    v.tun_offloads = tun_offloads_;
    v.sessions = sessions_;
    if (backend_) v.refused_messages = backend_->counters().requests_refused;
    v.broken_queues.clear();
    if (backend_) {
      for (uint32_t q = 0; q < 2; ++q) {
        const auto reason = std::visit([](const auto& queue) { return queue.broken_reason(); },
                                       backend_->vring(q).queue);
        if (reason != virtio::BrokenReason::kNone) {
          v.broken_queues.push_back(
              str(q == kRxQueue ? "rx0" : "tx0", ": ", virtio::describe(reason)));
        }
      }
    }
    shared_->active = backend_ && acked_ != 0;
  }

 private:
  static constexpr uint32_t kRxQueue = 0;  // receiveq1: device → driver
  static constexpr uint32_t kTxQueue = 1;  // transmitq1: driver → device

  void add_fd(int fd, uint64_t t, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = t;
    ::epoll_ctl(worker_.epoll(), EPOLL_CTL_ADD, fd, &ev);
  }
  void mod_fd(int fd, uint64_t t, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = t;
    ::epoll_ctl(worker_.epoll(), EPOLL_CTL_MOD, fd, &ev);
  }
  void del_fd(int fd) { ::epoll_ctl(worker_.epoll(), EPOLL_CTL_DEL, fd, nullptr); }

  void build_config_space() {
    // SPEC: virtio 1.2 §5.1.4 struct virtio_net_config: mac[6], status, max_virtqueue_pairs,
    // mtu (little endian).
    const net::Mac mac = config_guest_mac_;
    for (size_t i = 0; i < 6; ++i) config_space_[i] = std::byte{mac.bytes[i]};
    config_space_[6] = std::byte{1};  // VIRTIO_NET_S_LINK_UP
    config_space_[8] = std::byte{1};  // one queue pair
    config_space_[10] = std::byte{static_cast<uint8_t>(config_.mtu & 0xff)};
    config_space_[11] = std::byte{static_cast<uint8_t>(config_.mtu >> 8)};
  }

  void accept_frontend() {
    for (;;) {
      Fd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!conn) return;
      if (backend_) {
        log::warning(name(), ": refused a second frontend on ", config_.bind, " (pid ",
                     peer_credentials(conn.get()).pid, "); one is connected");
        continue;
      }
      const auto peer = peer_credentials(conn.get());
      log::notice(name(), ": frontend connected on ", config_.bind, " (uid ", peer.uid, " pid ",
                  peer.pid, ")");
      start_session(std::move(conn));
    }
  }

  void dial() {
    auto fd = connect_unix(config_.peer);
    if (!fd) {
      // The VMM is not there (yet): try again, backing off to 5 s.
      backoff_ms_ = backoff_ms_ == 0 ? 100 : std::min(backoff_ms_ * 2, 5000);
      itimerspec t{};
      t.it_value.tv_sec = backoff_ms_ / 1000;
      t.it_value.tv_nsec = static_cast<long>(backoff_ms_ % 1000) * 1'000'000;
      ::timerfd_settime(redial_.get(), 0, &t, nullptr);
      return;
    }
    backoff_ms_ = 0;
    ::fcntl(fd->get(), F_SETFL, ::fcntl(fd->get(), F_GETFL) | O_NONBLOCK);
    log::notice(name(), ": connected to frontend at ", config_.peer);
    start_session(std::move(*fd));
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
    acked_ = 0;
    // Back to what the endpoint's settings say while no guest is attached.
    (void)tap_.set_vnet_hdr_size(config_.vnet_hdr_len());
    if (auto applied = tap_.set_offload(net::tun_offloads_for(config_.features()))) {
      tun_offloads_ = *applied;
    }
    (void)tap_.set_carrier(false);
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
    mod_fd(backend_->fd(), tag(id_, EventKind::kConnection),
           EPOLLIN | (backend_->wants_write() ? static_cast<uint32_t>(EPOLLOUT) : 0u));
    state_dirty_ = true;
  }

  /// TAP interest: readable while RX runs and has buffers, writable while TX waits for room.
  void update_tap() {
    const bool pair_running = running_[kRxQueue] && running_[kTxQueue];
    if (pair_running != carrier_) {
      (void)tap_.set_carrier(pair_running);
      carrier_ = pair_running;
    }
    uint32_t events = 0;
    if (running_[kRxQueue] && !rx_paused_) events |= EPOLLIN;
    if (running_[kTxQueue] && tx_blocked_) events |= EPOLLOUT;
    if (events == tap_events_) return;
    if (tap_events_ == 0) {
      add_fd(tap_.fd(), tag(id_, EventKind::kTap), events);
    } else if (events == 0) {
      del_fd(tap_.fd());
    } else {
      mod_fd(tap_.fd(), tag(id_, EventKind::kTap), events);
    }
    tap_events_ = events;
  }

  void on_kick(uint16_t queue) {
    if (queue >= 2 || !running_[queue]) return;
    dataplane::consume_kick(backend_->vring(queue).kick.get(), local_);
    if (queue == kTxQueue) run_tx();
    if (queue == kRxQueue) {
      if (rx_paused_) {
        rx_paused_ = false;
        update_tap();
      }
      run_rx();
    }
  }

  void on_tap(uint32_t events) {
    if ((events & EPOLLOUT) && tx_blocked_) {
      tx_blocked_ = false;
      update_tap();
      run_tx();
    }
    if (events & EPOLLIN) run_rx();
  }

  void run_tx() {
    if (!running_[kTxQueue]) return;
    vhost::Vring& v = backend_->vring(kTxQueue);
    tx_pending_ = false;
    for (int round = 0; round < kRoundsPerWake; ++round) {
      const dataplane::ForwardResult r = std::visit(
          [&](auto& q) {
            return dataplane::forward_tx(q, tap_.fd(), v.call.get(), session_, worker_.scratch(),
                                         local_);
          },
          v.queue);
      if (r.status == dataplane::ForwardStatus::kBudget) continue;
      if (r.status == dataplane::ForwardStatus::kTapFull) {
        tx_blocked_ = true;
        update_tap();
      }
      if (r.status == dataplane::ForwardStatus::kQueueStopped) state_dirty_ = true;
      return;
    }
    tx_pending_ = true;
    worker_.mark_pending(this);
  }

  void run_rx() {
    if (!running_[kRxQueue]) return;
    vhost::Vring& v = backend_->vring(kRxQueue);
    rx_pending_ = false;
    for (int round = 0; round < kRoundsPerWake; ++round) {
      const dataplane::ForwardResult r = std::visit(
          [&](auto& q) {
            return dataplane::forward_rx(q, tap_.fd(), v.call.get(), session_, worker_.scratch(),
                                         local_);
          },
          v.queue);
      if (r.status == dataplane::ForwardStatus::kBudget) continue;
      if (r.status == dataplane::ForwardStatus::kNoBuffers) {
        rx_paused_ = true;  // until the guest kicks with new buffers
        update_tap();
      }
      if (r.status == dataplane::ForwardStatus::kQueueStopped) state_dirty_ = true;
      return;
    }
    rx_pending_ = true;
    worker_.mark_pending(this);
  }

  Worker& worker_;
  uint32_t id_;
  control::EndpointConfig config_;
  net::Mac config_guest_mac_ = guest_mac_for(config_);
  net::Tap tap_;
  Fd listener_;
  Fd redial_;
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<vhost::Backend> backend_;
  std::array<std::byte, 12> config_space_{};
  dataplane::NetSession session_;
  dataplane::NetCounters local_;
  uint64_t acked_ = 0;
  unsigned tun_offloads_ = 0;
  uint64_t sessions_ = 0;
  int backoff_ms_ = 0;
  bool running_[2] = {false, false};
  bool carrier_ = false;
  bool tx_blocked_ = false;
  bool rx_paused_ = false;
  bool tx_pending_ = false;
  bool rx_pending_ = false;
  bool state_dirty_ = false;
  uint32_t tap_events_ = 0;

 public:
  static net::Mac guest_mac_for(const control::EndpointConfig& c);
};

net::Mac Port::guest_mac_for(const control::EndpointConfig& c) {
  return net::stable_mac(net::read_machine_id(), c.name + "/guest");
}

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

void Worker::add(uint32_t id, std::unique_ptr<Port> port) {
  by_id_[id] = port.get();
  ports_[port->name()] = std::move(port);
}

void Worker::remove(const std::string& name) {
  auto it = ports_.find(name);
  if (it == ports_.end()) return;
  std::erase(pending_, it->second.get());
  for (auto i = by_id_.begin(); i != by_id_.end();) {
    i = i->second == it->second.get() ? by_id_.erase(i) : std::next(i);
  }
  ports_.erase(it);
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
      std::vector<Port*> now;
      now.swap(pending_);
      for (Port* p : now) p->continue_work();
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

void Dataplane::attach(const control::EndpointConfig& config, net::Tap tap, Fd listener) {
  detach(config.name);
  Worker& w = worker_of(config.name);
  auto shared = std::make_shared<Shared>();
  {
    std::lock_guard lock(w.shared_mutex_);
    w.shared_[config.name] = shared;
  }
  // std::function needs a copyable callable: carry the move-only parts by pointer.
  auto tap_box = std::make_shared<net::Tap>(std::move(tap));
  auto listener_box = std::make_shared<Fd>(std::move(listener));
  w.call([&w, &config, tap_box, listener_box, shared] {
    const uint32_t id = w.next_id_++;
    w.add(id, std::make_unique<Port>(w, id, config, std::move(*tap_box), std::move(*listener_box),
                                     shared));
  });
}

void Dataplane::detach(const std::string& name) {
  for (const auto& w : workers_) {
    if (!w->serves(name)) continue;
    Worker& worker = *w;
    worker.call([&worker, &name] { worker.remove(name); });
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
      return s->view;
    }
  }
  return std::nullopt;
}

}  // namespace vp::daemon
