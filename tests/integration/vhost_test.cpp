// vhost-user endpoints against a real vpd: a test front-end (memfd guest memory, real rings,
// real vhost-user messages over the bind socket) exchanges frames with the kernel through
// the endpoint's TAP, inside a private network namespace.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <thread>

#include "support/harness.hpp"
#include "support/vhost_frontend.hpp"
#include "sys/str.hpp"
#include "sys/unix_socket.hpp"
#include "vhost/messages.hpp"
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

// --- Offloads through a real vpd: frames built as a Linux guest builds them ------------------

constexpr uint64_t kCsum = 1ull << 0;
constexpr uint64_t kGuestCsum = 1ull << 1;
constexpr uint64_t kHostUso = 1ull << 56;
constexpr uint8_t kNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
constexpr uint8_t kGsoUdpL4 = 5;   // VIRTIO_NET_HDR_GSO_UDP_L4
constexpr uint16_t kGuestPort = 5000;

uint32_t sum16(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  if (n & 1) sum += uint32_t(p[n - 1]) << 8;
  return sum;
}
uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v & 0xff);
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// The UDP pseudo-header sum of an IPv4 packet starting at `ip` (addresses, protocol, length).
uint32_t udp_pseudo_sum(const uint8_t* ip) { return sum16(ip + 12, 8) + 17 + get16(ip + 20 + 4); }

// A virtio header then Ethernet/IPv4/UDP from the guest (10.98.0.2:5000) to `dst_mac`,
// 10.98.0.1:`port`. With NEEDS_CSUM the UDP checksum field holds the pseudo-header sum and
// csum_start/offset point at it, as Linux leaves it for the device; otherwise it is complete.
std::vector<std::byte> guest_udp(const std::array<uint8_t, 6>& dst_mac, uint16_t port,
                                 const std::vector<uint8_t>& payload, uint8_t flags,
                                 uint8_t gso_type = 0, uint16_t gso_size = 0) {
  std::vector<uint8_t> f(12 + 14 + 20 + 8 + payload.size(), 0);
  uint8_t* h = f.data();
  h[0] = flags;
  h[1] = gso_type;
  auto le16 = [&](size_t at, uint16_t v) {
    h[at] = static_cast<uint8_t>(v & 0xff);
    h[at + 1] = static_cast<uint8_t>(v >> 8);
  };
  le16(2, gso_type ? 14 + 20 + 8 : 0);  // hdr_len
  le16(4, gso_size);
  if (flags & kNeedsCsum) {
    le16(6, 14 + 20);  // csum_start: the UDP header
    le16(8, 6);        // csum_offset: its checksum field
  }
  uint8_t* e = h + 12;
  std::memcpy(e, dst_mac.data(), 6);
  std::memcpy(e + 6, kGuestMac.data(), 6);
  e[12] = 0x08;
  uint8_t* ip = e + 14;
  ip[0] = 0x45;
  put16(ip + 2, static_cast<uint16_t>(20 + 8 + payload.size()));
  ip[8] = 64;
  ip[9] = 17;
  const uint8_t addrs[8] = {10, 98, 0, 2, 10, 98, 0, 1};
  std::memcpy(ip + 12, addrs, 8);
  put16(ip + 10, static_cast<uint16_t>(~fold(sum16(ip, 20))));
  uint8_t* udp = ip + 20;
  put16(udp, kGuestPort);
  put16(udp + 2, port);
  put16(udp + 4, static_cast<uint16_t>(8 + payload.size()));
  std::memcpy(udp + 8, payload.data(), payload.size());
  const uint32_t pseudo = udp_pseudo_sum(ip);
  put16(udp + 6, (flags & kNeedsCsum)
                     ? fold(pseudo)
                     : static_cast<uint16_t>(~fold(sum16(udp, 8 + payload.size(), pseudo))));
  std::vector<std::byte> out(f.size());
  std::memcpy(out.data(), f.data(), f.size());
  return out;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(seed + i * 7);
  return p;
}

// A UDP socket on the host side of vp0, 10.98.0.1:`port`, non-blocking.
Fd host_udp_socket(uint16_t port) {
  Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, "10.98.0.1", &a.sin_addr);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Fd();
  return s;
}

// Datagrams that arrive on `s` within `timeout`, until `want` of them.
std::vector<std::vector<uint8_t>> receive_datagrams(const Fd& s, size_t want,
                                                    std::chrono::milliseconds timeout) {
  std::vector<std::vector<uint8_t>> got;
  const auto deadline = steady_clock::now() + timeout;
  while (got.size() < want && steady_clock::now() < deadline) {
    pollfd p{s.get(), POLLIN, 0};
    if (::poll(&p, 1, 20) != 1) continue;
    std::vector<uint8_t> buf(65536);
    const ssize_t n = ::recv(s.get(), buf.data(), buf.size(), 0);
    if (n < 0) continue;
    buf.resize(static_cast<size_t>(n));
    got.push_back(std::move(buf));
  }
  return got;
}

class VhostUser : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    ASSERT_EQ(enter_private_netns(), "");
    vpd_ = std::make_unique<Vpd>(dir_.path());
    ASSERT_EQ(vpd_->start(vpd_args()), "");
    ASSERT_EQ(vpd_->ctl({"vp0", "create", "address=10.98.0.1/24", "up"}).status, 0);
  }

  virtual std::vector<std::string> vpd_args() const { return {}; }

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

  // The per-queue-pair counters once `done` holds for them (or after 5 s).
  nlohmann::json queue_counters_when(const std::function<bool(const nlohmann::json&)>& done) {
    nlohmann::json q;
    for (int i = 0; i < 250; ++i) {
      q = vpd_->ctl_json({"vp0"})["status"]["queue_counters"];
      if (done(q)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return q;
  }

  std::array<uint8_t, 6> vp0_mac() {
    std::array<uint8_t, 6> mac{};
    const std::string text = link_json("vp0").value("address", "");
    unsigned b[6] = {};
    EXPECT_EQ(
        std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]),
        6);
    for (int i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(b[i]);
    return mac;
  }

  // The next frame on RX ring `ring` addressed to the guest's UDP port 9, reassembled from
  // its num_buffers mergeable buffers: the 12-byte virtio header, then the Ethernet frame.
  std::optional<std::vector<uint8_t>> next_udp_to_guest(uint32_t ring,
                                                        std::chrono::seconds timeout) {
    const auto deadline = steady_clock::now() + timeout;
    while (steady_clock::now() < deadline) {
      auto first = wait_used(ring, std::chrono::seconds(1));
      if (!first) continue;
      auto buf = fe_->buffer(ring, first->id);
      std::vector<uint8_t> frame(reinterpret_cast<const uint8_t*>(buf.data()),
                                 reinterpret_cast<const uint8_t*>(buf.data()) + first->len);
      const uint16_t buffers = frame.size() >= 12 ? uint16_t(frame[10] | frame[11] << 8) : 1;
      for (uint16_t i = 1; i < buffers; ++i) {
        auto more = wait_used(ring, std::chrono::seconds(1));
        if (!more) return std::nullopt;
        auto b = fe_->buffer(ring, more->id);
        frame.insert(frame.end(), reinterpret_cast<const uint8_t*>(b.data()),
                     reinterpret_cast<const uint8_t*>(b.data()) + more->len);
      }
      while (fe_->outstanding(ring) < 64 && fe_->post_rx(ring)) {
      }
      (void)fe_->kick(ring);
      if (frame.size() < 12 + 42) continue;
      const uint8_t* e = frame.data() + 12;
      if (e[12] == 0x08 && e[13] == 0x00 && e[23] == 17 && e[36] == 0 && e[37] == 9) {
        return frame;
      }
    }
    return std::nullopt;
  }

  // Sends `payload` from a host UDP socket to the guest (10.98.0.2:9); with `segment`, as
  // one UDP GSO send of `segment`-byte datagrams (UDP_SEGMENT). Returns what send() said.
  ssize_t send_to_guest(const std::vector<uint8_t>& payload, int segment = 0) {
    EXPECT_TRUE(sh("ip neigh replace 10.98.0.2 lladdr 52:54:00:12:34:56 dev vp0 nud permanent"));
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (segment) {
      EXPECT_EQ(::setsockopt(s.get(), SOL_UDP, 103 /* UDP_SEGMENT */, &segment, sizeof segment), 0);
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9);
    ::inet_pton(AF_INET, "10.98.0.2", &to.sin_addr);
    return ::sendto(s.get(), payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to),
                    sizeof to);
  }

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

TEST_P(VhostUser, get_config_reports_the_guest_mac_link_up_pairs_and_mtu) {
  ASSERT_EQ(vpd_->ctl({"vp0", "mtu=9000"}).status, 0) << vpd_->log();
  attach();
  ASSERT_NE(fe_->acked_protocol_features() & vhost::bit(vhost::ProtocolFeature::kConfig), 0u)
      << "vpd offers VHOST_USER_PROTOCOL_F_CONFIG";
  vhost::Config request;
  request.head = vhost::ConfigHead{0, 12, 0};
  const auto* raw = reinterpret_cast<const std::byte*>(&request);
  ASSERT_TRUE(fe_->send(vhost::Request::kGetConfig,
                        std::span<const std::byte>(raw, vhost::kConfigHeadSize + 12)));
  auto reply = fe_->wait_reply(vhost::Request::kGetConfig);
  ASSERT_TRUE(reply) << reply.error().message << "\n" << vpd_->log();
  ASSERT_EQ(reply->payload.size(), vhost::kConfigHeadSize + 12);
  const auto* c = reinterpret_cast<const uint8_t*>(reply->payload.data()) + vhost::kConfigHeadSize;
  // SPEC: virtio 1.2 §5.1.4: mac[6], status (le16), max_virtqueue_pairs (le16), mtu (le16).
  char mac[18];
  std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", c[0], c[1], c[2], c[3], c[4],
                c[5]);
  EXPECT_EQ(mac, vpd_->ctl_json({"vp0"}).value("guest_mac", ""))
      << "the MAC vpctl prints for -device ...,mac=";
  EXPECT_EQ(c[6] | c[7] << 8, 1) << "VIRTIO_NET_S_LINK_UP";
  EXPECT_EQ(c[8] | c[9] << 8, 1) << "one queue pair";
  EXPECT_EQ(c[10] | c[11] << 8, 9000) << "the endpoint's MTU";
  // The test front-end is not QEMU, which serves the control queue that
  // VIRTIO_NET_F_GUEST_ANNOUNCE requires: the bit is not offered (it takes SEND_RARP).
  EXPECT_EQ(fe_->acked_features() & (1ull << 21), 0u) << "GUEST_ANNOUNCE offered to a non-QEMU";
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
  EXPECT_TRUE(contains_name(status["session"]["features"], "MQ")) << status.dump(2);
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
  // Each pair sent one 42-byte frame: the per-queue counters say which pair carried what.
  const auto q = queue_counters_when([](const nlohmann::json& got) {
    return got.is_array() && got.size() == 2 && got[1].value("tx_packets", 0u) == 1u;
  });
  ASSERT_TRUE(q.is_array() && q.size() == 2) << q.dump();
  for (uint32_t pair = 0; pair < 2; ++pair) {
    EXPECT_EQ(q[pair].value("queue", 9u), pair) << q.dump();
    EXPECT_EQ(q[pair].value("tx_packets", 0u), 1u) << q.dump();
    EXPECT_EQ(q[pair].value("tx_bytes", 0u), 42u) << q.dump();
    EXPECT_EQ(q[pair].value("tx_dropped", 9u), 0u) << q.dump();
  }
  const std::string stats = vpd_->ctl({"vp0", "stats"}).out;
  EXPECT_NE(stats.find("queue 1:"), std::string::npos) << stats;
  const std::string metrics = vpd_->ctl({"metrics"}).out;
  EXPECT_NE(metrics.find("vpd_queue_packets_total{endpoint=\"vp0\",queue=\"1\","
                         "direction=\"from_guest\"} 1\n"),
            std::string::npos)
      << metrics;
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
  // Each pair counts at least the flows its ring got (the kernel may send the guest more,
  // e.g. IPv6 neighbour discovery), and once nothing moves the pairs add up to the endpoint.
  nlohmann::json status;
  uint64_t pairs_sum = 0;
  for (int i = 0; i < 250; ++i) {
    status = vpd_->ctl_json({"vp0"})["status"];
    const auto& q = status["queue_counters"];
    pairs_sum = q.is_array() && q.size() == 2
                    ? q[0].value("rx_packets", 0u) + q[1].value("rx_packets", 0u)
                    : 0;
    if (pairs_sum >= 32 && pairs_sum == status["counters"].value("rx_packets", 0u)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto& q = status["queue_counters"];
  ASSERT_TRUE(q.is_array() && q.size() == 2) << status.dump();
  EXPECT_GE(q[0].value("rx_packets", 0), on_rx0) << q.dump();
  EXPECT_GE(q[1].value("rx_packets", 0), on_rx1) << q.dump();
  EXPECT_EQ(pairs_sum, status["counters"].value("rx_packets", 0u)) << status.dump();
}

TEST_P(VhostUser, a_pair_left_disabled_never_starts_and_the_kernel_sends_it_nothing) {
  attach_two_pairs(/*enable_pair1=*/false);
  EXPECT_EQ(wait_queues_running(2), 2u) << "only pair 0 runs";
  EXPECT_TRUE(vpd_->ctl_json({"vp0"})["status"].value("carrier", false));
  for (const uint32_t rx : {kRx, kRx1}) {
    for (int i = 0; i < 64; ++i) ASSERT_TRUE(fe_->post_rx(rx));
    ASSERT_TRUE(fe_->kick(rx));
  }
  // TX on the disabled pair is processed and discarded (vhost-user "Ring states"): the chain
  // comes back, counted, and nothing reaches the kernel.
  const uint64_t kernel_rx = kernel_rx_packets();
  const uint16_t discarded = *fe_->post_tx(kTx1, arp_request(1));
  ASSERT_TRUE(fe_->kick(kTx1));
  const auto used = wait_used(kTx1, std::chrono::seconds(5));
  ASSERT_TRUE(used) << "the disabled ring's TX chain is given back\n" << vpd_->log();
  EXPECT_EQ(used->id, discarded);
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(counters().value("tx_dropped_ring_disabled", 0), 1u) << counters().dump();
  EXPECT_EQ(counters().value("tx_packets", 1), 0u);
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

TEST_P(VhostUser, partial_checksum_frame_from_a_guest_with_csum_reaches_a_host_socket_intact) {
  attach();
  const Fd sock = host_udp_socket(7001);
  ASSERT_TRUE(sock);
  const auto payload = pattern(1200, 3);
  ASSERT_TRUE(fe_->post_tx(kTx, guest_udp(vp0_mac(), 7001, payload, kNeedsCsum)));
  ASSERT_TRUE(fe_->kick(kTx));
  const auto got = receive_datagrams(sock, 1, std::chrono::milliseconds(5000));
  ASSERT_EQ(got.size(), 1u) << counters().dump() << vpd_->log();
  EXPECT_EQ(got[0], payload);
  EXPECT_EQ(counters().value("tx_packets", 0), 1u);
}

TEST_P(VhostUser, uso_frame_from_a_guest_becomes_datagrams_of_gso_size_on_the_host) {
  attach();
  ASSERT_NE(fe_->acked_features() & kHostUso, 0u) << "vpd offers HOST_USO";
  const Fd sock = host_udp_socket(7002);
  ASSERT_TRUE(sock);
  const auto payload = pattern(3500, 9);  // 1000 + 1000 + 1000 + 500
  // One 3.5 KB frame in a 4 KiB TX buffer: the kernel segments it (the TAP took it as GSO).
  ASSERT_TRUE(fe_->post_tx(kTx, guest_udp(vp0_mac(), 7002, payload, kNeedsCsum, kGsoUdpL4, 1000)));
  ASSERT_TRUE(fe_->kick(kTx));
  const auto got = receive_datagrams(sock, 4, std::chrono::milliseconds(5000));
  ASSERT_EQ(got.size(), 4u) << counters().dump() << vpd_->log();
  std::vector<uint8_t> joined;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].size(), i < 3 ? 1000u : 500u);
    joined.insert(joined.end(), got[i].begin(), got[i].end());
  }
  EXPECT_EQ(joined, payload);
  EXPECT_EQ(counters().value("tx_packets", 0), 1u) << "one frame from the guest";
}

TEST_P(VhostUser, partial_checksum_frame_from_a_guest_without_csum_is_dropped_and_counted) {
  attach(kCsum);
  ASSERT_EQ(fe_->acked_features() & kCsum, 0u);
  const Fd sock = host_udp_socket(7003);
  ASSERT_TRUE(sock);
  const uint64_t kernel_rx = kernel_rx_packets();
  ASSERT_TRUE(fe_->post_tx(kTx, guest_udp(vp0_mac(), 7003, pattern(100, 1), kNeedsCsum)));
  ASSERT_TRUE(fe_->kick(kTx));
  auto used = wait_used(kTx, std::chrono::seconds(5));
  ASSERT_TRUE(used) << "the dropped chain is still given back";
  EXPECT_EQ(counters().value("tx_dropped_csum_not_negotiated", 0), 1u) << counters().dump();
  EXPECT_EQ(kernel_rx_packets(), kernel_rx) << "nothing reached the TAP";
  // The same payload with its checksum complete passes.
  const auto payload = pattern(100, 1);
  ASSERT_TRUE(fe_->post_tx(kTx, guest_udp(vp0_mac(), 7003, payload, 0)));
  ASSERT_TRUE(fe_->kick(kTx));
  const auto got = receive_datagrams(sock, 1, std::chrono::milliseconds(5000));
  ASSERT_EQ(got.size(), 1u) << counters().dump();
  EXPECT_EQ(got[0], payload);
}

TEST_P(VhostUser, udp_gso_from_the_host_reaches_a_guest_with_guest_uso_as_one_frame) {
  attach();
  ASSERT_NE(fe_->acked_features() & kGuestCsum, 0u);
  ASSERT_NE(vpd_->ctl_json({"vp0"})["status"].value("tun_offloads", "").find("USO4"),
            std::string::npos)
      << "the kernel must take USO on the TAP for this test";
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(fe_->post_rx(kRx));
  ASSERT_TRUE(fe_->kick(kRx));
  const auto payload = pattern(3000, 5);
  ASSERT_EQ(send_to_guest(payload, 1000), 3000);
  const auto frame = next_udp_to_guest(kRx, std::chrono::seconds(5));
  ASSERT_TRUE(frame) << counters().dump() << vpd_->log();
  const uint8_t* h = frame->data();
  EXPECT_EQ(h[0] & kNeedsCsum, kNeedsCsum) << "the checksum is left to the guest";
  EXPECT_EQ(h[1], kGsoUdpL4) << "one GSO frame, segmented by nobody on the way";
  EXPECT_EQ(h[4] | h[5] << 8, 1000) << "gso_size";
  EXPECT_EQ(h[6] | h[7] << 8, 14 + 20) << "csum_start";
  EXPECT_EQ(h[8] | h[9] << 8, 6) << "csum_offset";
  ASSERT_EQ(frame->size(), 12u + 14 + 20 + 8 + 3000);
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), frame->begin() + 12 + 42));
  EXPECT_EQ(counters().value("rx_dropped_too_big", 0), 0u);
}

TEST_P(VhostUser, guest_without_guest_csum_gets_frames_with_complete_checksums) {
  attach(kGuestCsum);
  ASSERT_EQ(fe_->acked_features() & kGuestCsum, 0u);
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"].value("tun_offloads", ""), "none")
      << "the TAP may hand vpd nothing the guest would have to finish";
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(fe_->post_rx(kRx));
  ASSERT_TRUE(fe_->kick(kRx));
  const auto payload = pattern(1400, 8);
  ASSERT_EQ(send_to_guest(payload), 1400);
  const auto frame = next_udp_to_guest(kRx, std::chrono::seconds(5));
  ASSERT_TRUE(frame) << counters().dump() << vpd_->log();
  const uint8_t* h = frame->data();
  EXPECT_EQ(h[0], 0) << "no NEEDS_CSUM";
  EXPECT_EQ(h[1], 0) << "no GSO";
  const uint8_t* ip = frame->data() + 12 + 14;
  const size_t udp_len = get16(ip + 20 + 4);
  ASSERT_EQ(udp_len, 8u + payload.size());
  EXPECT_EQ(fold(sum16(ip + 20, udp_len, udp_pseudo_sum(ip))), 0xffff)
      << "the UDP checksum is complete and right";
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), ip + 28));
}

// --- Live migration: the dirty log and the announcement ---------------------------------------

constexpr uint64_t kLogPage = 4096;

// The value after "key:" on its line of vpctl's key: value output.
std::string value_of(const std::string& text, const std::string& key) {
  size_t at = text.rfind(key + ":", 0) == 0 ? 0 : text.find("\n" + key + ":");
  if (at == std::string::npos) return "<no " + key + ">";
  if (at) ++at;
  std::string line = text.substr(at + key.size() + 1, text.find('\n', at) - at - key.size() - 1);
  return line.substr(line.find_first_not_of(' '));
}

// Pages of guest-physical [gpa, gpa + len).
void add_pages(std::set<uint64_t>& pages, uint64_t gpa, uint64_t len) {
  if (len == 0) return;
  for (uint64_t p = gpa / kLogPage; p <= (gpa + len - 1) / kLogPage; ++p) pages.insert(p);
}

TEST_P(VhostUser, dirty_log_holds_exactly_the_rx_buffers_and_ring_entries_vpd_wrote) {
  // No IPv6 on vp0: its router and listener messages would reach the guest at any moment,
  // also in between the phases below.
  ASSERT_TRUE(sh("sysctl -qw net.ipv6.conf.vp0.disable_ipv6=1"));
  // As QEMU: LOG_ALL is not acked in the first negotiation, only when migration starts.
  attach(vhost::kFeatureLogAll);
  ASSERT_NE(fe_->acked_protocol_features() & vhost::bit(vhost::ProtocolFeature::kLogShmfd), 0u);
  ASSERT_TRUE(fe_->set_log_base(fe_->log_bytes_needed())) << vpd_->log();
  const auto rx = fe_->layout(kRx);
  const auto tx = fe_->layout(kTx);
  ASSERT_TRUE(rx && tx);
  const uint32_t buffer_size = fe_->options().buffer_size;

  // One ARP exchange; returns the RX buffers vpd filled (guest address, length).
  auto exchange = [&](uint8_t target) {
    std::vector<std::pair<uint64_t, uint32_t>> filled;
    while (fe_->outstanding(kRx) < 8 && fe_->post_rx(kRx)) {
    }
    EXPECT_TRUE(fe_->kick(kRx));
    EXPECT_TRUE(fe_->post_tx(kTx, arp_request(target)));
    EXPECT_TRUE(fe_->kick(kTx));
    EXPECT_TRUE(wait_used(kTx, std::chrono::seconds(5))) << vpd_->log();
    bool got_reply = false;
    const auto deadline = steady_clock::now() + std::chrono::seconds(5);
    while (!got_reply && steady_clock::now() < deadline) {
      auto used = wait_used(kRx, std::chrono::seconds(1));
      if (!used) continue;
      filled.emplace_back(rx->buffers + uint64_t{used->id} * buffer_size, used->len);
      const auto* b = reinterpret_cast<const uint8_t*>(fe_->buffer(kRx, used->id).data()) + 12;
      got_reply = b[12] == 0x08 && b[13] == 0x06 && b[21] == 2 && b[31] == target;
    }
    EXPECT_TRUE(got_reply) << vpd_->log();
    // Whatever else arrived meanwhile (IPv6 noise) counts as filled too.
    while (auto used = fe_->next_used(kRx)) {
      filled.emplace_back(rx->buffers + uint64_t{used->id} * buffer_size, used->len);
    }
    return filled;
  };

  // A log is set, LOG_ALL is not acked: nothing is marked.
  exchange(1);
  EXPECT_TRUE(fe_->dirty_pages().empty());
  auto session = vpd_->ctl_json({"vp0"})["status"]["session"];
  EXPECT_FALSE(session.value("dirty_logging", true)) << session.dump();

  // Migration starts: LOG_ALL, then VHOST_VRING_F_LOG with log_guest_addr on each ring.
  ASSERT_TRUE(fe_->set_logging(true)) << vpd_->log();
  fe_->clear_dirty_log();
  // Anything delivered before logging started is not this phase's.
  while (fe_->next_used(kRx)) {
  }
  const auto filled = exchange(1);
  ASSERT_FALSE(filled.empty());
  const auto dirty_list = fe_->dirty_pages();
  const std::set<uint64_t> dirty(dirty_list.begin(), dirty_list.end());

  // Pages vpd must have marked: every byte it put into an RX buffer, and where each ring's
  // used entries became visible (split: used idx; packed: the descriptor ring).
  std::set<uint64_t> required;
  for (const auto& [gpa, len] : filled) add_pages(required, gpa, len);
  // Pages it may have marked besides: the rest of the RX buffers and of the rings it writes
  // (split: the used ring, flags and avail_event included; packed: descriptor ring and device
  // event area). Nothing else: never the TX buffers, the available ring, the driver area.
  std::set<uint64_t> allowed = required;
  add_pages(allowed, rx->buffers, uint64_t{rx->size} * buffer_size);
  for (const auto& ring : {*rx, *tx}) {
    if (ring.packed) {
      std::set<uint64_t> desc;
      add_pages(desc, ring.desc, 16ull * ring.size);
      EXPECT_TRUE(std::any_of(desc.begin(), desc.end(),
                              [&](uint64_t page) { return dirty.contains(page); }))
          << "no used descriptor of the ring at " << std::hex << ring.desc << " was logged";
      allowed.insert(desc.begin(), desc.end());
      add_pages(allowed, ring.device, 4);
    } else {
      add_pages(required, ring.device + 2, 2);  // used idx
      add_pages(allowed, ring.device, 6 + 8ull * ring.size);
    }
  }
  for (uint64_t page : required) {
    EXPECT_TRUE(dirty.contains(page)) << "page " << std::hex << page << " was written, not logged";
  }
  for (uint64_t page : dirty) {
    EXPECT_TRUE(allowed.contains(page)) << "page " << std::hex << page << " logged, never written";
  }
  session = vpd_->ctl_json({"vp0"})["status"]["session"];
  EXPECT_TRUE(session.value("dirty_logging", false)) << session.dump();
  // The stats count one per page per mark: at least every page that had to be marked.
  EXPECT_GE(counters().value("dirty_pages_logged", 0u), required.size()) << counters().dump();
  const std::string show = vpd_->ctl({"vp0"}).out;
  EXPECT_EQ(value_of(show, "dirty logging").rfind("on (", 0), 0u) << show;

  // Migration over (or cancelled): logging off, nothing more is marked.
  ASSERT_TRUE(fe_->set_logging(false)) << vpd_->log();
  fe_->clear_dirty_log();
  exchange(1);
  EXPECT_TRUE(fe_->dirty_pages().empty());
  EXPECT_EQ(value_of(vpd_->ctl({"vp0"}).out, "dirty logging").rfind("off (", 0), 0u);
  EXPECT_EQ(counters().value("tx_packets", 0u), 3u) << counters().dump();
}

TEST_P(VhostUser, send_rarp_puts_qemus_announcement_on_the_tap) {
  attach();
  Fd capture = packet_socket("vp0");
  ASSERT_TRUE(capture);
  const std::array<uint8_t, 6> mac{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
  uint64_t payload = 0;
  std::memcpy(&payload, mac.data(), mac.size());
  ASSERT_TRUE(fe_->request_u64(vhost::Request::kSendRarp, payload)) << vpd_->log();
  // What QEMU's qemu_announce_self() builds: a 60-byte RARP request (RFC 903), broadcast.
  std::vector<uint8_t> expected(60, 0);
  std::fill_n(expected.begin(), 6, 0xff);
  std::copy(mac.begin(), mac.end(), expected.begin() + 6);
  const uint8_t rarp[] = {0x80, 0x35, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03};
  std::copy(std::begin(rarp), std::end(rarp), expected.begin() + 12);
  std::copy(mac.begin(), mac.end(), expected.begin() + 22);  // sender hardware address
  std::copy(mac.begin(), mac.end(), expected.begin() + 32);  // target hardware address
  std::vector<uint8_t> got;
  for (int i = 0; i < 20 && got != expected; ++i) {
    pollfd p{capture.get(), POLLIN, 0};
    if (::poll(&p, 1, 250) != 1) continue;
    std::vector<uint8_t> frame(2048);
    const ssize_t n = ::recv(capture.get(), frame.data(), frame.size(), 0);
    if (n < 14 || frame[12] != 0x80 || frame[13] != 0x35) continue;  // other traffic
    frame.resize(static_cast<size_t>(n));
    got = frame;
  }
  EXPECT_EQ(got, expected) << vpd_->log();
}

INSTANTIATE_TEST_SUITE_P(Rings, VhostUser, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return param_info.param ? "packed" : "split";
                         });

// --- Queue pairs on their own workers (vpd --workers 2) --------------------------------------

class VhostUserTwoWorkers : public VhostUser {
 protected:
  std::vector<std::string> vpd_args() const override { return {"--workers", "2"}; }

  // status.queue_workers of `endpoint` once both pairs show a worker (or after 5 s).
  nlohmann::json queue_workers(const std::string& endpoint = "vp0") {
    nlohmann::json w;
    for (int i = 0; i < 250; ++i) {
      w = vpd_->ctl_json({endpoint})["status"]["queue_workers"];
      if (w.is_array() && w.size() == 2 && w[0].is_number() && w[1].is_number()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return w;
  }

  // Asserts that pair 0 and pair 1 of `endpoint` run on two different workers.
  void expect_pairs_apart(const std::string& endpoint = "vp0") {
    const auto w = queue_workers(endpoint);
    ASSERT_TRUE(w.is_array() && w.size() == 2 && w[0].is_number() && w[1].is_number())
        << w.dump() << "\n"
        << vpd_->log();
    EXPECT_NE(w[0], w[1]) << "pair 1 runs on another worker than pair 0: " << w.dump();
  }

  // A UDP datagram's payload that says which pair sent it and its number.
  static std::vector<uint8_t> tagged(uint32_t pair, uint32_t n) {
    std::vector<uint8_t> p = pattern(48, static_cast<uint8_t>(n * 3 + pair));
    p[0] = static_cast<uint8_t>(pair);
    p[1] = static_cast<uint8_t>(n >> 8);
    p[2] = static_cast<uint8_t>(n & 0xff);
    return p;
  }

  // Posts frames first..first+count-1 of `pair` to the host socket on port 7000 and kicks.
  void post_tagged(uint32_t pair, uint32_t first, uint32_t count) {
    const uint32_t ring = pair == 0 ? kTx : kTx1;
    for (uint32_t n = first; n < first + count; ++n) {
      ASSERT_TRUE(fe_->post_tx(ring, guest_udp(mac_, 7000, tagged(pair, n), 0))) << n;
    }
    ASSERT_TRUE(fe_->kick(ring));
  }

  // Gives back the used TX chains of both pairs (as a driver does).
  void reclaim_tx() {
    for (const uint32_t ring : {kTx, kTx1}) {
      while (fe_->next_used(ring)) {
      }
    }
  }

  // Receives datagrams on `host` until `want` (or 10 s), each checked against tagged():
  // every one intact and none twice. Returns how many of each pair arrived.
  std::array<uint32_t, 2> receive_tagged(const Fd& host, size_t want) {
    std::array<uint32_t, 2> per_pair{};
    std::set<std::pair<uint32_t, uint32_t>> seen;
    const auto deadline = steady_clock::now() + std::chrono::seconds(10);
    while (seen.size() < want && steady_clock::now() < deadline) {
      reclaim_tx();
      for (auto& d : receive_datagrams(host, want - seen.size(), std::chrono::milliseconds(50))) {
        EXPECT_EQ(d.size(), 48u);
        if (d.size() != 48 || d[0] > 1) continue;
        const uint32_t pair = d[0];
        const uint32_t n = uint32_t(d[1]) << 8 | d[2];
        EXPECT_EQ(d, tagged(pair, n)) << "pair " << pair << " frame " << n << " intact";
        EXPECT_TRUE(seen.insert({pair, n}).second) << "pair " << pair << " frame " << n << " twice";
        ++per_pair[pair];
      }
    }
    return per_pair;
  }

  // The per-pair counters once pair `pair`'s tx_packets reached `tx` (or after 5 s).
  nlohmann::json queue_counters_at(uint32_t pair, uint64_t tx) {
    return queue_counters_when([&](const nlohmann::json& q) {
      return q.is_array() && q.size() == 2 && q[pair].value("tx_packets", 0u) >= tx;
    });
  }

  void start_traffic_setup() {
    attach_two_pairs(/*enable_pair1=*/true);
    mac_ = vp0_mac();
  }

  // The host socket on port 7000, with room for every datagram a test sends before it reads
  // (the default receive buffer holds about 270 of them).
  static Fd host_socket() {
    Fd s = host_udp_socket(7000);
    const int bytes = 8 << 20;
    if (s) (void)::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes);
    return s;
  }

  std::array<uint8_t, 6> mac_{};
};

TEST_P(VhostUserTwoWorkers, both_pairs_on_their_own_workers_carry_frames_both_ways_exactly) {
  start_traffic_setup();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  const std::string view = vpd_->ctl({"vp0"}).out;
  EXPECT_NE(view.find("queue workers"), std::string::npos) << view;
  EXPECT_NE(view.find("pair 1 on worker"), std::string::npos) << view;

  // Guest -> host: 100 frames on each pair, every one delivered intact and counted on its pair.
  Fd host = host_socket();
  ASSERT_TRUE(host);
  constexpr uint32_t kEach = 100;
  post_tagged(0, 0, kEach);
  post_tagged(1, 0, kEach);
  const auto per_pair = receive_tagged(host, 2 * kEach);
  EXPECT_EQ(per_pair[0], kEach) << vpd_->log();
  EXPECT_EQ(per_pair[1], kEach) << vpd_->log();
  const auto q = queue_counters_at(1, kEach);
  ASSERT_TRUE(q.is_array() && q.size() == 2) << q.dump();
  const uint64_t frame_bytes = 14 + 20 + 8 + 48;
  for (uint32_t pair = 0; pair < 2; ++pair) {
    EXPECT_EQ(q[pair].value("tx_packets", 0u), kEach) << q.dump();
    EXPECT_EQ(q[pair].value("tx_bytes", 0u), kEach * frame_bytes) << q.dump();
    EXPECT_EQ(q[pair].value("tx_dropped", 9u), 0u) << q.dump();
  }
  EXPECT_EQ(counters().value("tx_packets", 0u), 2 * kEach) << counters().dump();

  // Host -> guest: flows spread over both TAP queues reach both RX rings; the pairs' RX
  // counts add up to the endpoint's.
  int on_rx0 = 0;
  int on_rx1 = 0;
  for (const uint32_t rx : {kRx, kRx1}) {
    for (int i = 0; i < 64; ++i) ASSERT_TRUE(fe_->post_rx(rx));
    ASSERT_TRUE(fe_->kick(rx));
  }
  send_udp_flows(32);
  count_udp_flows({{kRx, &on_rx0}, {kRx1, &on_rx1}}, 32, std::chrono::seconds(5));
  EXPECT_EQ(on_rx0 + on_rx1, 32) << vpd_->log();
  EXPECT_GT(on_rx1, 0) << "TAP queue 1 feeds pair 1 on its worker";
  nlohmann::json status;
  uint64_t pairs_sum = 0;
  for (int i = 0; i < 250; ++i) {
    status = vpd_->ctl_json({"vp0"})["status"];
    const auto& qc = status["queue_counters"];
    pairs_sum = qc[0].value("rx_packets", 0u) + qc[1].value("rx_packets", 0u);
    if (pairs_sum >= 32 && pairs_sum == status["counters"].value("rx_packets", 0u)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(status["queue_counters"][1].value("rx_packets", 0), on_rx1) << status.dump();
  EXPECT_EQ(pairs_sum, status["counters"].value("rx_packets", 0u)) << status.dump();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
}

TEST_P(VhostUserTwoWorkers, pair1_restarted_and_a_new_memory_table_while_it_sends_lose_no_frame) {
  start_traffic_setup();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  Fd host = host_socket();
  ASSERT_TRUE(host);
  constexpr uint32_t kBatch = 40;
  constexpr uint32_t kRounds = 8;
  for (uint32_t round = 0; round < kRounds; ++round) {
    // Frames in flight on pair 1's worker, then at once a message that takes the pair back.
    post_tagged(1, round * kBatch, kBatch);
    if (round % 2 == 0) {
      ASSERT_TRUE(fe_->get_vring_base(kRx1)) << vpd_->log();
      ASSERT_TRUE(fe_->get_vring_base(kTx1)) << vpd_->log();
      ASSERT_TRUE(fe_->setup_queue(kRx1, 256)) << vpd_->log();
      ASSERT_TRUE(fe_->setup_queue(kTx1, 256)) << vpd_->log();
      ASSERT_TRUE(fe_->kick(kTx1));
    } else {
      ASSERT_TRUE(fe_->set_mem_table()) << vpd_->log();
    }
    reclaim_tx();
  }
  const auto per_pair = receive_tagged(host, kRounds * kBatch);
  EXPECT_EQ(per_pair[1], kRounds * kBatch) << vpd_->log();
  EXPECT_EQ(per_pair[0], 0u);
  const auto q = queue_counters_at(1, kRounds * kBatch);
  EXPECT_EQ(q[1].value("tx_packets", 0u), kRounds * kBatch) << q.dump();
  EXPECT_EQ(q[1].value("tx_dropped", 9u), 0u) << q.dump();
  EXPECT_EQ(q[0].value("tx_packets", 9u), 0u) << q.dump();
  EXPECT_EQ(counters().value("tx_packets", 0u), kRounds * kBatch) << counters().dump();
  // Lent out again once its rings ran again.
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
}

TEST_P(VhostUserTwoWorkers,
       session_closed_and_endpoint_destroyed_while_pair1_sends_leave_vpd_serving) {
  start_traffic_setup();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  // The front-end goes away with frames on pair 1's ring.
  post_tagged(1, 0, 100);
  fe_.reset();
  bool listening = false;
  for (int i = 0; i < 250 && !listening; ++i) {
    listening = vpd_->ctl_json({"vp0"})["status"].value("guest", "") == "listening";
    if (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(listening) << vpd_->ctl_json({"vp0"}).dump() << vpd_->log();

  // A new session gets both pairs on their workers again and pair 1 carries frames.
  start_traffic_setup();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  {
    Fd host = host_socket();
    ASSERT_TRUE(host);
    post_tagged(1, 0, 20);
    EXPECT_EQ(receive_tagged(host, 20)[1], 20u) << vpd_->log();
  }

  // Destroyed with frames on pair 1's ring: the daemon goes on serving other endpoints.
  post_tagged(1, 20, 100);
  ASSERT_EQ(vpd_->ctl({"vp0", "destroy"}).status, 0) << vpd_->log();
  fe_.reset();
  ASSERT_TRUE(vpd_->alive());
  ASSERT_EQ(vpd_->ctl({"vp0", "create", "address=10.98.0.1/24", "up"}).status, 0) << vpd_->log();
  start_traffic_setup();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  Fd host = host_socket();
  ASSERT_TRUE(host);
  post_tagged(1, 0, 20);
  post_tagged(0, 0, 20);
  const auto per_pair = receive_tagged(host, 40);
  EXPECT_EQ(per_pair[0], 20u) << vpd_->log();
  EXPECT_EQ(per_pair[1], 20u) << vpd_->log();
  EXPECT_TRUE(vpd_->alive());
}

// vp0's pair 1 runs on vp1's worker and vp1's on vp0's: both sessions ending at once make
// each worker take a pair back from the other while the other does the same.
TEST_P(VhostUserTwoWorkers, two_endpoints_with_crossed_pairs_restart_their_sessions_at_once) {
  ASSERT_EQ(vpd_->ctl({"vp0", "queues=2"}).status, 0);
  ASSERT_EQ(vpd_->ctl({"vp1", "create", "queues=2", "up"}).status, 0) << vpd_->log();
  auto connect = [&](const std::string& endpoint, std::string& why) {
    std::unique_ptr<VhostFrontend> fe;
    auto c = VhostFrontend::connect(vpd_->runtime_dir() + "/" + endpoint + ".sock",
                                    VhostFrontend::Options{});
    if (!c) {
      why = c.error().message;
      return fe;
    }
    uint64_t features = ~0ull;
    if (!GetParam()) features &= ~virtio::kFeatureRingPacked;
    Result<void> ok = (*c)->negotiate(features, ~0ull);
    if (ok) ok = (*c)->set_mem_table();
    for (uint32_t ring = 0; ok && ring < 4; ++ring) ok = (*c)->setup_queue(ring, 256);
    if (!ok) {
      why = ok.error().message;
      return fe;
    }
    return std::move(*c);
  };
  std::string why0;
  std::string why1;
  auto fe0 = connect("vp0", why0);
  auto fe1 = connect("vp1", why1);
  ASSERT_TRUE(fe0 && fe1) << why0 << why1 << vpd_->log();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart("vp0"));
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart("vp1"));
  const auto w0 = queue_workers("vp0");
  const auto w1 = queue_workers("vp1");
  EXPECT_EQ(w0[0], w1[1]) << "vp1's pair 1 runs on vp0's worker: " << w0 << w1;
  EXPECT_EQ(w0[1], w1[0]) << "vp0's pair 1 runs on vp1's worker: " << w0 << w1;

  // Each endpoint's front-end closes and comes back, both at the same time, 50 times.
  constexpr int kRestarts = 50;
  auto restart = [&](const std::string& endpoint, std::unique_ptr<VhostFrontend>& fe,
                     std::string& why) {
    for (int i = 0; i < kRestarts && why.empty(); ++i) {
      // Frames on pair 1's ring as the session ends: its worker is busy with them.
      for (int f = 0; f < 16; ++f) (void)fe->post_tx(kTx1, arp_request(1, 0, 3));
      (void)fe->kick(kTx1);
      fe.reset();
      for (int tries = 0; tries < 500 && !fe; ++tries) {
        why.clear();
        fe = connect(endpoint, why);  // refused while vpd still ends the old session
        if (!fe) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  };
  std::thread t0([&] { restart("vp0", fe0, why0); });
  std::thread t1([&] { restart("vp1", fe1, why1); });
  t0.join();
  t1.join();
  ASSERT_TRUE(fe0 && fe1) << why0 << " / " << why1 << vpd_->log();
  ASSERT_TRUE(vpd_->alive());
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart("vp0"));
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart("vp1"));
  for (const std::string endpoint : {"vp0", "vp1"}) {
    EXPECT_EQ(vpd_->ctl_json({endpoint})["status"]["session"].value("queues_running", 0u), 4u)
        << endpoint;
  }
  // vp0's pair 1 still forwards: a frame from it reaches the host.
  fe_ = std::move(fe0);
  mac_ = vp0_mac();
  Fd host = host_socket();
  ASSERT_TRUE(host);
  post_tagged(1, 0, 10);
  EXPECT_EQ(receive_tagged(host, 10)[1], 10u) << vpd_->log();
}

TEST_P(VhostUserTwoWorkers, tx_rate_keeps_both_pairs_on_the_owner_until_it_is_cleared) {
  start_traffic_setup();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  // The limit is one bucket for the endpoint: pair 1 comes home while it is set.
  ASSERT_EQ(vpd_->ctl({"vp0", "tx-rate=100mbit"}).status, 0) << vpd_->log();
  nlohmann::json w;
  for (int i = 0; i < 250; ++i) {
    w = vpd_->ctl_json({"vp0"})["status"]["queue_workers"];
    if (w.is_array() && w.size() == 2 && w[0] == w[1]) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(w.is_array() && w.size() == 2 && w[0].is_number()) << w.dump();
  EXPECT_EQ(w[0], w[1]) << "with tx-rate= both pairs run on the owner: " << w.dump();
  {
    Fd host = host_socket();
    ASSERT_TRUE(host);
    post_tagged(1, 0, 20);
    EXPECT_EQ(receive_tagged(host, 20)[1], 20u) << "pair 1 still forwards on the owner";
  }
  ASSERT_EQ(vpd_->ctl({"vp0", "-tx-rate"}).status, 0) << vpd_->log();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  Fd host = host_socket();
  ASSERT_TRUE(host);
  post_tagged(1, 20, 20);
  EXPECT_EQ(receive_tagged(host, 20)[1], 20u) << vpd_->log();
  const auto q = queue_counters_at(1, 40);
  EXPECT_EQ(q[1].value("tx_packets", 0u), 40u) << q.dump();
}

TEST_P(VhostUserTwoWorkers, priority_keeps_both_pairs_on_the_owner_until_it_is_cleared) {
  start_traffic_setup();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  // priority= raises the owner's thread only: pair 1 comes home while it is set.
  ASSERT_EQ(vpd_->ctl({"vp0", "priority=10"}).status, 0) << vpd_->log();
  nlohmann::json w;
  for (int i = 0; i < 250; ++i) {
    w = vpd_->ctl_json({"vp0"})["status"]["queue_workers"];
    if (w.is_array() && w.size() == 2 && w[0] == w[1]) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(w.is_array() && w.size() == 2 && w[0].is_number()) << w.dump();
  EXPECT_EQ(w[0], w[1]) << "with priority= both pairs run on the owner: " << w.dump();
  ASSERT_EQ(vpd_->ctl({"vp0", "priority=0"}).status, 0) << vpd_->log();
  ASSERT_NO_FATAL_FAILURE(expect_pairs_apart());
  Fd host = host_socket();
  ASSERT_TRUE(host);
  post_tagged(1, 0, 20);
  EXPECT_EQ(receive_tagged(host, 20)[1], 20u) << vpd_->log();
}

TEST(VpdWorkersOption, a_count_outside_1_to_64_or_not_a_number_is_refused_with_a_sentence) {
  for (const std::string bad : {"0", "65", "two", "-1", "2x"}) {
    const vp::test::Run r =
        run({VPD_BINARY, "--workers", bad, "--check-config", "--config", "/dev/null"});
    EXPECT_NE(r.status, 0) << bad;
    EXPECT_NE(
        r.err.find("--workers takes a number of data-path threads from 1 to 64, not '" + bad + "'"),
        std::string::npos)
        << bad << ": " << r.err;
  }
  const vp::test::Run help = run({VPD_BINARY, "--help"});
  EXPECT_NE(help.out.find("--workers N"), std::string::npos) << help.out;
}

INSTANTIATE_TEST_SUITE_P(Rings, VhostUserTwoWorkers, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return param_info.param ? "packed" : "split";
                         });

}  // namespace
}  // namespace vp::test
