// vhost-user endpoints against a real vpd: a test front-end (memfd guest memory, real rings,
// real vhost-user messages over the bind socket) exchanges frames with the kernel through
// the endpoint's TAP, inside a private network namespace.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include "support/harness.hpp"
#include "support/vhost_frontend.hpp"
#include "sys/unix_socket.hpp"
#include "virtio/queue.hpp"

namespace vp::test {
namespace {

using std::chrono::steady_clock;

constexpr std::array<uint8_t, 6> kGuestMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr uint32_t kRx = 0;
constexpr uint32_t kTx = 1;
constexpr uint64_t kGsoFeatures = (1ull << 11) | (1ull << 12);  // HOST_TSO4, HOST_TSO6
constexpr uint64_t kNetFMq = 1ull << 22;
// Queue pair 1 (multiqueue): receiveq2 and transmitq2.
constexpr uint32_t kRx1 = 2;
constexpr uint32_t kTx1 = 3;

// A virtio_net_hdr_mrg_rxbuf (12 zero bytes: no offload) and an ARP request asking who
// has `target` (10.98.0.x), from the guest's MAC and 10.98.0.`sender`.
std::vector<std::byte> arp_request(uint8_t target, uint8_t gso_type = 0, uint8_t sender = 2) {
  std::vector<uint8_t> f(12, 0);
  f[1] = gso_type;
  if (gso_type) f[0] = 1;  // NEEDS_CSUM, so only the missing GSO feature is wrong
  auto put = [&](std::initializer_list<uint8_t> bytes) { f.insert(f.end(), bytes); };
  put({0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
  put({0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01});
  f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
  put({10, 98, 0, sender, 0, 0, 0, 0, 0, 0, 10, 98, 0, target});
  if (gso_type) {  // offsets that would be valid for a TCP frame: only the feature is missing
    f[2] = 0x40;   // gso_size 0x0040... any non-zero value
    f[4] = 0x10;
    f[6] = 14;  // csum_start
    f[8] = 16;  // csum_offset
  }
  std::vector<std::byte> out(f.size());
  std::memcpy(out.data(), f.data(), f.size());
  return out;
}

class VhostUser : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    ASSERT_EQ(enter_private_netns(), "");
    vpd_ = std::make_unique<Vpd>(dir_.path());
    ASSERT_EQ(vpd_->start(), "");
    ASSERT_EQ(vpd_->ctl({"vp0", "create", "address=10.98.0.1/24", "up"}).status, 0);
  }

  // Connects, negotiates (split or packed per the test parameter) and starts both rings.
  void attach(uint64_t without = 0) {
    auto fe = VhostFrontend::connect(vpd_->runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
    ASSERT_TRUE(fe) << fe.error().message;
    fe_ = std::move(*fe);
    uint64_t features = ~0ull & ~without;
    if (!GetParam()) features &= ~virtio::kFeatureRingPacked;
    ASSERT_TRUE(fe_->negotiate(features, ~0ull)) << vpd_->log();
    ASSERT_TRUE(fe_->set_mem_table()) << vpd_->log();
    ASSERT_TRUE(fe_->setup_queue(kRx, 256)) << vpd_->log();
    ASSERT_TRUE(fe_->setup_queue(kTx, 256)) << vpd_->log();
    ASSERT_EQ(fe_->acked_features() & virtio::kFeatureRingPacked ? true : false, GetParam());
    wait_link_up();
  }

  // Connects to a queues=2 endpoint, negotiates MQ and sets up all four rings; pair 1 is
  // enabled only with `enable_pair1`.
  void attach_two_pairs(bool enable_pair1) {
    ASSERT_EQ(vpd_->ctl({"vp0", "queues=2"}).status, 0) << vpd_->log();
    auto fe = VhostFrontend::connect(vpd_->runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
    ASSERT_TRUE(fe) << fe.error().message;
    fe_ = std::move(*fe);
    uint64_t features = ~0ull;
    if (!GetParam()) features &= ~virtio::kFeatureRingPacked;
    ASSERT_TRUE(fe_->negotiate(features, ~0ull)) << vpd_->log();
    ASSERT_NE(fe_->acked_features() & kNetFMq, 0u) << "vpd offers VIRTIO_NET_F_MQ";
    ASSERT_GE(fe_->queue_num(), 2u) << "GET_QUEUE_NUM covers both pairs";
    // QEMU 7.2 sends ADD_MEM_REG once per pair; vpd offers only SET_MEM_TABLE with MQ.
    ASSERT_EQ(
        fe_->acked_protocol_features() & vhost::bit(vhost::ProtocolFeature::kConfigureMemSlots),
        0u);
    ASSERT_TRUE(fe_->set_mem_table()) << vpd_->log();
    for (uint32_t ring = 0; ring < 4; ++ring) {
      ASSERT_TRUE(fe_->setup_queue(ring, 256, ring < 2 || enable_pair1)) << vpd_->log();
    }
    wait_link_up();
  }

  // Carrier on is not enough: the kernel activates the TAP's qdisc (and sets operstate UP)
  // from its linkwatch work, a little later (longer on a busy machine); until then it drops
  // what it sends there, e.g. the ARP reply a test waits for.
  void wait_link_up() {
    for (int i = 0; i < 300; ++i) {
      if (link_json("vp0").value("operstate", "") == "UP") return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "vp0 is not operationally up: " << link_json("vp0").dump();
  }

  // Waits until vpd reports `n` started virtqueues; returns the last count seen.
  uint32_t wait_queues_running(uint32_t n) {
    uint32_t running = 0;
    for (int i = 0; i < 250; ++i) {
      running = vpd_->ctl_json({"vp0"})["status"]["session"].value("queues_running", 0u);
      if (running == n) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return running;
  }

  // Sends one UDP datagram to 10.98.0.2:9 (the guest, a permanent neighbour) from each of
  // `flows` source ports: flows the kernel spreads over the TAP's attached queues by hash.
  void send_udp_flows(int flows) {
    ASSERT_TRUE(sh("ip neigh replace 10.98.0.2 lladdr 52:54:00:12:34:56 dev vp0 nud permanent"));
    for (int i = 0; i < flows; ++i) {
      Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      ASSERT_TRUE(s);
      sockaddr_in from{};
      from.sin_family = AF_INET;
      from.sin_port = htons(static_cast<uint16_t>(40000 + i));
      ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&from), sizeof from), 0);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(9);
      ::inet_pton(AF_INET, "10.98.0.2", &to.sin_addr);
      const char payload[] = "flow";
      ASSERT_EQ(::sendto(s.get(), payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&to),
                         sizeof to),
                static_cast<ssize_t>(sizeof payload));
    }
  }

  // Counts the UDP datagrams to 10.98.0.2:9 among the used buffers of `rings` (each with its
  // counter), until the counters add up to `total` or `timeout` passes. Every buffer used is
  // made available again, as a driver does.
  void count_udp_flows(std::initializer_list<std::pair<uint32_t, int*>> rings, int total,
                       std::chrono::seconds timeout) {
    const auto deadline = steady_clock::now() + timeout;
    auto sum = [&] {
      int n = 0;
      for (const auto& [ring, count] : rings) n += *count;
      return n;
    };
    while (sum() < total && steady_clock::now() < deadline) {
      bool any = false;
      for (const auto& [ring, count] : rings) {
        while (auto used = fe_->next_used(ring)) {
          any = true;
          const auto buf = fe_->buffer(ring, used->id);
          if (used->len < 12u + 42u) continue;
          // Past the vnet header: Ethernet, IPv4 (no options), UDP.
          const auto* b = reinterpret_cast<const uint8_t*>(buf.data()) + 12;
          const bool udp = b[12] == 0x08 && b[13] == 0x00 && b[23] == 17;
          const bool to_guest = b[30] == 10 && b[31] == 98 && b[32] == 0 && b[33] == 2;
          if (udp && to_guest && b[36] == 0 && b[37] == 9) ++*count;
        }
        if (any) {
          while (fe_->outstanding(ring) < 64 && fe_->post_rx(ring)) {
          }
          (void)fe_->kick(ring);
        }
      }
      if (!any) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  uint64_t kernel_rx_packets() {
    return ip_json({"-s", "link", "show", "dev", "vp0"})[0]["stats64"]["rx"].value("packets", 0);
  }

  std::optional<UsedBuffer> wait_used(uint32_t ring, std::chrono::seconds timeout) {
    const auto deadline = steady_clock::now() + timeout;
    while (steady_clock::now() < deadline) {
      if (auto used = fe_->next_used(ring)) return used;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
  }

  nlohmann::json counters() { return vpd_->ctl_json({"vp0"})["status"]["counters"]; }

  TempDir dir_;
  std::unique_ptr<Vpd> vpd_;
  std::unique_ptr<VhostFrontend> fe_;
};

TEST_P(VhostUser, guest_arp_request_reaches_the_kernel_and_its_reply_reaches_the_guest) {
  attach();
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(fe_->post_rx(kRx));
  ASSERT_TRUE(fe_->kick(kRx));
  ASSERT_TRUE(fe_->post_tx(kTx, arp_request(1)));
  ASSERT_TRUE(fe_->kick(kTx));

  auto sent = wait_used(kTx, std::chrono::seconds(5));
  ASSERT_TRUE(sent) << "vpd did not give the TX buffer back\n" << vpd_->log();
  // The kernel answers the ARP request for its own address on vp0.
  bool got_reply = false;
  const auto deadline = steady_clock::now() + std::chrono::seconds(5);
  while (!got_reply && steady_clock::now() < deadline) {
    auto used = wait_used(kRx, std::chrono::seconds(1));
    if (!used) continue;
    auto buf = fe_->buffer(kRx, used->id);
    ASSERT_GE(used->len, 12u + 42u);
    const auto* b = reinterpret_cast<const uint8_t*>(buf.data()) + 12;  // past the vnet header
    const bool arp = b[12] == 0x08 && b[13] == 0x06 && b[21] == 2;      // ARP reply
    if (arp && std::memcmp(b, kGuestMac.data(), 6) == 0 && b[28] == 10 && b[31] == 1) {
      got_reply = true;
    }
  }
  EXPECT_TRUE(got_reply) << vpd_->log();
  const auto c = counters();
  EXPECT_GE(c.value("tx_packets", 0), 1u) << c.dump();
  EXPECT_GE(c.value("rx_packets", 0), 1u) << c.dump();
  const auto status = vpd_->ctl_json({"vp0"})["status"];
  EXPECT_EQ(status.value("guest", ""), "connected");
  EXPECT_TRUE(status.value("carrier", false)) << "carrier follows the running queue pair";
  EXPECT_EQ(status["session"].value("ring", ""), GetParam() ? "packed" : "split");
}

TEST_P(VhostUser, gso_frame_from_a_guest_that_did_not_negotiate_it_is_dropped_and_counted) {
  attach(kGsoFeatures);
  auto rx_packets = [] {
    return ip_json({"-s", "link", "show", "dev", "vp0"})[0]["stats64"]["rx"].value("packets", 0);
  };
  const auto before = rx_packets();
  ASSERT_TRUE(fe_->post_tx(kTx, arp_request(1, /*gso_type=TCPV4*/ 1)));
  ASSERT_TRUE(fe_->kick(kTx));
  auto used = wait_used(kTx, std::chrono::seconds(5));
  ASSERT_TRUE(used) << "the dropped chain is still given back";
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(counters().value("tx_dropped_gso_not_negotiated", 0), 1u) << counters().dump();
  EXPECT_EQ(counters().value("tx_packets", 1), 0u);
  EXPECT_EQ(rx_packets(), before) << "nothing reached the TAP";
}

TEST_P(VhostUser, tap_offloads_follow_what_the_guest_acked) {
  attach(~0ull &
         ((1ull << 0) | (1ull << 1) | (1ull << 7) | (1ull << 8) | (1ull << 9) | (1ull << 10) |
          (1ull << 54) | (1ull << 55)) &
         ~((1ull << 0) | (1ull << 1)));  // acks CSUM and GUEST_CSUM but no GUEST_TSO/UFO/USO
  const auto status = vpd_->ctl_json({"vp0"})["status"];
  EXPECT_EQ(status.value("tun_offloads", ""), "CSUM") << status.dump(2);
  EXPECT_EQ(status.value("vnet_hdr_len", 0), 12);
  // The session ends: the TAP goes back to what the endpoint's settings say.
  fe_.reset();
  for (int i = 0; i < 100; ++i) {
    if (vpd_->ctl_json({"vp0"})["status"].value("guest", "") != "connected") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto idle = vpd_->ctl_json({"vp0"})["status"];
  EXPECT_NE(idle.value("guest", ""), "connected");
  EXPECT_FALSE(idle.value("carrier", true));
  EXPECT_EQ(idle.value("tun_offloads", ""), "CSUM|TSO4|TSO6|TSO_ECN|UFO|USO4|USO6");
}

TEST_P(VhostUser, second_frontend_is_turned_away_while_one_is_connected) {
  attach();
  auto second = vp::connect_unix(vpd_->runtime_dir() + "/vp0.sock");
  ASSERT_TRUE(second);
  pollfd p{second->get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "vpd did not close the second connection";
  char byte = 0;
  EXPECT_EQ(::recv(second->get(), &byte, 1, 0), 0) << "closed, not answered";
  // The first session is untouched.
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"].value("guest", ""), "connected");
}

TEST_P(VhostUser, stopping_vpd_with_a_running_session_exits_cleanly_and_keeps_the_tap) {
  attach();
  const int ifindex = link_json("vp0").value("ifindex", 0);
  EXPECT_EQ(vpd_->stop(), 0) << vpd_->log();
  EXPECT_EQ(link_json("vp0").value("ifindex", -1), ifindex);
}

TEST_P(VhostUser, each_queue_pair_carries_guest_frames_and_the_kernel_answers_on_an_rx_ring) {
  attach_two_pairs(/*enable_pair1=*/true);
  const auto status = vpd_->ctl_json({"vp0"})["status"];
  EXPECT_EQ(status["session"].value("queues", 0), 4) << status.dump(2);
  EXPECT_EQ(status["session"].value("queues_running", 0), 4) << status.dump(2);
  EXPECT_NE(status["session"].value("features", "").find("MQ"), std::string::npos);
  for (const uint32_t rx : {kRx, kRx1}) {
    for (int i = 0; i < 16; ++i) ASSERT_TRUE(fe_->post_rx(rx));
    ASSERT_TRUE(fe_->kick(rx));
  }
  const uint64_t kernel_rx = kernel_rx_packets();
  // One ARP request per pair, from different addresses so that the replies tell them apart.
  ASSERT_TRUE(fe_->post_tx(kTx1, arp_request(1, 0, /*sender=*/3)));
  ASSERT_TRUE(fe_->kick(kTx1));
  ASSERT_TRUE(fe_->post_tx(kTx, arp_request(1, 0, /*sender=*/2)));
  ASSERT_TRUE(fe_->kick(kTx));
  ASSERT_TRUE(wait_used(kTx1, std::chrono::seconds(5))) << "pair 1 TX\n" << vpd_->log();
  ASSERT_TRUE(wait_used(kTx, std::chrono::seconds(5))) << "pair 0 TX\n" << vpd_->log();

  // The kernel picks the TAP queue of each reply (flow hash), so either RX ring may get it.
  std::set<uint8_t> answered;  // last byte of the guest address each reply went to
  const auto deadline = steady_clock::now() + std::chrono::seconds(5);
  while (answered.size() < 2 && steady_clock::now() < deadline) {
    bool any = false;
    for (const uint32_t rx : {kRx, kRx1}) {
      while (auto used = fe_->next_used(rx)) {
        any = true;
        ASSERT_GE(used->len, 12u + 42u);
        const auto* b = reinterpret_cast<const uint8_t*>(fe_->buffer(rx, used->id).data()) + 12;
        const bool arp_reply = b[12] == 0x08 && b[13] == 0x06 && b[21] == 2;
        if (arp_reply && std::memcmp(b, kGuestMac.data(), 6) == 0 && b[28] == 10 && b[31] == 1) {
          answered.insert(b[41]);
        }
      }
    }
    if (!any) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(answered, (std::set<uint8_t>{2, 3})) << "an ARP reply for each pair's request\n"
                                                 << vpd_->log();
  EXPECT_EQ(kernel_rx_packets(), kernel_rx + 2) << "both TX frames reached the kernel";
  const auto c = counters();
  EXPECT_EQ(c.value("tx_packets", 0u), 2u) << "the endpoint's counters sum both pairs" << c.dump();
}

TEST_P(VhostUser, host_flows_reach_the_guest_on_both_rx_rings) {
  attach_two_pairs(/*enable_pair1=*/true);
  int on_rx0 = 0;
  int on_rx1 = 0;
  for (const uint32_t rx : {kRx, kRx1}) {
    for (int i = 0; i < 64; ++i) ASSERT_TRUE(fe_->post_rx(rx));
    ASSERT_TRUE(fe_->kick(rx));
  }
  // 32 flows by hash over 2 queues: all on one queue happens once in 2^31 runs.
  send_udp_flows(32);
  count_udp_flows({{kRx, &on_rx0}, {kRx1, &on_rx1}}, 32, std::chrono::seconds(5));
  EXPECT_EQ(on_rx0 + on_rx1, 32) << vpd_->log();
  EXPECT_GT(on_rx0, 0) << "TAP queue 0 feeds pair 0";
  EXPECT_GT(on_rx1, 0) << "TAP queue 1 feeds pair 1";
}

TEST_P(VhostUser, a_pair_left_disabled_never_starts_and_the_kernel_sends_it_nothing) {
  attach_two_pairs(/*enable_pair1=*/false);
  EXPECT_EQ(wait_queues_running(2), 2u) << "only pair 0 runs";
  EXPECT_TRUE(vpd_->ctl_json({"vp0"})["status"].value("carrier", false));
  for (const uint32_t rx : {kRx, kRx1}) {
    for (int i = 0; i < 64; ++i) ASSERT_TRUE(fe_->post_rx(rx));
    ASSERT_TRUE(fe_->kick(rx));
  }
  // TX on the disabled pair does not reach the kernel.
  const uint64_t kernel_rx = kernel_rx_packets();
  ASSERT_TRUE(fe_->post_tx(kTx1, arp_request(1)));
  ASSERT_TRUE(fe_->kick(kTx1));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(kernel_rx_packets(), kernel_rx);

  // Every host flow lands on pair 0: the idle pair's TAP queue takes no part in the
  // kernel's choice, so nothing waits in a queue nobody reads.
  int on_rx0 = 0;
  int on_rx1 = 0;
  send_udp_flows(32);
  count_udp_flows({{kRx, &on_rx0}, {kRx1, &on_rx1}}, 32, std::chrono::seconds(5));
  EXPECT_EQ(on_rx0, 32) << vpd_->log();
  EXPECT_EQ(on_rx1, 0);

  // The VMM enables pair 1 (the guest asked for 2 pairs on its control queue), ...
  ASSERT_TRUE(fe_->set_vring_enable(kRx1, true));
  ASSERT_TRUE(fe_->set_vring_enable(kTx1, true));
  EXPECT_EQ(wait_queues_running(4), 4u);
  ASSERT_TRUE(fe_->post_tx(kTx1, arp_request(1)));
  ASSERT_TRUE(fe_->kick(kTx1));
  for (int i = 0; i < 500 && kernel_rx_packets() == kernel_rx; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GT(kernel_rx_packets(), kernel_rx) << "pair 1 transmits once enabled";
  on_rx0 = on_rx1 = 0;
  send_udp_flows(32);
  count_udp_flows({{kRx, &on_rx0}, {kRx1, &on_rx1}}, 32, std::chrono::seconds(5));
  EXPECT_EQ(on_rx0 + on_rx1, 32) << vpd_->log();
  EXPECT_GT(on_rx1, 0) << "pair 1 now gets its share";

  // ... and disables it again: pair 0 carries everything once more.
  ASSERT_TRUE(fe_->set_vring_enable(kRx1, false));
  ASSERT_TRUE(fe_->set_vring_enable(kTx1, false));
  EXPECT_EQ(wait_queues_running(2), 2u);
  EXPECT_TRUE(vpd_->ctl_json({"vp0"})["status"].value("carrier", false));
  on_rx0 = on_rx1 = 0;
  send_udp_flows(32);
  count_udp_flows({{kRx, &on_rx0}, {kRx1, &on_rx1}}, 32, std::chrono::seconds(5));
  EXPECT_EQ(on_rx0, 32) << vpd_->log();
  EXPECT_EQ(on_rx1, 0);
}

INSTANTIATE_TEST_SUITE_P(Rings, VhostUser, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return param_info.param ? "packed" : "split";
                         });

}  // namespace
}  // namespace vp::test
