// Guests on two hosts on one L2 segment: two network namespaces stand in for two hosts, each
// with its own vpd, bridge br0, endpoint vp0 and a test front-end as the guest, and a kernel
// VXLAN device vx0 on each bridge tunnelling over a veth pair (the "underlay", 1500-byte
// MTU). The guests' frames cross the tunnel both ways; the guest MTU is the underlay's
// minus the VXLAN overhead, told to the guest through the virtio-net config space. Nothing
// leaves the two namespaces.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "support/harness.hpp"
#include "support/vhost_frontend.hpp"
#include "virtio/queue.hpp"

namespace vp::test {
namespace {

using std::chrono::steady_clock;

constexpr uint32_t kRx = 0;
constexpr uint32_t kTx = 1;
constexpr uint16_t kEtherType = 0x88b5;  // IEEE local experimental: no stack takes it
constexpr uint32_t kUnderlayMtu = 1500;
constexpr uint32_t kVxlanOverhead = 50;  // outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
constexpr uint32_t kGuestMtu = kUnderlayMtu - kVxlanOverhead;
constexpr uint32_t kVni = 42;

using Mac = std::array<uint8_t, 6>;

struct Host {
  const char* name;
  const char* underlay_if;
  const char* underlay_ip;
  const char* remote_ip;
  Mac guest_mac;
  Fd netns;
  std::unique_ptr<TempDir> dir;
  std::unique_ptr<Vpd> vpd;
  std::unique_ptr<VhostFrontend> fe;
};

std::string mac_text(const Mac& m) {
  char s[18];
  std::snprintf(s, sizeof s, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return s;
}

// A guest frame with a zero virtio header: Ethernet to `dst` from `src`, kEtherType, then
// `payload_len` bytes of a pattern (an Ethernet payload of kGuestMtu bytes is a full-size
// frame).
std::vector<std::byte> guest_frame(const Mac& dst, const Mac& src, size_t payload_len,
                                   uint8_t seed) {
  std::vector<std::byte> f(12 + 14 + payload_len, std::byte{0});
  std::memcpy(f.data() + 12, dst.data(), 6);
  std::memcpy(f.data() + 18, src.data(), 6);
  f[24] = std::byte{kEtherType >> 8};
  f[25] = std::byte{kEtherType & 0xff};
  for (size_t i = 0; i < payload_len; ++i) f[26 + i] = static_cast<std::byte>(seed + i * 13);
  return f;
}

class Fabric : public ::testing::Test {
 protected:
  void SetUp() override {
    // Host a is the test's own new namespace, host b another one; the test thread moves
    // between them with setns() to run commands and start each vpd there.
    ASSERT_EQ(enter_private_netns(), "");
    a_.netns.reset(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(enter_private_netns(), "");
    b_.netns.reset(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(a_.netns && b_.netns);
    enter(a_);
    ASSERT_TRUE(sh("ip link add ua type veth peer name ub"));
    ASSERT_TRUE(sh("ip link set ub netns /proc/" + std::to_string(::getpid()) + "/fd/" +
                   std::to_string(b_.netns.get())));
    for (Host* h : {&a_, &b_}) {
      enter(*h);
      const std::string u = h->underlay_if;
      ASSERT_TRUE(sh("ip link set " + u + " mtu " + std::to_string(kUnderlayMtu) + " up"));
      ASSERT_TRUE(sh("ip addr add " + std::string(h->underlay_ip) + "/24 dev " + u));
      ASSERT_TRUE(sh("ip link add br0 type bridge && ip link set br0 up"));
      // The VXLAN device takes its MTU from the underlay device: 1500 - 50.
      ASSERT_TRUE(sh("ip link add vx0 type vxlan id " + std::to_string(kVni) + " local " +
                     h->underlay_ip + " remote " + h->remote_ip + " dstport 4789 dev " + u));
      ASSERT_TRUE(sh("ip link set vx0 master br0 up"));
      EXPECT_EQ(link_json("vx0").value("mtu", 0u), kGuestMtu);
      h->dir = std::make_unique<TempDir>();
      h->vpd = std::make_unique<Vpd>(h->dir->path());
      ASSERT_EQ(h->vpd->start(), "");  // vpd runs in the namespace it was started in
      const vp::test::Run r =
          h->vpd->ctl({"vp0", "create", "bridge=br0", "mtu=" + std::to_string(kGuestMtu),
                       "guest-mac=" + mac_text(h->guest_mac), "up"});
      ASSERT_EQ(r.status, 0) << r.err << h->vpd->log();
    }
    for (Host* h : {&a_, &b_}) attach(*h);
  }

  void TearDown() override {
    for (Host* h : {&a_, &b_}) {
      if (HasFailure() && h->vpd)
        std::cerr << "---- vpd log, host " << h->name << " ----\n" << h->vpd->log();
      h->fe.reset();
      h->vpd.reset();
      h->dir.reset();
    }
  }

  static void enter(const Host& h) { ASSERT_EQ(::setns(h.netns.get(), CLONE_NEWNET), 0); }

  // The guest: split rings, every feature vpd offers, 64 RX buffers posted.
  void attach(Host& h) {
    auto fe = VhostFrontend::connect(h.vpd->runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
    ASSERT_TRUE(fe) << fe.error().message;
    h.fe = std::move(*fe);
    ASSERT_TRUE(h.fe->negotiate(~virtio::kFeatureRingPacked, ~0ull)) << h.vpd->log();
    ASSERT_TRUE(h.fe->set_mem_table());
    ASSERT_TRUE(h.fe->setup_queue(kRx, 256));
    ASSERT_TRUE(h.fe->setup_queue(kTx, 256));
    for (int i = 0; i < 64; ++i) ASSERT_TRUE(h.fe->post_rx(kRx));
    ASSERT_TRUE(h.fe->kick(kRx));
    enter(h);
    for (int i = 0; i < 500; ++i) {
      if (link_json("vp0").value("operstate", "") == "UP") return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "host " << h.name << ": vp0 not up: " << link_json("vp0").dump();
  }

  // The MTU the guest is told (virtio-net config space, offset 10).
  static uint16_t guest_mtu(Host& h) {
    vhost::Config request;
    request.head = vhost::ConfigHead{0, 12, 0};
    const auto* raw = reinterpret_cast<const std::byte*>(&request);
    EXPECT_TRUE(h.fe->send(vhost::Request::kGetConfig,
                           std::span<const std::byte>(raw, vhost::kConfigHeadSize + 12)));
    auto reply = h.fe->wait_reply(vhost::Request::kGetConfig);
    if (!reply || reply->payload.size() < vhost::kConfigHeadSize + 12) return 0;
    const auto* c =
        reinterpret_cast<const uint8_t*>(reply->payload.data()) + vhost::kConfigHeadSize;
    return static_cast<uint16_t>(c[10] | c[11] << 8);
  }

  static void send(Host& h, const std::vector<std::byte>& frame) {
    ASSERT_TRUE(h.fe->post_tx(kTx, frame));
    ASSERT_TRUE(h.fe->kick(kTx));
  }

  // The next kEtherType frame the guest receives (the Ethernet frame, header stripped),
  // skipping anything else the bridge floods (IPv6 router solicitations and the like).
  static std::optional<std::vector<std::byte>> receive(Host& h, std::chrono::seconds timeout) {
    const auto deadline = steady_clock::now() + timeout;
    while (steady_clock::now() < deadline) {
      auto used = h.fe->next_used(kRx);
      if (!used) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      const auto buf = h.fe->buffer(kRx, used->id);
      std::vector<std::byte> frame(buf.begin() + 12, buf.begin() + used->len);
      (void)h.fe->post_rx(kRx);
      (void)h.fe->kick(kRx);
      const auto num_buffers = static_cast<uint16_t>(std::to_integer<unsigned>(buf[10]) |
                                                     std::to_integer<unsigned>(buf[11]) << 8);
      EXPECT_EQ(num_buffers, 1) << "a 1464-byte frame fits one 4096-byte buffer";
      if (frame.size() >= 14 && frame[12] == std::byte{kEtherType >> 8} &&
          frame[13] == std::byte{kEtherType & 0xff}) {
        return frame;
      }
    }
    return std::nullopt;
  }

  Host a_{"a", "ua", "10.200.0.1", "10.200.0.2", {0x52, 0x54, 0x00, 0xfa, 0x00, 0x0a}, {}, {},
          {},  {}};
  Host b_{"b", "ub", "10.200.0.2", "10.200.0.1", {0x52, 0x54, 0x00, 0xfa, 0x00, 0x0b}, {}, {},
          {},  {}};
};

TEST_F(Fabric, guests_on_two_hosts_exchange_full_size_frames_over_vxlan) {
  // Each guest is told the MTU that fits the tunnel.
  EXPECT_EQ(guest_mtu(a_), kGuestMtu);
  EXPECT_EQ(guest_mtu(b_), kGuestMtu);

  // What crosses host b's underlay interface.
  enter(b_);
  Fd underlay = packet_socket("ub", SOCK_NONBLOCK);
  ASSERT_TRUE(underlay);

  // a → b: unknown unicast, flooded by a's bridge into vx0, out of the tunnel into b's
  // bridge and to b's guest.
  const auto ab = guest_frame(b_.guest_mac, a_.guest_mac, kGuestMtu, 1);
  send(a_, ab);
  auto got = receive(b_, std::chrono::seconds(10));
  ASSERT_TRUE(got) << "host b's guest never got host a's frame";
  EXPECT_EQ(*got, std::vector<std::byte>(ab.begin() + 12, ab.end())) << "delivered unchanged";

  // It crossed the underlay as one VXLAN datagram of exactly the underlay's MTU: outer IPv4
  // to UDP 4789, the VXLAN header with the VNI, then the guest's frame.
  bool tunnelled = false;
  std::vector<uint8_t> pkt(4096);
  for (int i = 0; i < 200 && !tunnelled; ++i) {
    const ssize_t n = ::recv(underlay.get(), pkt.data(), pkt.size(), 0);
    if (n < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    const uint8_t* p = pkt.data();
    const bool udp4789 =
        n > 50 && p[12] == 0x08 && p[13] == 0x00 && p[23] == 17 && (p[36] << 8 | p[37]) == 4789;
    if (!udp4789) continue;
    EXPECT_EQ(n, 14 + static_cast<ssize_t>(kUnderlayMtu)) << "the outer packet fills the MTU";
    EXPECT_EQ(p[42], 0x08) << "VXLAN flags: VNI valid";
    EXPECT_EQ(uint32_t(p[46]) << 16 | uint32_t(p[47]) << 8 | p[48], kVni);
    EXPECT_EQ(std::memcmp(p + 50, ab.data() + 12, ab.size() - 12), 0) << "inner frame";
    tunnelled = true;
  }
  EXPECT_TRUE(tunnelled) << "no VXLAN datagram with the frame on host b's underlay";

  // b → a: b's bridge learnt a's guest behind vx0, a's bridge learnt its own guest on vp0.
  const auto ba = guest_frame(a_.guest_mac, b_.guest_mac, 100, 2);
  send(b_, ba);
  got = receive(a_, std::chrono::seconds(10));
  ASSERT_TRUE(got) << "host a's guest never got host b's frame";
  EXPECT_EQ(*got, std::vector<std::byte>(ba.begin() + 12, ba.end()));

  enter(b_);
  const vp::test::Run fdb = run({"bridge", "fdb", "show", "br", "br0"});
  EXPECT_NE(fdb.out.find(mac_text(a_.guest_mac) + " dev vx0"), std::string::npos)
      << "host b's bridge has host a's guest behind the tunnel:\n"
      << fdb.out;
  for (Host* h : {&a_, &b_}) {
    const auto c = h->vpd->ctl_json({"vp0"})["status"]["counters"];
    EXPECT_GE(c.value("tx_packets", 0u), 1u) << h->name << ": " << c.dump();
    EXPECT_GE(c.value("rx_packets", 0u), 1u) << h->name << ": " << c.dump();
    EXPECT_EQ(c.value("tx_dropped_too_big", 0u) + c.value("rx_dropped_too_big", 0u), 0u);
  }
}

}  // namespace
}  // namespace vp::test
