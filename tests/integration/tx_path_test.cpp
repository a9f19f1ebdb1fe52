// Guest→host through both TAP write paths of a real vpd: io_uring (the default where the kernel
// allows it) and writev (vpd --no-io-uring, or a seccomp filter that refuses io_uring_setup as a
// hardened unit could), on split and packed rings. Frames from the test
// front-end must reach a host UDP socket intact and in order, every one counted, and a ring
// stopped (GET_VRING_BASE) while frames flow must have every buffer vpd took back on its used
// ring before the answer.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <array>
#include <chrono>
#include <cstring>
#include <thread>
#include <tuple>

#include "support/harness.hpp"
#include "support/vhost_frontend.hpp"
#include "virtio/queue.hpp"

namespace vp::test {
namespace {

using std::chrono::steady_clock;

constexpr std::array<uint8_t, 6> kGuestMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x57};
constexpr uint32_t kRx = 0;
constexpr uint32_t kTx = 1;
constexpr uint16_t kPort = 7100;

uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}
uint32_t sum16(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  if (n & 1) sum += uint32_t(p[n - 1]) << 8;
  return sum;
}
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v & 0xff);
}

// Payload `i` of a run: its size and bytes tell the frames apart.
std::vector<uint8_t> payload(int i) {
  std::vector<uint8_t> p(1 + (i * 37) % 1400);
  for (size_t k = 0; k < p.size(); ++k) p[k] = static_cast<uint8_t>(i * 13 + k * 7);
  return p;
}

// A 12-byte zero virtio header, then Ethernet/IPv4/UDP with complete checksums from the guest
// (10.98.0.2:5000) to `dst_mac`, 10.98.0.1:kPort.
std::vector<std::byte> guest_udp(const std::array<uint8_t, 6>& dst_mac,
                                 const std::vector<uint8_t>& data) {
  // Headers first (a fixed array: GCC 12 sees through no vector bounds here), then the data.
  std::array<uint8_t, 12 + 14 + 20 + 8> h{};
  uint8_t* e = h.data() + 12;
  std::memcpy(e, dst_mac.data(), 6);
  std::memcpy(e + 6, kGuestMac.data(), 6);
  e[12] = 0x08;
  uint8_t* ip = e + 14;
  ip[0] = 0x45;
  put16(ip + 2, static_cast<uint16_t>(20 + 8 + data.size()));
  ip[8] = 64;
  ip[9] = 17;
  const uint8_t addrs[8] = {10, 98, 0, 2, 10, 98, 0, 1};
  std::memcpy(ip + 12, addrs, 8);
  put16(ip + 10, static_cast<uint16_t>(~fold(sum16(ip, 20))));
  uint8_t* udp = ip + 20;
  put16(udp, 5000);
  put16(udp + 2, kPort);
  put16(udp + 4, static_cast<uint16_t>(8 + data.size()));
  const uint32_t pseudo = sum16(ip + 12, 8) + 17 + 8 + static_cast<uint32_t>(data.size());
  // The UDP checksum covers the header (checksum field still 0) and the data.
  uint32_t sum = sum16(udp, 8, pseudo);
  sum = sum16(data.data(), data.size(), sum);
  uint16_t csum = static_cast<uint16_t>(~fold(sum));
  if (csum == 0) csum = 0xffff;
  put16(udp + 6, csum);
  std::vector<uint8_t> f(h.begin(), h.end());
  f.insert(f.end(), data.begin(), data.end());
  std::vector<std::byte> out(f.size());
  std::memcpy(out.data(), f.data(), f.size());
  return out;
}

// Ethernet bytes of frame `i` (what tx_bytes counts).
uint64_t eth_bytes(int i) { return 14 + 20 + 8 + payload(i).size(); }

// Makes io_uring_setup fail with EPERM in this process and what it starts (the filter is
// inherited across fork and exec), as a unit's SystemCallFilter= without io_uring would.
bool refuse_io_uring_setup() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

/// How vpd is started.
enum class Start { kDefault, kNoIoUringFlag, kSeccompRefusesIoUring };

/// Parameter: (packed ring, how vpd starts).
class TxPath : public ::testing::TestWithParam<std::tuple<bool, Start>> {
 protected:
  bool packed() const { return std::get<0>(GetParam()); }
  Start how() const { return std::get<1>(GetParam()); }
  /// This machine's kernel allows io_uring (kernel.io_uring_disabled is 0 here).
  bool uring() const { return how() == Start::kDefault; }

  void SetUp() override {
    ASSERT_EQ(enter_private_netns(), "");
    vpd_ = std::make_unique<Vpd>(dir_.path());
    std::vector<std::string> args;
    if (how() == Start::kNoIoUringFlag) args.push_back("--no-io-uring");
    if (how() == Start::kSeccompRefusesIoUring) {
      ASSERT_TRUE(refuse_io_uring_setup()) << std::strerror(errno);
    }
    ASSERT_EQ(vpd_->start(args), "");
    ASSERT_EQ(vpd_->ctl({"vp0", "create", "address=10.98.0.1/24", "up"}).status, 0);
    auto fe = VhostFrontend::connect(vpd_->runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
    ASSERT_TRUE(fe) << fe.error().message;
    fe_ = std::move(*fe);
    uint64_t features = ~0ull;
    if (!packed()) features &= ~virtio::kFeatureRingPacked;
    ASSERT_TRUE(fe_->negotiate(features, ~0ull)) << vpd_->log();
    ASSERT_TRUE(fe_->set_mem_table()) << vpd_->log();
    ASSERT_TRUE(fe_->setup_queue(kRx, 256)) << vpd_->log();
    ASSERT_TRUE(fe_->setup_queue(kTx, 256)) << vpd_->log();
    for (int i = 0; i < 300; ++i) {
      if (link_json("vp0").value("operstate", "") == "UP") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::string text = link_json("vp0").value("address", "");
    unsigned b[6] = {};
    ASSERT_EQ(
        std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]),
        6);
    for (int i = 0; i < 6; ++i) vp0_mac_[i] = static_cast<uint8_t>(b[i]);
    sock_ = Fd(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(sock_);
    const int rcvbuf = 8 << 20;
    ::setsockopt(sock_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kPort);
    ::inet_pton(AF_INET, "10.98.0.1", &a.sin_addr);
    ASSERT_EQ(::bind(sock_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }

  nlohmann::json counters() { return vpd_->ctl_json({"vp0"})["status"]["counters"]; }

  // Buffers vpd gave back on the TX ring within `timeout`, until `want` of them.
  int reclaim(int want, std::chrono::milliseconds timeout) {
    int got = 0;
    const auto deadline = steady_clock::now() + timeout;
    while (got < want && steady_clock::now() < deadline) {
      if (auto used = fe_->next_used(kTx)) {
        EXPECT_EQ(used->len, 0u) << "vpd writes nothing into a TX buffer";
        ++got;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    return got;
  }

  // Checks that the next datagrams on the socket are payloads [first, first + n), in order.
  void expect_datagrams(int first, int n) {
    std::vector<uint8_t> buf(65536);
    const auto deadline = steady_clock::now() + std::chrono::seconds(5);
    for (int i = first; i < first + n;) {
      pollfd p{sock_.get(), POLLIN, 0};
      if (steady_clock::now() > deadline) {
        ADD_FAILURE() << "datagram " << i << " never arrived; " << counters().dump();
        return;
      }
      if (::poll(&p, 1, 20) != 1) continue;
      const ssize_t len = ::recv(sock_.get(), buf.data(), buf.size(), 0);
      ASSERT_GT(len, 0);
      const std::vector<uint8_t> want = payload(i);
      ASSERT_EQ(std::vector<uint8_t>(buf.begin(), buf.begin() + len), want)
          << "datagram " << i << " (of " << first << ".." << first + n - 1 << ")";
      ++i;
    }
  }

  TempDir dir_;
  std::unique_ptr<Vpd> vpd_;
  std::unique_ptr<VhostFrontend> fe_;
  std::array<uint8_t, 6> vp0_mac_{};
  Fd sock_;
};

TEST_P(TxPath, guest_frames_reach_a_host_socket_intact_in_order_and_counted) {
  const auto session = vpd_->ctl_json({"vp0"})["status"]["session"];
  EXPECT_EQ(session.value("tx_path", ""), uring() ? "io_uring" : "writev") << session.dump();
  const test::Run shown = vpd_->ctl({"vp0"});
  const size_t at = shown.out.find("tx path:");
  ASSERT_NE(at, std::string::npos) << shown.out;
  const std::string line = shown.out.substr(at, shown.out.find('\n', at) - at);
  EXPECT_TRUE(line.ends_with(uring() ? " io_uring" : " writev")) << line;
  const std::string log = vpd_->log();
  switch (how()) {
    case Start::kDefault:
      EXPECT_NE(log.find("guest->host path: io_uring"), std::string::npos) << log;
      break;
    case Start::kNoIoUringFlag:
      EXPECT_NE(log.find("guest->host path: writev"), std::string::npos) << log;
      break;
    case Start::kSeccompRefusesIoUring: {
      // Said once, for the daemon, not once per queue or endpoint.
      const std::string said =
          "io_uring unavailable (io_uring_queue_init: Operation not permitted): using the writev "
          "path";
      const size_t first = log.find(said);
      EXPECT_NE(first, std::string::npos) << log;
      EXPECT_EQ(log.find("io_uring unavailable", first + 1), std::string::npos) << log;
      break;
    }
  }

  // 1000 frames in batches of up to 200, four ring wraps, each batch more than one io_uring
  // submission: every frame arrives once, whole, in the order the guest sent it.
  constexpr int kFrames = 1000;
  uint64_t bytes = 0;
  for (int sent = 0; sent < kFrames;) {
    const int batch = std::min(kFrames - sent, 1 + (sent * 7) % 200);
    for (int i = sent; i < sent + batch; ++i) {
      ASSERT_TRUE(fe_->post_tx(kTx, guest_udp(vp0_mac_, payload(i)))) << "frame " << i;
      bytes += eth_bytes(i);
    }
    ASSERT_TRUE(fe_->kick(kTx));
    ASSERT_EQ(reclaim(batch, std::chrono::seconds(5)), batch) << counters().dump();
    expect_datagrams(sent, batch);
    if (HasFatalFailure()) return;
    sent += batch;
  }
  const auto c = counters();
  EXPECT_EQ(c.value("tx_packets", 0u), static_cast<uint64_t>(kFrames)) << c.dump();
  EXPECT_EQ(c.value("tx_bytes", 0u), bytes) << c.dump();
  for (const auto& [name, value] : c.items()) {
    if (name.starts_with("tx_dropped") || name == "tap_write_fails" || name == "tx_tap_full") {
      EXPECT_EQ(value.get<uint64_t>(), 0u) << name << " in " << c.dump();
    }
  }
}

TEST_P(TxPath, ring_stopped_while_frames_flow_has_every_taken_buffer_back_first) {
  // 200 frames posted at once, then GET_VRING_BASE at once: whatever vpd took by then is
  // written and on the used ring before the answer; the rest waits in the ring.
  constexpr int kFrames = 200;
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_TRUE(fe_->post_tx(kTx, guest_udp(vp0_mac_, payload(i))));
  }
  ASSERT_TRUE(fe_->kick(kTx));
  auto base = fe_->get_vring_base(kTx);
  ASSERT_TRUE(base) << base.error().message << vpd_->log();
  // The next chain vpd would have taken: 200 chains of one descriptor fit one lap (no wrap).
  const uint32_t taken = *base & 0x7fff;
  ASSERT_LE(taken, static_cast<uint32_t>(kFrames));
  if (packed()) {
    EXPECT_EQ(*base >> 16 & 0x7fff, taken) << "used position = avail position: none held";
  }
  int returned = 0;
  while (fe_->next_used(kTx)) ++returned;
  EXPECT_EQ(returned, static_cast<int>(taken)) << "every chain taken is back, nothing more";
  EXPECT_EQ(counters().value("tx_packets", 0u), taken);
  expect_datagrams(0, static_cast<int>(taken));

  // The ring restarts where it stopped; the rest goes out after it.
  ASSERT_TRUE(fe_->setup_queue(kTx, 256)) << vpd_->log();
  ASSERT_TRUE(fe_->kick(kTx));
  const int rest = kFrames - static_cast<int>(taken);
  ASSERT_EQ(reclaim(rest, std::chrono::seconds(5)), rest) << counters().dump();
  expect_datagrams(static_cast<int>(taken), rest);
  EXPECT_EQ(counters().value("tx_packets", 0u), static_cast<uint64_t>(kFrames));
  EXPECT_EQ(counters().value("tap_write_fails", 0u), 0u);
}

std::string start_name(Start how) {
  switch (how) {
    case Start::kDefault:
      return "io_uring";
    case Start::kNoIoUringFlag:
      return "no_io_uring";
    case Start::kSeccompRefusesIoUring:
      return "seccomp";
  }
  return "?";
}

INSTANTIATE_TEST_SUITE_P(
    Rings, TxPath,
    ::testing::Combine(::testing::Bool(), ::testing::Values(Start::kDefault, Start::kNoIoUringFlag,
                                                            Start::kSeccompRefusesIoUring)),
    [](const auto& p) {
      return std::string(std::get<0>(p.param) ? "packed_" : "split_") +
             start_name(std::get<1>(p.param));
    });

}  // namespace
}  // namespace vp::test
