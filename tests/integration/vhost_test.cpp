// vhost-user endpoints against a real vpd: a test front-end (memfd guest memory, real rings,
// real vhost-user messages over the bind socket) exchanges frames with the kernel through
// the endpoint's TAP, inside a private network namespace.

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstring>
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

// A virtio_net_hdr_mrg_rxbuf (12 zero bytes: no offload) and an ARP request asking who
// has `target` (10.98.0.x), from the guest's MAC and 10.98.0.2.
std::vector<std::byte> arp_request(uint8_t target, uint8_t gso_type = 0) {
  std::vector<uint8_t> f(12, 0);
  f[1] = gso_type;
  if (gso_type) f[0] = 1;  // NEEDS_CSUM, so only the missing GSO feature is wrong
  auto put = [&](std::initializer_list<uint8_t> bytes) { f.insert(f.end(), bytes); };
  put({0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
  put({0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01});
  f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
  put({10, 98, 0, 2, 0, 0, 0, 0, 0, 0, 10, 98, 0, target});
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

INSTANTIATE_TEST_SUITE_P(Rings, VhostUser, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return param_info.param ? "packed" : "split";
                         });

}  // namespace
}  // namespace vp::test
