#include "vhost/backend.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "sys/log.hpp"
#include "sys/str.hpp"
#include "unit_expect.hpp"

// The front-end lives in tests/support (CMake target vp_vhost_frontend) so that integration
// tests and the benchmark use the same one.
#include "support/vhost_frontend.hpp"

// A real front-end (memfd guest RAM, rings laid out by a driver, real vhost-user messages)
// talks to the engine over a socketpair, both on this thread: the front-end's wait loop
// "pumps" the back-end. A fake Device records what the engine asks of it; the test plays the
// data plane through Backend::vring(). Every test ends by checking /proc/self/fd: no leaks.

namespace vp::vhost {
namespace {

using test::Segment;
using test::UsedBuffer;
using test::VhostFrontend;
using unit::fails_with;
using unit::succeeded;
using unit::words;

constexpr uint64_t kNetCsum = uint64_t{1} << 0;
constexpr uint64_t kNetMtu = uint64_t{1} << 3;
constexpr uint64_t kNetMac = uint64_t{1} << 5;
constexpr uint64_t kNetMrgRxbuf = uint64_t{1} << 15;
constexpr uint64_t kNetStatus = uint64_t{1} << 16;
constexpr uint64_t kNetMq = uint64_t{1} << 22;
// What the fake device offers, including a bit the engine must withhold (ACCESS_PLATFORM).
constexpr uint64_t kDeviceFeatures = virtio::kFeatureVersion1 | virtio::kFeatureEventIdx |
                                     virtio::kFeatureIndirectDesc | virtio::kFeatureRingPacked |
                                     kNetCsum | kNetMtu | kNetMac | kNetMrgRxbuf | kNetStatus |
                                     kNetMq | kFeatureLogAll | kFeatureAccessPlatform;
constexpr uint64_t kSplitOnly = ~virtio::kFeatureRingPacked;
// QEMU 7.2 knows protocol features 0-16 (VHOST_USER_PROTOCOL_F_MAX is 17).
constexpr uint64_t kQemu72ProtocolFeatures = (uint64_t{1} << 17) - 1;
constexpr uint32_t kQueues = 4;

size_t open_fd_count() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

std::span<const std::byte> text(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

template <WireType T>
std::span<const std::byte> bytes(const T& value) {
  return wire_bytes(value);
}

class FakeDevice final : public Device {
 public:
  uint64_t features() const override { return offer; }
  uint64_t protocol_features() const override { return protocol_offer; }
  uint32_t num_queues() const override { return kQueues; }
  Result<void> on_features(uint64_t acked) override {
    if (refuse_features) return fail("bad-features", "the device refuses these features");
    events.push_back(str("features ", acked));
    return {};
  }
  std::span<const std::byte> config() const override { return std::as_bytes(std::span(config_)); }
  void on_queue_started(uint32_t index) override {
    events.push_back(str("start ", index));
    const Vring& vring = backend->vring(index);
    // The engine's promise: a started ring has a kick fd and a configured queue.
    const bool ready = std::visit([](const auto& q) { return q.ready(); }, vring.queue);
    if (!vring.started || !vring.kick || !vring.call_set || !ready ||
        !running.insert(index).second) {
      ++broken_promises;
    }
  }
  void on_queue_stopped(uint32_t index) override {
    events.push_back(str("stop ", index));
    // Still configured while the device is told, so the data plane can flush it.
    if (!backend->vring(index).started || running.erase(index) != 1) ++broken_promises;
  }
  Result<void> on_mtu(uint32_t mtu) override {
    events.push_back(str("mtu ", mtu));
    return {};
  }
  void on_rarp(const uint8_t (&mac)[6]) override {
    std::memcpy(rarp_mac, mac, sizeof rarp_mac);
    events.push_back("rarp");
  }
  void on_status(uint8_t status) override { events.push_back(str("status ", status)); }

  std::vector<std::string> take() { return std::exchange(events, {}); }

  uint64_t offer = kDeviceFeatures;
  uint64_t protocol_offer = ~uint64_t{0};
  bool refuse_features = false;
  Backend* backend = nullptr;
  std::vector<std::string> events;
  std::set<uint32_t> running;
  int broken_promises = 0;
  uint8_t rarp_mac[6] = {};
  // virtio_net_config: mac, status, max_virtqueue_pairs, mtu (virtio 1.2 §5.1.4).
  std::array<uint8_t, 12> config_ = {0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 1, 0, 2, 0, 0xdc, 0x05};
};

// What the data plane would do with a started ring.
struct Popped {
  virtio::ChainHead head;
  std::string readable;
  std::vector<iovec> writable;
};

std::vector<Popped> pop(Vring& vring, size_t limit = SIZE_MAX) {
  std::vector<Popped> out;
  std::visit(
      [&](auto& q) {
        std::array<iovec, 16> iov{};
        while (out.size() < limit) {
          auto chain = q.pop(iov);
          if (!chain) break;
          Popped p{chain->head, {}, {chain->writable.begin(), chain->writable.end()}};
          for (const iovec& v : chain->readable) {
            p.readable.append(static_cast<const char*>(v.iov_base), v.iov_len);
          }
          out.push_back(std::move(p));
        }
      },
      vring.queue);
  return out;
}

void complete(Vring& vring, virtio::ChainHead head, uint32_t len) {
  std::visit(
      [&](auto& q) {
        EXPECT_TRUE(q.push_used(head, len));
        q.publish_used();
      },
      vring.queue);
}

class VhostBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    log::set_threshold(log::Level::kError);  // refusals are the point of many tests here
    fds_before_ = open_fd_count();
    connect();
  }

  void TearDown() override {
    frontend_.reset();
    backend_.reset();
    EXPECT_TRUE(device_.running.empty()) << "rings left running after the session ended";
    EXPECT_EQ(device_.broken_promises, 0);
    EXPECT_EQ(open_fd_count(), fds_before_) << "fds leaked";
    log::set_threshold(log::Level::kInfo);
  }

  void connect(VhostFrontend::Options options = {}) {
    int sv[2] = {-1, -1};
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    backend_ = std::make_unique<Backend>(device_, Fd(sv[0]), "test");
    device_.backend = backend_.get();
    auto frontend = VhostFrontend::create(Fd(sv[1]), std::move(options));
    ASSERT_TRUE(succeeded(frontend));
    frontend_ = std::move(*frontend);
    frontend_->set_pump([this] { pump(); });
  }

  void pump() {
    if (backend_ && !backend_->closed()) last_ = backend_->on_readable();
  }

  // negotiate + SET_MEM_TABLE, the common start.
  void start_session(uint64_t features = ~uint64_t{0},
                     uint64_t protocol = kQemu72ProtocolFeatures) {
    ASSERT_TRUE(succeeded(frontend_->negotiate(features, protocol)));
    ASSERT_TRUE(succeeded(frontend_->set_mem_table()));
  }

  // Sends `request` with NEED_REPLY and returns the REPLY_ACK value (0 done, 1 refused).
  uint64_t ack_of(Request request, std::span<const std::byte> payload = {},
                  std::span<const int> fds = {}, uint32_t flags = kFlagNeedReply) {
    EXPECT_TRUE(succeeded(frontend_->send(request, payload, fds, flags)));
    auto reply = frontend_->wait_reply(request);
    EXPECT_TRUE(succeeded(reply));
    if (!reply) return ~uint64_t{0};
    EXPECT_EQ(reply->payload.size(), 8u);
    return reply->u64();
  }

  // Sends `request` and lets the back-end handle it; no reply must come.
  void send_expecting_no_reply(Request request, std::span<const std::byte> payload = {},
                               std::span<const int> fds = {}, uint32_t flags = 0) {
    EXPECT_TRUE(succeeded(frontend_->send(request, payload, fds, flags)));
    pump();
    EXPECT_TRUE(last_.has_value());
    EXPECT_FALSE(frontend_->reply_ready());
  }

  const BackendCounters& counters() const { return backend_->counters(); }

  size_t fds_before_ = 0;
  FakeDevice device_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<VhostFrontend> frontend_;
  Result<Backend::Status> last_ = Backend::Status::kOpen;
};

// --- Negotiation and ring start ------------------------------------------------------------

TEST_F(VhostBackend, qemu_negotiation_then_rings_start_disabled_until_set_vring_enable) {
  ASSERT_TRUE(succeeded(frontend_->negotiate(~uint64_t{0}, kQemu72ProtocolFeatures)));
  // GET_FEATURES: the device's offer plus PROTOCOL_FEATURES, without ACCESS_PLATFORM.
  const uint64_t expected = (kDeviceFeatures & ~kEngineWithheldFeatures) | kFeatureProtocolFeatures;
  EXPECT_EQ(frontend_->acked_features(), expected);
  EXPECT_EQ(backend_->acked_features(), expected);
  // GET_PROTOCOL_FEATURES: what the device offers and the engine implements, nothing else.
  EXPECT_EQ(frontend_->acked_protocol_features(),
            kImplementedProtocolFeatures & kQemu72ProtocolFeatures);
  EXPECT_EQ(backend_->acked_protocol_features(), frontend_->acked_protocol_features());
  EXPECT_EQ(frontend_->queue_num(), kQueues);
  EXPECT_EQ(frontend_->max_mem_slots(), kMaxMemSlots);
  EXPECT_TRUE(backend_->owned());
  EXPECT_EQ(backend_->status(), 8);  // FEATURES_OK, as QEMU 7.2 adds it with STATUS
  EXPECT_EQ(device_.take(),
            words({str("features ", expected & ~kFeatureProtocolFeatures).c_str(), "status 8"}));

  ASSERT_TRUE(succeeded(frontend_->set_mem_table()));
  EXPECT_EQ(backend_->memory().region_count(), 2u);
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 256, /*enable=*/false)));
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 256, /*enable=*/false)));
  // NUM, BASE, ADDR, KICK and CALL are all there: the rings start, but with PROTOCOL_FEATURES
  // they start disabled (the Device supplies no RX there and discards TX).
  EXPECT_EQ(device_.take(), words({"start 0", "start 1"}));
  EXPECT_TRUE(backend_->vring(0).started);
  EXPECT_FALSE(backend_->vring(0).enabled);

  // Enabling restarts the ring, so the Device sees each state whole.
  ASSERT_TRUE(succeeded(frontend_->set_vring_enable(0, true)));
  EXPECT_EQ(device_.take(), words({"stop 0", "start 0"}));
  EXPECT_TRUE(backend_->vring(0).enabled);
  ASSERT_TRUE(succeeded(frontend_->set_vring_enable(1, true)));
  EXPECT_EQ(device_.take(), words({"stop 1", "start 1"}));
  // Enabling an enabled ring changes nothing.
  ASSERT_TRUE(succeeded(frontend_->set_vring_enable(1, true)));
  EXPECT_TRUE(device_.take().empty());

  // The ring addresses the front-end sent as its own virtual addresses, in guest terms.
  const auto layout = frontend_->layout(1);
  ASSERT_TRUE(layout.has_value());
  const Vring& vring = backend_->vring(1);
  EXPECT_TRUE(vring.started);
  EXPECT_TRUE(vring.packed());  // RING_PACKED offered and acked
  EXPECT_EQ(vring.config.size, 256u);
  EXPECT_EQ(vring.config.desc_addr, layout->desc);
  EXPECT_EQ(vring.config.driver_addr, layout->driver);
  EXPECT_EQ(vring.config.device_addr, layout->device);
  EXPECT_TRUE(vring.kick.valid());
  EXPECT_TRUE(vring.call.valid());

  ASSERT_TRUE(succeeded(frontend_->set_vring_enable(1, false)));
  EXPECT_EQ(device_.take(), words({"stop 1", "start 1"}));
  EXPECT_TRUE(backend_->vring(1).started);
  EXPECT_FALSE(backend_->vring(1).enabled);
  EXPECT_EQ(counters().refused_by_handler + counters().requests_refused, 0u);
}

TEST_F(VhostBackend, without_protocol_features_a_ring_starts_when_its_kick_fd_arrives) {
  start_session(~kFeatureProtocolFeatures);
  pump();  // without REPLY_ACK the front-end does not wait for SET_* to be handled
  EXPECT_EQ(backend_->acked_protocol_features(), 0u);
  EXPECT_EQ(backend_->acked_features() & kFeatureProtocolFeatures, 0u);
  device_.take();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 64)));  // no SET_VRING_ENABLE sent
  pump();
  EXPECT_EQ(device_.take(), words({"start 0"}));
  EXPECT_TRUE(backend_->vring(0).enabled);
}

// --- Ring stop, base and restart -----------------------------------------------------------

TEST_F(VhostBackend, get_vring_base_of_split_ring_returns_last_avail_and_restart_resumes) {
  start_session(kSplitOnly);
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 8)));
  EXPECT_FALSE(backend_->vring(1).packed());
  for (std::string_view frame : {"a", "bb", "ccc"}) {
    ASSERT_TRUE(succeeded(frontend_->post_tx(1, text(frame))));
  }
  auto popped = pop(backend_->vring(1));
  ASSERT_EQ(popped.size(), 3u);
  EXPECT_EQ(popped[2].readable, "ccc");
  for (const Popped& p : popped) complete(backend_->vring(1), p.head, 0);
  device_.take();

  auto base = frontend_->get_vring_base(1);
  ASSERT_TRUE(succeeded(base));
  EXPECT_EQ(*base, 3u);
  EXPECT_EQ(device_.take(), words({"stop 1"}));
  EXPECT_FALSE(backend_->vring(1).started);
  EXPECT_FALSE(backend_->vring(1).kick.valid());  // the front-end sends new ones to restart
  EXPECT_FALSE(backend_->vring(1).call.valid());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(frontend_->next_used(1).has_value());
  EXPECT_FALSE(frontend_->next_used(1).has_value());

  // QEMU restarts the ring with the base it was given.
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 8)));
  EXPECT_EQ(device_.take(), words({"start 1"}));
  auto id = frontend_->post_tx(1, text("dddd"));
  ASSERT_TRUE(succeeded(id));
  popped = pop(backend_->vring(1));
  ASSERT_EQ(popped.size(), 1u);
  EXPECT_EQ(popped[0].readable, "dddd");
  EXPECT_EQ(popped[0].head.id, *id);
  complete(backend_->vring(1), popped[0].head, 0);
  EXPECT_EQ(backend_->vring(1).base(), 4u);
}

TEST_F(VhostBackend, get_vring_base_of_packed_ring_carries_both_indices_and_wrap_counters) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 6)));  // packed sizes need not be 2^n
  ASSERT_TRUE(backend_->vring(1).packed());
  // Seven buffers through a six-entry ring: both indices wrap once.
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("x"))));
    auto popped = pop(backend_->vring(1));
    ASSERT_EQ(popped.size(), 1u);
    complete(backend_->vring(1), popped[0].head, 0);
    ASSERT_TRUE(frontend_->next_used(1).has_value());
  }
  auto base = frontend_->get_vring_base(1);
  ASSERT_TRUE(succeeded(base));
  // Avail index 1 with wrap counter 0 (bit 15 clear); used index 1 with wrap 0 (bit 31).
  EXPECT_EQ(*base, 0x00010001u);

  // Restarted with that base, the ring continues where it was.
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 6)));
  ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("after"))));
  auto popped = pop(backend_->vring(1));
  ASSERT_EQ(popped.size(), 1u);
  EXPECT_EQ(popped[0].readable, "after");
  complete(backend_->vring(1), popped[0].head, 0);
  EXPECT_TRUE(frontend_->next_used(1).has_value());
}

TEST_F(VhostBackend, packed_base_with_the_avail_half_only_puts_used_where_avail_is) {
  // DPDK virtio-user: SET_VRING_BASE 0x00008000 (avail index 0, wrap 1; bits 16-31 zero).
  VhostFrontend::Options options;
  options.avail_half_base = true;
  frontend_.reset();
  backend_.reset();
  connect(options);
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 4)));
  ASSERT_TRUE(backend_->vring(1).packed());
  EXPECT_EQ(backend_->vring(1).base(), 0x80008000u);  // used (0, wrap 1), as avail
  // More than a ring's worth: every used descriptor carries the wrap the driver expects.
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("x"))));
    auto popped = pop(backend_->vring(1));
    ASSERT_EQ(popped.size(), 1u);
    complete(backend_->vring(1), popped[0].head, 0);
    ASSERT_TRUE(frontend_->next_used(1).has_value()) << "buffer " << i;
  }
  auto base = frontend_->get_vring_base(1);
  ASSERT_TRUE(succeeded(base));
  // Nine through four entries, two laps and one: avail and used at (1, wrap 1). Both halves
  // agree, so a reader of bits 0-15 only resumes at the same place.
  EXPECT_EQ(*base, 0x80018001u);

  // DPDK-style restart from bits 0-15 of that answer (0x8001): used follows avail again.
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 4)));
  EXPECT_EQ(backend_->vring(1).base(), 0x80018001u);
  ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("after"))));
  auto popped = pop(backend_->vring(1));
  ASSERT_EQ(popped.size(), 1u);
  EXPECT_EQ(popped[0].readable, "after");
  complete(backend_->vring(1), popped[0].head, 0);
  EXPECT_TRUE(frontend_->next_used(1).has_value());
}

TEST_F(VhostBackend, packed_base_with_both_halves_is_taken_as_sent) {
  start_session();  // QEMU: SET_VRING_BASE 0x80008000 for a new ring
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 6)));
  EXPECT_EQ(backend_->vring(1).base(), 0x80008000u);
  // A used position behind the avail one (two buffers in flight) stays where it was sent.
  ASSERT_TRUE(
      succeeded(frontend_->send(Request::kSetVringBase, bytes(vhost::VringState{1, 0x00030005u}))));
  pump();
  EXPECT_EQ(backend_->vring(1).base(), 0x00030005u);
  // Bits 16-31 zero with an avail position of (5, wrap 0): read as used = avail.
  ASSERT_TRUE(
      succeeded(frontend_->send(Request::kSetVringBase, bytes(vhost::VringState{1, 0x00000005u}))));
  pump();
  EXPECT_EQ(backend_->vring(1).base(), 0x00050005u);
  // Either half past the ring is refused, the value as sent named.
  EXPECT_EQ(ack_of(Request::kSetVringBase, bytes(vhost::VringState{1, 0x00000006u})), 1u);
  EXPECT_EQ(ack_of(Request::kSetVringBase, bytes(vhost::VringState{1, 0x00060001u})), 1u);
  EXPECT_EQ(backend_->vring(1).base(), 0x00050005u);
}

// A TX frame read and an RX frame written through the rings the engine configured, with
// the used-buffer notification on the call fd.
void exchange_frames(VhostFrontend& frontend, Backend& backend) {
  ASSERT_TRUE(succeeded(frontend.setup_queue(0, 16)));
  ASSERT_TRUE(succeeded(frontend.setup_queue(1, 16)));
  auto rx_id = frontend.post_rx(0, 64);
  ASSERT_TRUE(succeeded(rx_id));
  ASSERT_TRUE(succeeded(frontend.post_tx(1, text("frame from the guest"))));
  ASSERT_TRUE(succeeded(frontend.kick(1)));
  uint64_t kicks = 0;
  EXPECT_EQ(::read(backend.vring(1).kick.get(), &kicks, sizeof kicks), 8);
  EXPECT_EQ(kicks, 1u);

  auto tx = pop(backend.vring(1));
  ASSERT_EQ(tx.size(), 1u);
  EXPECT_EQ(tx[0].readable, "frame from the guest");
  complete(backend.vring(1), tx[0].head, 0);

  auto rx = pop(backend.vring(0));
  ASSERT_EQ(rx.size(), 1u);
  ASSERT_EQ(rx[0].writable.size(), 1u);
  ASSERT_EQ(rx[0].writable[0].iov_len, 64u);
  std::memcpy(rx[0].writable[0].iov_base, "frame to the guest", 18);
  complete(backend.vring(0), rx[0].head, 18);
  const bool notify =
      std::visit([](auto& q) { return q.needs_notification(); }, backend.vring(0).queue);
  EXPECT_TRUE(notify);
  const uint64_t one = 1;
  EXPECT_EQ(::write(backend.vring(0).call.get(), &one, sizeof one), 8);

  ASSERT_TRUE(succeeded(frontend.wait_call(0)));
  auto used = frontend.next_used(0);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, *rx_id);
  EXPECT_EQ(used->len, 18u);
  EXPECT_EQ(
      std::string_view(reinterpret_cast<const char*>(frontend.buffer(0, used->id).data()), 18),
      "frame to the guest");
  EXPECT_TRUE(frontend.next_used(1).has_value());
  EXPECT_EQ(frontend.outstanding(0) + frontend.outstanding(1), 0u);
}

TEST_F(VhostBackend, frames_cross_split_rings_in_memory_mapped_from_the_front_ends_memfds) {
  VhostFrontend::Options options;
  options.buffer_region = 1;  // buffers above 4 GiB, rings below
  frontend_.reset();
  backend_.reset();
  connect(options);
  start_session(kSplitOnly);
  exchange_frames(*frontend_, *backend_);
}

TEST_F(VhostBackend, frames_cross_packed_rings_in_memory_mapped_from_the_front_ends_memfds) {
  start_session();
  exchange_frames(*frontend_, *backend_);
  EXPECT_TRUE(backend_->vring(0).packed());
}

TEST_F(VhostBackend, front_end_kicks_only_when_the_device_asks_for_it) {
  // Split and packed, each with and without EVENT_IDX.
  for (const uint64_t features : {kSplitOnly, kSplitOnly & ~virtio::kFeatureEventIdx, ~uint64_t{0},
                                  ~virtio::kFeatureEventIdx}) {
    SCOPED_TRACE(features);
    frontend_.reset();
    backend_.reset();
    connect();
    start_session(features);
    ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 8)));
    Vring& vring = backend_->vring(1);
    auto pop_one = [&] {
      auto chains = pop(vring);
      ASSERT_EQ(chains.size(), 1u);
      complete(vring, chains[0].head, 0);
    };
    ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("a"))));
    EXPECT_EQ(frontend_->kick_if_needed(1), true);  // a fresh ring wants kicks
    pop_one();
    std::visit([](auto& q) { q.disable_notifications(); }, vring.queue);
    ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("b"))));
    EXPECT_EQ(frontend_->kick_if_needed(1), false);  // the device is polling
    pop_one();
    EXPECT_FALSE(std::visit([](auto& q) { return q.enable_notifications(); }, vring.queue));
    ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("c"))));
    EXPECT_EQ(frontend_->kick_if_needed(1), true);  // asked again
    pop_one();
    uint64_t kicks = 0;
    EXPECT_EQ(::read(vring.kick.get(), &kicks, sizeof kicks), 8);
    EXPECT_EQ(kicks, 2u);
  }
}

// --- REPLY_ACK -----------------------------------------------------------------------------

TEST_F(VhostBackend, need_reply_with_reply_ack_answers_zero_for_done_and_one_for_refused) {
  start_session(kSplitOnly);
  const uint64_t acks_before = counters().acks_sent;
  EXPECT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{0, 256})), 0u);
  EXPECT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{0, 3})), 1u);
  EXPECT_EQ(counters().acks_sent - acks_before, 1u);
  EXPECT_EQ(counters().nacks_sent, 1u);
  EXPECT_EQ(counters().refused_by_handler, 1u);
  // Without NEED_REPLY, nothing comes back either way.
  send_expecting_no_reply(Request::kSetVringNum, bytes(VringState{0, 3}));
  send_expecting_no_reply(Request::kSetVringNum, bytes(VringState{0, 128}));
  EXPECT_EQ(backend_->vring(0).num, 128u);
}

TEST_F(VhostBackend, need_reply_without_reply_ack_negotiated_gets_no_answer) {
  const uint64_t protocol = kQemu72ProtocolFeatures & ~bit(ProtocolFeature::kReplyAck);
  start_session(kSplitOnly, protocol);
  send_expecting_no_reply(Request::kSetVringNum, bytes(VringState{0, 256}), {}, kFlagNeedReply);
  send_expecting_no_reply(Request::kSetVringNum, bytes(VringState{0, 5}), {}, kFlagNeedReply);
  EXPECT_EQ(counters().acks_sent + counters().nacks_sent, 0u);
  EXPECT_EQ(counters().refused_by_handler, 1u);
}

// --- Config space, MTU, RARP, status -------------------------------------------------------

Config config_request(uint32_t offset, uint32_t size) {
  Config c;
  c.head = ConfigHead{offset, size, 0};
  return c;
}

TEST_F(VhostBackend, get_config_copies_the_window_and_reads_past_the_device_config_as_zero) {
  start_session();
  const Config mac = config_request(0, 6);
  ASSERT_TRUE(
      succeeded(frontend_->send(Request::kGetConfig, bytes(mac).first(kConfigHeadSize + 6))));
  auto reply = frontend_->wait_reply(Request::kGetConfig);
  ASSERT_TRUE(succeeded(reply));
  ASSERT_EQ(reply->payload.size(), kConfigHeadSize + 6);
  const std::vector<uint8_t> mac_bytes(
      reinterpret_cast<const uint8_t*>(reply->payload.data()) + kConfigHeadSize,
      reinterpret_cast<const uint8_t*>(reply->payload.data()) + reply->payload.size());
  EXPECT_EQ(mac_bytes, (std::vector<uint8_t>{0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0}));

  // The last 4 of 12 device bytes, then 4 past its end.
  const Config tail = config_request(8, 8);
  ASSERT_TRUE(
      succeeded(frontend_->send(Request::kGetConfig, bytes(tail).first(kConfigHeadSize + 8))));
  reply = frontend_->wait_reply(Request::kGetConfig);
  ASSERT_TRUE(succeeded(reply));
  ConfigHead head;
  std::memcpy(&head, reply->payload.data(), sizeof head);
  EXPECT_EQ(head.offset, 8u);
  EXPECT_EQ(head.size, 8u);
  const std::vector<uint8_t> tail_bytes(
      reinterpret_cast<const uint8_t*>(reply->payload.data()) + kConfigHeadSize,
      reinterpret_cast<const uint8_t*>(reply->payload.data()) + reply->payload.size());
  EXPECT_EQ(tail_bytes, (std::vector<uint8_t>{2, 0, 0xdc, 0x05, 0, 0, 0, 0}));
}

TEST_F(VhostBackend, get_config_past_the_config_space_closes_the_connection) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  device_.take();
  const Config bad = config_request(250, 10);
  ASSERT_TRUE(
      succeeded(frontend_->send(Request::kGetConfig, bytes(bad).first(kConfigHeadSize + 10))));
  // The front-end waits for a reply that would have to be invented: the session ends instead.
  EXPECT_TRUE(fails_with(backend_->on_readable(), std::string(error::kProtocol), {"GET_CONFIG"}));
  EXPECT_TRUE(backend_->closed());
  EXPECT_EQ(device_.take(), words({"stop 0"}));
  EXPECT_EQ(counters().closed_on_refusal, 1u);
  EXPECT_EQ(counters().bad_payload, 1u);
  auto again = backend_->on_readable();
  ASSERT_TRUE(succeeded(again));
  EXPECT_EQ(*again, Backend::Status::kClosed);
}

TEST_F(VhostBackend, set_config_is_refused_politely_and_set_log_fd_is_kept) {
  start_session();
  const Config write = config_request(0, 6);
  EXPECT_EQ(ack_of(Request::kSetConfig, bytes(write).first(kConfigHeadSize + 6)), 1u);
  // SET_LOG_FD (live migration's optional log notifier) is accepted; vpd never signals it.
  Fd log(::eventfd(0, EFD_CLOEXEC));
  const int fd = log.get();
  EXPECT_EQ(ack_of(Request::kSetLogFd, {}, std::span<const int>(&fd, 1)), 0u);
  EXPECT_EQ(counters().refused_by_handler, 1u);
  EXPECT_TRUE(succeeded(frontend_->get_u64(Request::kGetFeatures)));
}

TEST_F(VhostBackend, mtu_rarp_and_status_reach_the_device_and_bad_values_are_refused) {
  start_session();
  device_.take();
  EXPECT_EQ(ack_of(Request::kNetSetMtu, bytes(uint64_t{9000})), 0u);
  EXPECT_EQ(ack_of(Request::kNetSetMtu, bytes(uint64_t{20})), 1u);
  EXPECT_EQ(ack_of(Request::kNetSetMtu, bytes(uint64_t{70000})), 1u);
  uint64_t mac = 0;
  const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  std::memcpy(&mac, guest_mac, sizeof guest_mac);
  EXPECT_EQ(ack_of(Request::kSendRarp, bytes(mac)), 0u);
  EXPECT_EQ(std::memcmp(device_.rarp_mac, guest_mac, 6), 0);
  EXPECT_EQ(ack_of(Request::kSetStatus, bytes(uint64_t{0x0f})), 0u);
  EXPECT_EQ(ack_of(Request::kSetStatus, bytes(uint64_t{0x100})), 1u);
  auto status = frontend_->get_u64(Request::kGetStatus);
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, 0x0fu);
  EXPECT_EQ(device_.take(), words({"mtu 9000", "rarp", "status 15"}));
}

// --- Memory slots --------------------------------------------------------------------------

TEST_F(VhostBackend, add_and_remove_memory_regions_one_at_a_time) {
  ASSERT_TRUE(succeeded(frontend_->negotiate(~uint64_t{0}, kQemu72ProtocolFeatures)));
  ASSERT_TRUE(succeeded(frontend_->add_mem_reg(0)));
  ASSERT_TRUE(succeeded(frontend_->add_mem_reg(1)));
  EXPECT_EQ(backend_->memory().region_count(), 2u);
  // The same region again overlaps itself.
  EXPECT_TRUE(fails_with(frontend_->add_mem_reg(0), "vhost-nack"));
  EXPECT_EQ(backend_->memory().region_count(), 2u);

  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 64)));  // ring and buffers in region 0
  device_.take();
  // The table changes under the data plane: the ring pauses around it.
  ASSERT_TRUE(succeeded(frontend_->rem_mem_reg(1)));
  EXPECT_EQ(device_.take(), words({"stop 0", "start 0"}));
  EXPECT_EQ(backend_->memory().region_count(), 1u);
  EXPECT_TRUE(fails_with(frontend_->rem_mem_reg(1), "vhost-nack"));

  // Removing the region the ring lives in stops it for good.
  ASSERT_TRUE(succeeded(frontend_->rem_mem_reg(0)));
  EXPECT_EQ(device_.take(), words({"stop 0"}));
  EXPECT_TRUE(backend_->memory().empty());
  EXPECT_FALSE(backend_->vring(0).started);
  EXPECT_EQ(counters().ring_start_failures, 0u);  // no memory: nothing to try
  ASSERT_TRUE(succeeded(frontend_->add_mem_reg(1)));
  EXPECT_EQ(counters().ring_start_failures, 1u);  // memory again, but not the ring's
  EXPECT_TRUE(device_.take().empty());
  ASSERT_TRUE(succeeded(frontend_->add_mem_reg(0)));
  EXPECT_EQ(device_.take(), words({"start 0"}));
}

TEST_F(VhostBackend, max_mem_slots_bound_add_mem_reg) {
  VhostFrontend::Options options;
  options.regions.clear();
  for (uint64_t i = 0; i <= kMaxMemSlots; ++i) options.regions.push_back({i << 20, 4096});
  frontend_.reset();
  backend_.reset();
  connect(options);
  ASSERT_TRUE(succeeded(frontend_->negotiate(~uint64_t{0}, kQemu72ProtocolFeatures)));
  for (uint32_t i = 0; i < kMaxMemSlots; ++i) ASSERT_TRUE(succeeded(frontend_->add_mem_reg(i)));
  EXPECT_TRUE(fails_with(frontend_->add_mem_reg(kMaxMemSlots), "vhost-nack"));
  EXPECT_EQ(backend_->memory().region_count(), kMaxMemSlots);
}

// --- Reset and disconnect ------------------------------------------------------------------

TEST_F(VhostBackend, reset_owner_stops_rings_and_forgets_them_and_the_features) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 16)));
  device_.take();
  ASSERT_TRUE(succeeded(frontend_->request(Request::kResetOwner)));
  EXPECT_EQ(device_.take(), words({"stop 0", "stop 1"}));
  for (uint32_t i = 0; i < kQueues; ++i) {
    const Vring& vring = backend_->vring(i);
    EXPECT_FALSE(vring.started || vring.enabled || vring.has_addr);
    EXPECT_FALSE(vring.kick.valid() || vring.call.valid());
    EXPECT_EQ(vring.num, 0u);
  }
  EXPECT_EQ(backend_->acked_features(), 0u);
  EXPECT_FALSE(backend_->owned());
  EXPECT_EQ(backend_->memory().region_count(), 2u);  // see reset_device()
  // The session goes on: a new negotiation starts the rings again.
  ASSERT_TRUE(succeeded(frontend_->negotiate(~uint64_t{0}, kQemu72ProtocolFeatures)));
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  EXPECT_EQ(device_.take().back(), "start 0");
}

TEST_F(VhostBackend, disconnect_stops_the_started_rings_only) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 16)));
  ASSERT_TRUE(succeeded(frontend_->setup_queue(2, 16, /*enable=*/false)));
  ASSERT_TRUE(succeeded(frontend_->setup_queue(3, 16, /*enable=*/false)));
  ASSERT_TRUE(succeeded(frontend_->get_vring_base(3)));  // stopped again
  device_.take();
  const uint64_t stopped = counters().rings_stopped;
  frontend_.reset();  // closes the socket
  auto status = backend_->on_readable();
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, Backend::Status::kClosed);
  // Ring 2 runs disabled; ring 3 was stopped by GET_VRING_BASE.
  EXPECT_EQ(device_.take(), words({"stop 0", "stop 1", "stop 2"}));
  EXPECT_EQ(counters().rings_stopped, stopped + 3);
  EXPECT_TRUE(backend_->closed());
}

// --- Hostile front-ends --------------------------------------------------------------------

TEST_F(VhostBackend, wrong_payload_sizes_are_refused_and_the_session_continues) {
  start_session();
  const std::array<std::byte, 12> twelve{};
  EXPECT_EQ(ack_of(Request::kSetFeatures, std::span(twelve).first(4)), 1u);
  EXPECT_EQ(ack_of(Request::kSetVringNum, std::span(twelve)), 1u);
  EXPECT_EQ(ack_of(Request::kSetVringAddr, std::span(twelve).first(8)), 1u);
  EXPECT_EQ(ack_of(Request::kSetOwner, std::span(twelve).first(8)), 1u);
  EXPECT_EQ(counters().bad_size, 4u);
  EXPECT_EQ(counters().requests_refused, 4u);
  auto features = frontend_->get_u64(Request::kGetFeatures);
  ASSERT_TRUE(succeeded(features));
  EXPECT_NE(*features, 0u);
}

TEST_F(VhostBackend, get_vring_base_with_a_short_payload_closes_the_connection) {
  start_session();
  const uint32_t index = 0;
  ASSERT_TRUE(succeeded(frontend_->send(Request::kGetVringBase, bytes(index))));
  EXPECT_TRUE(fails_with(backend_->on_readable(), std::string(error::kProtocol),
                         {"GET_VRING_BASE", "payload is 4 bytes"}));
  EXPECT_EQ(counters().closed_on_refusal, 1u);
  EXPECT_EQ(counters().bad_size, 1u);
}

TEST_F(VhostBackend, set_mem_table_with_missing_or_extra_fds_is_refused) {
  start_session();
  MemoryTable table;
  table.nregions = 1;
  table.regions[0] = {0x80000000, 4096, frontend_->region_uva(0), 0};
  const auto payload = bytes(table).first(kMemoryTableHeaderSize + sizeof(MemoryRegion));
  EXPECT_EQ(ack_of(Request::kSetMemTable, payload), 1u);  // no fd
  const int two[2] = {frontend_->region_fd(0), frontend_->region_fd(1)};
  EXPECT_EQ(ack_of(Request::kSetMemTable, payload, two), 1u);
  EXPECT_EQ(counters().bad_fds, 2u);
  EXPECT_EQ(backend_->memory().region_count(), 2u);  // the old table stays
}

TEST_F(VhostBackend, forty_fds_on_one_message_end_the_session_without_leaking) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  device_.take();
  std::vector<Fd> fds;
  for (int i = 0; i < 40; ++i) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  MemoryTable table;
  table.nregions = 8;
  const auto payload = bytes(table).first(kMemoryTableHeaderSize + 8 * sizeof(MemoryRegion));
  std::vector<std::byte> wire(kHeaderSize + payload.size());
  const Header header{code(Request::kSetMemTable), kVersion, static_cast<uint32_t>(payload.size())};
  std::memcpy(wire.data(), &header, kHeaderSize);
  std::memcpy(wire.data() + kHeaderSize, payload.data(), payload.size());
  alignas(cmsghdr) unsigned char control[CMSG_SPACE(40 * sizeof(int))] = {};
  iovec iov{wire.data(), wire.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(40 * sizeof(int));
  for (int i = 0; i < 40; ++i) {
    const int raw = fds[i].get();
    std::memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &raw, sizeof raw);
  }
  ASSERT_EQ(::sendmsg(frontend_->socket(), &msg, MSG_NOSIGNAL), static_cast<ssize_t>(wire.size()));
  EXPECT_TRUE(fails_with(backend_->on_readable(), std::string(kErrorFraming)));
  EXPECT_EQ(device_.take(), words({"stop 0"}));
}

TEST_F(VhostBackend, set_mem_table_with_a_pipe_or_a_too_small_file_is_refused_without_a_fault) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  device_.take();
  MemoryTable table;
  table.nregions = 1;
  table.regions[0] = {0x40000000, 1 << 20, frontend_->region_uva(0), 0};
  const auto payload = bytes(table).first(kMemoryTableHeaderSize + sizeof(MemoryRegion));

  int pipe_fds[2] = {-1, -1};
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  Fd pipe_read(pipe_fds[0]), pipe_write(pipe_fds[1]);
  const int pipe_fd = pipe_read.get();
  EXPECT_EQ(ack_of(Request::kSetMemTable, payload, std::span<const int>(&pipe_fd, 1)), 1u);

  Fd event(::eventfd(0, EFD_CLOEXEC));
  const int event_fd = event.get();
  EXPECT_EQ(ack_of(Request::kSetMemTable, payload, std::span<const int>(&event_fd, 1)), 1u);

  // A 4 KiB memfd described as 1 MiB: mmap would succeed and the first touch past 4 KiB
  // would kill vpd with SIGBUS.
  Fd small(::memfd_create("small", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(small.get(), 4096), 0);
  const int small_fd = small.get();
  EXPECT_EQ(ack_of(Request::kSetMemTable, payload, std::span<const int>(&small_fd, 1)), 1u);
  // An offset past the end of the file, likewise.
  table.regions[0] = {0x40000000, 4096, frontend_->region_uva(0), 8192};
  EXPECT_EQ(ack_of(Request::kSetMemTable, bytes(table).first(payload.size()),
                   std::span<const int>(&small_fd, 1)),
            1u);

  EXPECT_EQ(counters().refused_by_handler, 4u);
  // Nothing was installed, and the running ring was never disturbed.
  EXPECT_EQ(backend_->memory().region_count(), 2u);
  EXPECT_TRUE(device_.take().empty());
  EXPECT_TRUE(backend_->vring(0).started);
}

TEST_F(VhostBackend, overlapping_regions_are_refused_and_the_old_table_stays) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  device_.take();
  MemoryTable table;
  table.nregions = 2;
  table.regions[0] = {0x40000000, 1 << 20, frontend_->region_uva(0), 0};
  table.regions[1] = {0x40080000, 1 << 20, frontend_->region_uva(1), 0};  // guest overlap
  const int fds[2] = {frontend_->region_fd(0), frontend_->region_fd(1)};
  const auto payload = bytes(table).first(kMemoryTableHeaderSize + 2 * sizeof(MemoryRegion));
  EXPECT_EQ(ack_of(Request::kSetMemTable, payload, fds), 1u);
  // Same user address twice, distinct guest ranges.
  table.regions[1] = {0x100000000, 1 << 20, frontend_->region_uva(0), 0};
  EXPECT_EQ(ack_of(Request::kSetMemTable, payload, fds), 1u);
  EXPECT_EQ(counters().refused_by_handler, 2u);
  EXPECT_EQ(backend_->memory().region_count(), 2u);
  EXPECT_EQ(backend_->memory().regions()[1].guest_phys_addr, 0x100000000u);
  EXPECT_TRUE(device_.take().empty());
}

TEST_F(VhostBackend, ring_addresses_outside_guest_memory_are_refused_and_the_ring_never_starts) {
  start_session(kSplitOnly);
  ASSERT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{2, 64})), 0u);
  // A well-formed split ring of 64 entries, for reference.
  const uint64_t desc = *frontend_->allocate(0, 16 * 64, 16);
  const uint64_t avail = *frontend_->allocate(0, 6 + 2 * 64, 2);
  const uint64_t used = *frontend_->allocate(0, 6 + 8 * 64, 4);
  VringAddr good;
  good.index = 2;
  good.desc_user_addr = frontend_->uva(desc);
  good.avail_user_addr = frontend_->uva(avail);
  good.used_user_addr = frontend_->uva(used);

  VringAddr addr = good;
  addr.desc_user_addr = 0x1000;  // nobody's memory
  EXPECT_EQ(ack_of(Request::kSetVringAddr, bytes(addr)), 1u);
  // The last descriptors hang over the end of region 0.
  const auto& r0 = frontend_->region(0);
  addr.desc_user_addr = frontend_->uva(r0.gpa + r0.size - 16 * 32);
  EXPECT_EQ(ack_of(Request::kSetVringAddr, bytes(addr)), 1u);
  // Inside memory but misaligned (virtio 1.2 §2.7: 16 bytes).
  addr.desc_user_addr = good.desc_user_addr + 8;
  EXPECT_EQ(ack_of(Request::kSetVringAddr, bytes(addr)), 1u);
  // A used ring overlapping the descriptor table.
  addr = good;
  addr.used_user_addr = good.desc_user_addr + 64;
  EXPECT_EQ(ack_of(Request::kSetVringAddr, bytes(addr)), 1u);
  // A flag the spec does not define (VHOST_VRING_F_LOG, bit 0, is the only one).
  addr = good;
  addr.flags = kVringFlagLog << 1;
  EXPECT_EQ(ack_of(Request::kSetVringAddr, bytes(addr)), 1u);
  EXPECT_EQ(counters().refused_by_handler, 5u);

  Fd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int kick_fd = kick.get();
  EXPECT_EQ(ack_of(Request::kSetVringKick, bytes(uint64_t{2}), std::span<const int>(&kick_fd, 1)),
            0u);
  EXPECT_EQ(ack_of(Request::kSetVringCall, bytes(uint64_t{2} | kVringNoFdMask)), 0u);
  EXPECT_EQ(ack_of(Request::kSetVringEnable, bytes(VringState{2, 1})), 0u);
  EXPECT_FALSE(backend_->vring(2).started);
  EXPECT_FALSE(backend_->vring(2).has_addr);
  device_.take();
  // The good addresses start it at once: everything else was in place.
  EXPECT_EQ(ack_of(Request::kSetVringAddr, bytes(good)), 0u);
  EXPECT_EQ(device_.take(), words({"start 2"}));
  EXPECT_EQ(backend_->vring(2).config.desc_addr, desc);
}

TEST_F(VhostBackend, queue_index_out_of_range_is_refused_and_get_closes) {
  start_session();
  EXPECT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{kQueues, 64})), 1u);
  EXPECT_EQ(ack_of(Request::kSetVringEnable, bytes(VringState{1000, 1})), 1u);
  Fd call(::eventfd(0, EFD_CLOEXEC));
  const int call_fd = call.get();
  EXPECT_EQ(ack_of(Request::kSetVringCall, bytes(uint64_t{200}), std::span<const int>(&call_fd, 1)),
            1u);
  EXPECT_EQ(counters().bad_queue, 3u);
  ASSERT_TRUE(succeeded(frontend_->send(Request::kGetVringBase, bytes(VringState{kQueues, 0}))));
  EXPECT_TRUE(fails_with(backend_->on_readable(), std::string(error::kProtocol), {"out of range"}));
  EXPECT_EQ(counters().bad_queue, 4u);
}

TEST_F(VhostBackend, set_mem_table_while_rings_run_stops_them_then_restarts_at_the_same_place) {
  start_session(kSplitOnly);
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  ASSERT_TRUE(succeeded(frontend_->setup_queue(1, 16)));
  ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("first"))));
  ASSERT_TRUE(succeeded(frontend_->post_tx(1, text("second"))));
  auto popped = pop(backend_->vring(1), 1);
  ASSERT_EQ(popped.size(), 1u);
  complete(backend_->vring(1), popped[0].head, 0);
  const std::byte* old_host = backend_->memory().regions()[0].host;
  device_.take();

  ASSERT_TRUE(succeeded(frontend_->set_mem_table()));  // QEMU re-sends it on every start
  EXPECT_EQ(device_.take(), words({"stop 0", "stop 1", "start 0", "start 1"}));
  EXPECT_NE(backend_->memory().regions()[0].host, old_host);  // remapped
  popped = pop(backend_->vring(1));
  ASSERT_EQ(popped.size(), 1u);
  EXPECT_EQ(popped[0].readable, "second");
  complete(backend_->vring(1), popped[0].head, 0);
  EXPECT_EQ(backend_->vring(1).base(), 2u);
  EXPECT_TRUE(frontend_->next_used(1).has_value());
  EXPECT_TRUE(frontend_->next_used(1).has_value());
}

TEST_F(VhostBackend, vring_num_zero_not_a_power_of_two_or_over_32768_is_refused) {
  start_session(kSplitOnly);
  for (uint32_t num : {0u, 3u, 384u, 32769u, 65536u, 0xffffffffu}) {
    EXPECT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{0, num})), 1u) << num;
  }
  for (uint32_t num : {1u, 256u, 32768u}) {
    EXPECT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{0, num})), 0u) << num;
  }
  EXPECT_EQ(backend_->vring(0).num, 32768u);
}

TEST_F(VhostBackend, packed_vring_num_may_be_any_size_up_to_32768) {
  start_session();
  EXPECT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{0, 384})), 0u);
  EXPECT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{0, 0})), 1u);
  EXPECT_EQ(ack_of(Request::kSetVringNum, bytes(VringState{0, 32769})), 1u);
  // A base naming an entry past the ring.
  EXPECT_EQ(ack_of(Request::kSetVringBase, bytes(VringState{0, 400})), 1u);
  EXPECT_EQ(ack_of(Request::kSetVringBase, bytes(VringState{0, 383 | (1u << 15)})), 0u);
}

TEST_F(VhostBackend, unknown_and_unsupported_requests_are_refused_and_the_session_continues) {
  start_session();
  EXPECT_EQ(ack_of(static_cast<Request>(99), {}), 1u);
  EXPECT_EQ(ack_of(static_cast<Request>(kRequestLimit), text("junk")), 1u);
  send_expecting_no_reply(static_cast<Request>(0));
  EXPECT_EQ(ack_of(Request::kVringKick, bytes(VringState{0, 0})), 1u);  // spec'd, not offered
  EXPECT_EQ(counters().unknown_request, 3u);
  EXPECT_EQ(counters().unsupported_request, 1u);
  // A request that needs a protocol feature that was not negotiated (BACKEND_REQ).
  Fd channel(::eventfd(0, EFD_CLOEXEC));
  const int channel_fd = channel.get();
  EXPECT_EQ(ack_of(Request::kSetBackendReqFd, {}, std::span<const int>(&channel_fd, 1)), 1u);
  EXPECT_EQ(counters().not_negotiated, 1u);
  // A flag the spec does not define.
  EXPECT_EQ(ack_of(Request::kSetOwner, {}, {}, kFlagNeedReply | 0x100), 1u);
  EXPECT_EQ(counters().bad_flags, 1u);
  EXPECT_TRUE(succeeded(frontend_->get_u64(Request::kGetFeatures)));
  EXPECT_FALSE(backend_->closed());
}

TEST_F(VhostBackend, gated_requests_need_their_protocol_feature) {
  start_session(~uint64_t{0}, bit(ProtocolFeature::kReplyAck));
  EXPECT_TRUE(fails_with(frontend_->add_mem_reg(0), "vhost-nack"));
  EXPECT_EQ(ack_of(Request::kNetSetMtu, bytes(uint64_t{1500})), 1u);
  EXPECT_EQ(counters().not_negotiated, 2u);
  // GET_QUEUE_NUM without MQ waits for an answer: refused by closing.
  ASSERT_TRUE(succeeded(frontend_->send(Request::kGetQueueNum)));
  EXPECT_TRUE(
      fails_with(backend_->on_readable(), std::string(error::kProtocol), {"GET_QUEUE_NUM", "MQ"}));
}

TEST_F(VhostBackend, features_not_offered_or_refused_by_the_device_leave_the_old_ones) {
  start_session();
  const uint64_t acked = backend_->acked_features();
  EXPECT_EQ(ack_of(Request::kSetFeatures, bytes(acked | (uint64_t{1} << 63))), 1u);
  EXPECT_EQ(ack_of(Request::kSetFeatures, bytes(acked | kFeatureAccessPlatform)), 1u);
  EXPECT_EQ(ack_of(Request::kSetProtocolFeatures, bytes(bit(ProtocolFeature::kInflightShmfd))), 1u);
  device_.refuse_features = true;
  EXPECT_EQ(ack_of(Request::kSetFeatures, bytes(acked & ~kNetCsum)), 1u);
  EXPECT_EQ(backend_->acked_features(), acked);
  EXPECT_EQ(counters().refused_by_handler, 4u);
}

TEST_F(VhostBackend, repeated_set_features_does_not_disturb_running_rings_but_a_change_does) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  device_.take();
  const uint64_t acked = backend_->acked_features();
  // QEMU sends SET_FEATURES once per queue pair, the first pair already running.
  EXPECT_EQ(ack_of(Request::kSetFeatures, bytes(acked)), 0u);
  EXPECT_TRUE(device_.take().empty());
  EXPECT_EQ(ack_of(Request::kSetFeatures, bytes(acked & ~virtio::kFeatureEventIdx)), 0u);
  const std::string features =
      str("features ", acked & ~virtio::kFeatureEventIdx & ~kFeatureProtocolFeatures);
  EXPECT_EQ(device_.take(), words({"stop 0", features.c_str(), "start 0"}));
}

TEST_F(VhostBackend, kick_without_fd_is_refused_and_call_without_fd_means_polling_driver) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  device_.take();
  EXPECT_EQ(ack_of(Request::kSetVringKick, bytes(uint64_t{0} | kVringNoFdMask)), 1u);
  EXPECT_TRUE(device_.take().empty());  // the old kick stays
  EXPECT_EQ(ack_of(Request::kSetVringCall, bytes(uint64_t{0} | kVringNoFdMask)), 0u);
  EXPECT_EQ(device_.take(), words({"stop 0", "start 0"}));
  EXPECT_FALSE(backend_->vring(0).call.valid());
  EXPECT_TRUE(backend_->vring(0).started);
}

TEST_F(VhostBackend, new_call_fd_on_a_running_ring_restarts_it_with_a_nonblocking_fd) {
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  device_.take();
  // A blocking pipe as call fd: the engine must not let a write on it block a worker.
  int pipe_fds[2] = {-1, -1};
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  Fd pipe_read(pipe_fds[0]), pipe_write(pipe_fds[1]);
  const int fd = pipe_write.get();
  EXPECT_EQ(ack_of(Request::kSetVringCall, bytes(uint64_t{0}), std::span<const int>(&fd, 1)), 0u);
  EXPECT_EQ(device_.take(), words({"stop 0", "start 0"}));
  ASSERT_TRUE(backend_->vring(0).call.valid());
  EXPECT_NE(::fcntl(backend_->vring(0).call.get(), F_GETFL) & O_NONBLOCK, 0);
}

TEST_F(VhostBackend, front_end_that_never_reads_replies_backs_up_the_writer_without_blocking) {
  start_session();
  // A small send buffer so the replies back up after a few dozen.
  const int small = 4096;
  ASSERT_EQ(::setsockopt(backend_->fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  constexpr size_t kRequests = 2000;
  constexpr uint64_t kOffered =
      (kDeviceFeatures & ~kEngineWithheldFeatures) | kFeatureProtocolFeatures;
  std::vector<std::byte> burst(kRequests * kHeaderSize);
  const Header get{code(Request::kGetFeatures), kVersion, 0};
  for (size_t i = 0; i < kRequests; ++i) std::memcpy(&burst[i * kHeaderSize], &get, kHeaderSize);
  size_t sent = 0;
  while (sent < burst.size()) {
    const ssize_t n = ::send(frontend_->socket(), burst.data() + sent, burst.size() - sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << std::strerror(errno);
    sent += static_cast<size_t>(n);
  }
  const uint64_t handled_before = counters().requests_handled;
  auto status = backend_->on_readable();  // returns: it does not wait for the reader
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, Backend::Status::kOpen);
  EXPECT_TRUE(backend_->wants_write());
  const uint64_t handled = counters().requests_handled - handled_before;
  EXPECT_GT(handled, 0u);
  EXPECT_LT(handled, kRequests);
  // Still stuck: no progress, no spin, no reading ahead.
  status = backend_->on_readable();
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(counters().requests_handled - handled_before, handled);

  // The front-end finally reads; each EPOLLOUT lets more through, none is lost.
  frontend_->set_pump([this] { last_ = backend_->on_writable(); });
  for (size_t i = 0; i < kRequests; ++i) {
    auto reply = frontend_->wait_reply(Request::kGetFeatures);
    ASSERT_TRUE(succeeded(reply)) << "reply " << i;
    ASSERT_EQ(reply->u64(), kOffered) << "reply " << i;
  }
  EXPECT_EQ(counters().requests_handled - handled_before, kRequests);
  EXPECT_FALSE(backend_->wants_write());
  EXPECT_FALSE(frontend_->reply_ready());
}

TEST_F(VhostBackend, random_well_framed_messages_never_crash_the_engine_or_leak_fds) {
  std::mt19937_64 rng(20240611);
  Fd ram(::memfd_create("random-ram", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(ram.get(), 1 << 20), 0);
  Fd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  start_session();
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  uint64_t handled = 0, refused = 0;
  int sessions = 1;
  std::vector<std::byte> payload;
  for (int i = 0; i < 10000; ++i) {
    if (backend_->closed()) {  // a refused GET_* ends the session; start another
      handled += counters().requests_handled;
      refused += counters().requests_refused;
      frontend_.reset();
      backend_.reset();
      connect();
      start_session();
      ++sessions;
    }
    // Mostly requests without a reply body: a refused GET_* ends the session, which keeps
    // the engine's state shallow.
    auto request = static_cast<uint32_t>(rng() % (kRequestLimit + 4));
    while (rng() % 10 != 0 && find_rule(request) != nullptr &&
           find_rule(request)->reply == Reply::kAlways) {
      request = static_cast<uint32_t>(rng() % (kRequestLimit + 4));
    }
    uint32_t flags = kVersion;
    if (rng() % 2 == 0) flags |= kFlagNeedReply;
    if (rng() % 16 == 0) flags = static_cast<uint32_t>(rng());
    // Mostly the size the table expects for this request, so handlers see random values.
    const RequestRule* rule = find_rule(request);
    uint32_t size = static_cast<uint32_t>(rng() % 64);
    if (rule != nullptr && rng() % 4 != 0) {
      size = rule->min_size + static_cast<uint32_t>(rng() % (rule->max_size - rule->min_size + 1));
    }
    payload.resize(size);
    for (std::byte& b : payload) b = static_cast<std::byte>(rng() % 4 == 0 ? rng() : 0);
    // Small queue indices and plausible values now and then.
    if (size >= 4 && rng() % 2 == 0) {
      const auto index = static_cast<uint32_t>(rng() % (kQueues + 1));
      std::memcpy(payload.data(), &index, sizeof index);
    }
    std::vector<int> fds;
    switch (rng() % 4) {
      case 0:
        fds.push_back(ram.get());
        break;
      case 1:
        fds.push_back(event.get());
        break;
      case 2:
        fds.push_back(event.get());
        fds.push_back(ram.get());
        break;
      default:
        break;
    }
    const Header header{request, flags, size};
    ASSERT_TRUE(succeeded(frontend_->send_raw(header, payload, fds)));
    pump();
    // Throw the replies away.
    std::array<std::byte, 4096> sink;
    while (::recv(frontend_->socket(), sink.data(), sink.size(), MSG_DONTWAIT) > 0) {
    }
  }
  handled += counters().requests_handled;
  refused += counters().requests_refused;
  EXPECT_GT(handled, 1000u);
  EXPECT_GT(refused, 1000u);
  RecordProperty("sessions", sessions);
}

}  // namespace
}  // namespace vp::vhost

namespace vp::vhost {
namespace {

// --- Dirty logging (live migration) --------------------------------------------------------

uint64_t page_of(uint64_t gpa) { return gpa / virtio::kLogPageSize; }

TEST_F(VhostBackend, set_log_base_answers_zero_and_logging_follows_log_all_and_the_vring_flag) {
  start_session(~kFeatureLogAll);
  EXPECT_NE(frontend_->acked_protocol_features() & bit(ProtocolFeature::kLogShmfd), 0u);
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  // The answer is a u64 0 (the frontend would fail on anything but a SET_LOG_BASE reply).
  ASSERT_TRUE(succeeded(frontend_->set_log_base(frontend_->log_bytes_needed())));
  EXPECT_EQ(counters().log_bases_set, 1u);
  EXPECT_FALSE(backend_->logging());  // LOG_ALL not acked yet
  EXPECT_TRUE(backend_->vring(0).started);

  ASSERT_TRUE(succeeded(frontend_->set_logging(true)));
  EXPECT_TRUE(backend_->logging());
  Vring& rx = backend_->vring(0);
  ASSERT_TRUE(rx.started);
  EXPECT_TRUE(std::visit([](const auto& q) { return q.logging(); }, rx.queue));

  // The data plane's part: a buffer filled (log_written) and given back.
  auto id = frontend_->post_rx(0, 100);
  ASSERT_TRUE(succeeded(id));
  ASSERT_TRUE(succeeded(frontend_->kick(0)));
  auto popped = pop(rx);
  ASSERT_EQ(popped.size(), 1u);
  std::visit([&](auto& q) { q.log_written(popped[0].writable, 100); }, rx.queue);
  complete(rx, popped[0].head, 100);
  const auto layout = frontend_->layout(0);
  ASSERT_TRUE(layout);
  const auto* buffer = frontend_->buffer(0, *id).data();
  const uint64_t buffer_gpa =
      frontend_->region(0).gpa + (reinterpret_cast<uint64_t>(buffer) - frontend_->region_uva(0));
  std::set<uint64_t> expected{page_of(buffer_gpa), page_of(buffer_gpa + 99),
                              page_of(layout->device + 2), page_of(layout->device + 4)};
  const auto dirty = frontend_->dirty_pages();
  EXPECT_EQ(std::set<uint64_t>(dirty.begin(), dirty.end()), expected);

  // Logging off: nothing more is marked.
  ASSERT_TRUE(succeeded(frontend_->set_logging(false)));
  EXPECT_FALSE(backend_->logging());
  frontend_->clear_dirty_log();
  ASSERT_TRUE(succeeded(frontend_->post_rx(0, 100)));
  popped = pop(rx);
  ASSERT_EQ(popped.size(), 1u);
  std::visit([&](auto& q) { q.log_written(popped[0].writable, 100); }, rx.queue);
  complete(rx, popped[0].head, 100);
  EXPECT_TRUE(frontend_->dirty_pages().empty());
}

TEST_F(VhostBackend, a_second_log_base_replaces_the_first_with_rings_stopped_around_it) {
  start_session(~kFeatureLogAll);
  ASSERT_TRUE(succeeded(frontend_->setup_queue(0, 16)));
  ASSERT_TRUE(succeeded(frontend_->set_log_base(frontend_->log_bytes_needed())));
  device_.take();
  ASSERT_TRUE(succeeded(frontend_->set_log_base(2 * frontend_->log_bytes_needed(), 4096)));
  EXPECT_EQ(device_.take(), words({"stop 0", "start 0"}));
  EXPECT_EQ(counters().log_bases_set, 2u);
  EXPECT_EQ(backend_->dirty_log().bytes(), 2 * frontend_->log_bytes_needed());
}

// A SET_LOG_BASE vpd cannot take ends the session: the front-end waits for an answer that
// would say it worked.
class VhostBackendBadLog : public VhostBackend {
 protected:
  // Sends SET_LOG_BASE with `desc` and `fd` and expects the session to end naming `what`.
  void expect_refused(const LogDescription& desc, int fd, std::string_view what) {
    start_session(~kFeatureLogAll);
    ASSERT_TRUE(succeeded(
        frontend_->send(Request::kSetLogBase, bytes(desc), std::span<const int>(&fd, 1))));
    EXPECT_TRUE(
        fails_with(backend_->on_readable(), std::string(error::kProtocol), {"SET_LOG_BASE", what}));
    EXPECT_EQ(counters().closed_on_refusal, 1u);
    EXPECT_TRUE(backend_->closed());
  }
  Fd memfd(uint64_t size) {
    Fd fd(::memfd_create("log", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    return fd;
  }
};

TEST_F(VhostBackendBadLog, size_zero) {
  Fd fd = memfd(4096);
  expect_refused({0, 0}, fd.get(), "the log size is 0");
}

TEST_F(VhostBackendBadLog, offset_plus_size_wraps) {
  Fd fd = memfd(4096);
  expect_refused({4096, ~uint64_t{0} - 100}, fd.get(), "wraps");
}

TEST_F(VhostBackendBadLog, log_past_the_end_of_its_file) {
  Fd fd = memfd(4096);
  expect_refused({4096 * 16, 4096}, fd.get(), "the file holds 4096 bytes");
}

TEST_F(VhostBackendBadLog, fd_that_is_not_a_memory_file) {
  Fd fd(::eventfd(0, EFD_CLOEXEC));
  expect_refused({4096, 0}, fd.get(), "not a memory file");
}

TEST_F(VhostBackendBadLog, log_too_small_for_guest_memory) {
  // The default guest memory ends at 4 GiB + 4 MiB: one byte of log covers 32 KiB.
  Fd fd = memfd(4096);
  expect_refused({4096, 0}, fd.get(), "its regions end at");
}

}  // namespace
}  // namespace vp::vhost
