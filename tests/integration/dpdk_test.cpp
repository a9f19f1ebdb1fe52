// DPDK virtio-user as the front-end of a vpd endpoint: dpdk-testpmd is a vhost-user driver
// written independently of QEMU and of this project's test front-end, so it checks vpd
// against another reading of the protocol (for packed rings it sends SET_VRING_BASE with the
// available half only). Split and packed rings, one and two queue pairs, frames both ways,
// each run well past one ring of frames: a ring that stops after its first lap fails here.
//
// dpdk-testpmd must be installed (Debian 12: package dpdk-dev); without it these tests fail.

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "integration/vpd_fixture.hpp"
#include "support/testpmd.hpp"
#include "sys/fd.hpp"

namespace vp::test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Small rings, so that ten laps of each take little time even on a loaded machine; the
// counts asserted below are ten rings of frames per queue.
constexpr uint32_t kQueueSize = 64;
constexpr uint32_t kLaps = 10;
// testpmd's EAL start-up alone can take seconds when the cores are busy.
constexpr milliseconds kStartTimeout{20000};
// Each direction's traffic, when it flows, takes well under a second; a ring that stalls
// fails after this.
constexpr milliseconds kTrafficTimeout{8000};

bool wait_until(const std::function<bool()>& done, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

enum class LinkStat { kRxPackets = 1, kTxPackets = 9, kTxDropped = 11 };

/// A counter of `ifname` from /proc/net/dev, which shows the reader's network namespace
/// (/sys/class/net shows the namespace sysfs was mounted in).
uint64_t link_stat(const std::string& ifname, LinkStat which) {
  const std::string text = read_text("/proc/net/dev").value_or("");
  const size_t at = text.find(" " + ifname + ":");
  if (at == std::string::npos) return 0;
  const char* p = text.c_str() + at + ifname.size() + 2;
  // Receive: bytes packets errs drop fifo frame compressed multicast; then Transmit: bytes
  // packets errs drop ...
  uint64_t value = 0;
  for (int field = 0; field <= static_cast<int>(which); ++field) {
    char* end = nullptr;
    value = std::strtoull(p, &end, 10);
    p = end;
  }
  return value;
}

/// The numbers after each `key` in `text`, in order ("RX-packets: 12" -> 12).
std::vector<uint64_t> numbers_after(const std::string& text, const std::string& key) {
  std::vector<uint64_t> out;
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    out.push_back(std::strtoull(text.c_str() + at + key.size(), nullptr, 10));
  }
  return out;
}

/// Starts `t` as the driver of the vhost-user socket `socket` (two lcores, one per cpu). ""
/// or why not.
std::string start_testpmd(Testpmd& t, const std::string& socket, bool packed, uint32_t queues,
                          bool in_order_without_mrg_rxbuf, const std::string& log_path) {
  std::string vdev = "net_virtio_user0,path=" + socket +
                     ",queue_size=" + std::to_string(kQueueSize) +
                     ",queues=" + std::to_string(queues);
  if (packed) vdev += ",packed_vq=1";
  if (in_order_without_mrg_rxbuf) vdev += ",in_order=1,mrg_rxbuf=0";
  const std::string q = std::to_string(queues);
  return t.start("0,1", {vdev}, {"--txpkts=64", "--rxq=" + q, "--txq=" + q}, log_path, "vpd-test");
}

/// A UDP/IPv4 broadcast frame (60 bytes) of flow `flow`: the source port varies, so that the
/// TAP spreads the frames over its queues.
std::array<uint8_t, 60> host_frame(uint16_t flow) {
  std::array<uint8_t, 60> f{};
  std::memset(f.data(), 0xff, 6);                               // to: broadcast
  const uint8_t src[6] = {0x02, 0x00, 0x5e, 0x10, 0x00, 0x01};  // locally administered
  std::memcpy(f.data() + 6, src, 6);
  f[12] = 0x08;  // IPv4
  uint8_t* ip = f.data() + 14;
  ip[0] = 0x45;
  ip[3] = 46;  // total length: 20 + 8 + 18
  ip[8] = 64;
  ip[9] = 17;  // UDP
  const uint8_t from[4] = {198, 18, 1, 1}, to[4] = {198, 18, 1, 2};
  std::memcpy(ip + 12, from, 4);
  std::memcpy(ip + 16, to, 4);
  uint8_t* udp = ip + 20;
  udp[0] = static_cast<uint8_t>(0x40 | (flow >> 8));
  udp[1] = static_cast<uint8_t>(flow);
  udp[2] = 0x13;
  udp[3] = 0x89;
  udp[5] = 26;
  return f;
}

struct Case {
  bool packed;
  uint32_t queues;
  /// virtio-user's in_order=1 and mrg_rxbuf=0: the driver asks for VIRTIO_F_IN_ORDER (vpd
  /// does not offer it, so the driver must do without) and posts one buffer per RX frame.
  bool in_order_without_mrg_rxbuf = false;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return std::string(info.param.packed ? "packed" : "split") + "_" +
         std::to_string(info.param.queues) + (info.param.queues == 1 ? "_pair" : "_pairs") +
         (info.param.in_order_without_mrg_rxbuf ? "_in_order_without_mrg_rxbuf" : "");
}

class DpdkVirtioUser : public VpdFixture, public ::testing::WithParamInterface<Case> {
 protected:
  void TearDown() override {
    if (HasFailure() && testpmd_) std::cerr << "---- testpmd ----\n" << testpmd_->log() << "\n";
    testpmd_.reset();
    VpdFixture::TearDown();
  }

  json stats() { return vpd().ctl_json({"vp0", "stats"}); }
  uint64_t counter(const std::string& name) {
    const json j = stats();
    if (!j.is_object()) return 0;
    return j.value("counters", json::object()).value(name, uint64_t{0});
  }

  std::unique_ptr<Testpmd> testpmd_;
};

// Guest -> host: testpmd's txonly on every queue, vpd writes into the TAP, the kernel counts
// and a packet socket sees them. Host -> guest: frames sent into the TAP from a packet
// socket, testpmd's rxonly counts them per queue.
TEST_P(DpdkVirtioUser, frames_cross_both_ways_for_ten_rings_per_queue) {
  const Case c = GetParam();
  // No IPv6 on the TAP: the kernel then sends nothing of its own to the guest.
  write_text("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
  // With several pairs, two data-path workers: pair 1 runs on the other one than pair 0.
  ASSERT_EQ(vpd().start(c.queues > 1 ? std::vector<std::string>{"--workers", "2"}
                                     : std::vector<std::string>{}),
            "");
  ok({"vp0", "create", "queues=" + std::to_string(c.queues), "up"});
  const std::string socket = vpd().runtime_dir() + "/vp0.sock";

  testpmd_ = std::make_unique<Testpmd>();
  ASSERT_EQ(start_testpmd(*testpmd_, socket, c.packed, c.queues, c.in_order_without_mrg_rxbuf,
                          path("testpmd.log")),
            "");
  const uint64_t rings = 2 * c.queues;
  ASSERT_TRUE(wait_until(
      [&] {
        const json j = stats();
        if (!j.is_object()) return false;
        return j.value("session", json::object()).value("queues_running", 0u) == rings;
      },
      kStartTimeout))
      << "the rings never all ran: " << stats().dump(2);
  const json session = stats()["session"];
  EXPECT_EQ(session.value("ring", ""), c.packed ? "packed" : "split") << session.dump(2);
  if (c.queues > 1) {
    const json workers = vpd().ctl_json({"vp0"})["status"]["queue_workers"];
    ASSERT_TRUE(workers.is_array() && workers.size() == 2 && workers[0].is_number() &&
                workers[1].is_number())
        << workers.dump();
    EXPECT_NE(workers[0], workers[1]) << "pair 1 runs on its own worker: " << workers.dump();
  }
  ASSERT_TRUE(testpmd_->wait_output("testpmd> ", 1, kStartTimeout));

  // ---- guest -> host ----
  Fd capture = test::packet_socket("vp0", SOCK_NONBLOCK);
  ASSERT_TRUE(capture);

  const uint64_t tx_want = uint64_t{kLaps} * kQueueSize * c.queues;
  const uint64_t host_rx_before = link_stat("vp0", LinkStat::kRxPackets);
  ASSERT_TRUE(testpmd_->command("set fwd txonly"));
  ASSERT_TRUE(testpmd_->command("start"));
  const bool tx_done =
      wait_until([&] { return counter("tx_packets") >= tx_want; }, kTrafficTimeout);
  ASSERT_TRUE(testpmd_->command("stop"));
  ASSERT_TRUE(testpmd_->wait_output("Accumulated forward statistics", 1, kTrafficTimeout));
  EXPECT_TRUE(tx_done) << "vpd's tx_packets stayed at " << counter("tx_packets") << " (wanted "
                       << tx_want << ")";
  EXPECT_GE(link_stat("vp0", LinkStat::kRxPackets) - host_rx_before, tx_want);
  EXPECT_EQ(counter("tx_dropped_malformed_chain"), 0u);
  // The frames the kernel got are testpmd's: 64-byte UDP/IPv4 frames.
  int seen = 0;
  uint8_t frame[2048];
  for (;;) {
    const ssize_t n = ::recv(capture.get(), frame, sizeof frame, 0);
    if (n < 0) break;
    if (n == 64 && frame[12] == 0x08 && frame[13] == 0x00 && frame[14 + 9] == 17) ++seen;
  }
  EXPECT_GT(seen, 0) << "no 64-byte UDP frame from testpmd reached vp0";
  capture.reset();
  {
    // Per stream (queue) with several queues; the port total last of each block.
    const std::string log = testpmd_->log();
    const auto tx = numbers_after(log, "TX-packets:");
    ASSERT_FALSE(tx.empty()) << log;
    if (c.queues > 1) {
      ASSERT_GE(tx.size(), c.queues + 2u) << log;
      for (uint32_t q = 0; q < c.queues; ++q) {
        EXPECT_GE(tx[q], uint64_t{kLaps} * kQueueSize) << "TX queue " << q;
      }
    }
    EXPECT_GE(tx.back(), tx_want) << "testpmd's TX total";
    // vpd's per-queue counters (vpctl --json vp0 stats): once it has taken every frame
    // testpmd sent, each pair counts what testpmd sent on its queue.
    json queues;
    const bool drained = wait_until(
        [&] {
          queues = stats().value("queues", json::array());
          return counter("tx_packets") == tx.back();
        },
        kTrafficTimeout);
    EXPECT_TRUE(drained) << "vpd's tx_packets " << counter("tx_packets") << ", testpmd sent "
                         << tx.back();
    ASSERT_EQ(queues.size(), c.queues) << queues.dump();
    for (uint32_t q = 0; q < c.queues; ++q) {
      EXPECT_EQ(queues[q].value("tx_packets", uint64_t{0}), c.queues > 1 ? tx[q] : tx.back())
          << "queue " << q << ": " << queues.dump();
      EXPECT_EQ(queues[q].value("tx_dropped", uint64_t{9}), 0u) << queues.dump();
    }
  }

  // ---- host -> guest ----
  ASSERT_TRUE(testpmd_->command("set fwd rxonly"));
  ASSERT_TRUE(testpmd_->command("start"));
  // Printed by start, before the forwarding cores run.
  ASSERT_TRUE(testpmd_->wait_output("rxonly packet forwarding - ports", 1, kTrafficTimeout));
  Fd sender = test::packet_socket("vp0");
  ASSERT_TRUE(sender);
  const uint64_t rx_want = uint64_t{kLaps} * kQueueSize * c.queues;
  const uint64_t rx_before = counter("rx_packets");
  const uint64_t tap_read_before = link_stat("vp0", LinkStat::kTxPackets);
  const uint64_t tap_drop_before = link_stat("vp0", LinkStat::kTxDropped);
  uint64_t sent = 0;
  const auto deadline = Clock::now() + kTrafficTimeout;
  // The TAP drops what its queue cannot hold, so keep at most a few rings of frames ahead of
  // what vpd has read from it.
  while (sent < rx_want && Clock::now() < deadline) {
    const uint64_t taken = link_stat("vp0", LinkStat::kTxPackets) - tap_read_before +
                           link_stat("vp0", LinkStat::kTxDropped) - tap_drop_before;
    if (sent - taken >= 2 * kQueueSize) {
      std::this_thread::sleep_for(milliseconds(1));
      continue;
    }
    const auto f = host_frame(static_cast<uint16_t>(sent % 64));
    if (::send(sender.get(), f.data(), f.size(), 0) == static_cast<ssize_t>(f.size())) ++sent;
  }
  EXPECT_EQ(sent, rx_want) << "vpd stopped reading the TAP after "
                           << link_stat("vp0", LinkStat::kTxPackets) - tap_read_before << " frames";
  const bool rx_done = wait_until([&] { return counter("rx_packets") - rx_before >= rx_want; },
                                  std::chrono::duration_cast<milliseconds>(
                                      std::max(deadline - Clock::now(), Clock::duration{0})));
  EXPECT_TRUE(rx_done) << "vpd's rx_packets rose by " << counter("rx_packets") - rx_before
                       << " (wanted " << rx_want << ")";
  ASSERT_TRUE(testpmd_->command("stop"));
  ASSERT_TRUE(testpmd_->wait_output("Accumulated forward statistics", 2, kTrafficTimeout));
  {
    // The RX phase's summary: what follows its start.
    const std::string all = testpmd_->log();
    const std::string log = all.substr(all.find("rxonly packet forwarding - ports"));
    const auto rx = numbers_after(log, "RX-packets:");
    ASSERT_FALSE(rx.empty()) << log;
    if (c.queues > 1) {
      ASSERT_GE(rx.size(), c.queues + 2u) << log;
      for (uint32_t q = 0; q < c.queues; ++q) EXPECT_GT(rx[q], 0u) << "RX queue " << q;
      // Each of vpd's pairs delivered at least what testpmd read from its queue.
      const json queues = stats().value("queues", json::array());
      ASSERT_EQ(queues.size(), c.queues) << queues.dump();
      for (uint32_t q = 0; q < c.queues; ++q) {
        EXPECT_GE(queues[q].value("rx_packets", uint64_t{0}), rx[q]) << queues.dump();
      }
    }
    // The port total: every frame the host sent reached testpmd.
    EXPECT_GE(rx.back(), rx_want) << log;
  }
  EXPECT_EQ(counter("rx_malformed_chain"), 0u);

  EXPECT_EQ(testpmd_->quit(milliseconds(10000)), 0);
  EXPECT_TRUE(vpd().alive());
}

INSTANTIATE_TEST_SUITE_P(Rings, DpdkVirtioUser,
                         ::testing::Values(Case{false, 1}, Case{true, 1}, Case{false, 2},
                                           Case{true, 2}, Case{false, 1, true},
                                           Case{true, 1, true}),
                         case_name);

}  // namespace
}  // namespace vp::test
