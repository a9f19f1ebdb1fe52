// tx-rate=: the guest→host limit, a token bucket in vpd's transmit path. The test front-end
// keeps its transmit ring full of frames; vpd must deliver them to the TAP at the limit
// (within 10 %, measured from its own tx counters over 2 s), hold the rest back in the ring
// rather than drop them (every frame posted ends up in tx_packets, none in a drop counter),
// run unthrottled once the limit is cleared, and keep the limit across a kill -9 and restart.
// The byte-rate test runs on the io_uring write path (vpd's default here), the packet-rate
// test on the writev path (--no-io-uring).

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>

#include "support/vhost_frontend.hpp"
#include "virtio/queue.hpp"
#include "vpd_fixture.hpp"

namespace vp::test {
namespace {

using std::chrono::steady_clock;

constexpr uint32_t kRx = 0;
constexpr uint32_t kTx = 1;

// A 12-byte zero virtio header and an Ethernet frame of `eth_len` bytes to a unicast MAC
// that is not the TAP's: the kernel takes the write and discards the frame (another host's).
std::vector<std::byte> guest_frame(size_t eth_len) {
  std::vector<std::byte> f(12 + eth_len, std::byte{0x5a});
  const uint8_t head[14] = {0x02, 0x99, 0x99, 0x99, 0x99, 0x99,  // destination
                            0x52, 0x54, 0x00, 0x12, 0x34, 0x57,  // source
                            0x88, 0xb5};                         // local experimental type
  std::memset(f.data(), 0, 12);
  std::memcpy(f.data() + 12, head, sizeof head);
  return f;
}

class TxRate : public VpdFixture {
 protected:
  void TearDown() override {
    fe_.reset();
    VpdFixture::TearDown();
  }

  void attach() {
    auto fe = attach_like_qemu(vpd().runtime_dir() + "/vp0.sock");
    ASSERT_TRUE(fe) << fe.error().message << "\n" << vpd().log();
    fe_ = std::move(*fe);
    for (int i = 0; i < 300 && link_json("vp0").value("operstate", "") != "UP"; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  json counters() { return show("vp0")["status"]["counters"]; }

  struct Figures {
    double bits = 0;     // Ethernet bits per second into the TAP
    double packets = 0;  // frames per second
  };

  /// Keeps the transmit ring full of `frame` for `seconds`; returns what vpd delivered between
  /// 0.3 s in (the bucket's burst spent) and the end, from its tx counters. posted_ counts
  /// every frame made available.
  Figures flood(const std::vector<std::byte>& frame, double seconds) {
    const auto start = steady_clock::now();
    const auto window_open = start + std::chrono::milliseconds(300);
    const auto end = start + std::chrono::duration_cast<steady_clock::duration>(
                                 std::chrono::duration<double>(seconds));
    std::optional<std::tuple<steady_clock::time_point, uint64_t, uint64_t>> first;
    auto sample = [&] {
      const auto t0 = steady_clock::now();
      const json c = counters();
      const auto mid = t0 + (steady_clock::now() - t0) / 2;
      return std::tuple{mid, c.value("tx_bytes", uint64_t{0}), c.value("tx_packets", uint64_t{0})};
    };
    while (steady_clock::now() < end) {
      while (fe_->next_used(kTx)) {
      }
      bool posted = false;
      while (fe_->outstanding(kTx) < 256 && fe_->post_tx(kTx, frame)) {
        ++posted_;
        posted = true;
      }
      if (posted) {
        (void)fe_->kick_if_needed(kTx);
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      if (!first && steady_clock::now() >= window_open) first = sample();
    }
    const auto last = sample();
    if (!first) return {};
    const double dt =
        std::chrono::duration<double>(std::get<0>(last) - std::get<0>(*first)).count();
    return {static_cast<double>(std::get<1>(last) - std::get<1>(*first)) * 8 / dt,
            static_cast<double>(std::get<2>(last) - std::get<2>(*first)) / dt};
  }

  /// Waits until vpd has given back every frame posted (the ring drains at the limit).
  void drain() {
    const auto deadline = steady_clock::now() + std::chrono::seconds(10);
    while (fe_->outstanding(kTx) > 0 && steady_clock::now() < deadline) {
      while (fe_->next_used(kTx)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(fe_->outstanding(kTx), 0u) << "vpd held frames back for good";
  }

  /// Back-pressure, not drops: every frame posted reached the TAP and no drop counter moved.
  void expect_every_frame_sent(const json& c) {
    EXPECT_EQ(c.value("tx_packets", uint64_t{0}), posted_) << c.dump();
    for (const auto& [name, value] : c.items()) {
      if (name.find("dropped") != std::string::npos || name == "tap_write_fails") {
        EXPECT_EQ(value, 0) << name << ": " << c.dump();
      }
    }
    EXPECT_GT(c.value("tx_throttled", uint64_t{0}), 0u) << c.dump();
    EXPECT_GT(c.value("tx_throttled_us", uint64_t{0}), 0u) << c.dump();
  }

  std::unique_ptr<VhostFrontend> fe_;
  uint64_t posted_ = 0;
};

TEST_F(TxRate, byte_rate_holds_the_guest_at_the_limit_without_drops) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "tx-rate=40mbit", "up"});
  EXPECT_EQ(show("vp0").value("tx_rate", ""), "40mbit");
  EXPECT_NE(ok({"vp0"}).out.find("40mbit guest→host"), std::string::npos) << ok({"vp0"}).out;
  attach();

  const std::vector<std::byte> frame = guest_frame(1400);
  const Figures limited = flood(frame, 2.3);
  std::cout << "tx-rate=40mbit: vpd sent " << limited.bits / 1e6 << " Mbit/s\n";
  EXPECT_GT(limited.bits, 0.9 * 40e6) << limited.bits / 1e6 << " Mbit/s";
  EXPECT_LT(limited.bits, 1.1 * 40e6) << limited.bits / 1e6 << " Mbit/s";
  drain();
  const json c = counters();
  expect_every_frame_sent(c);
  const Output stats = ok({"vp0", "stats"});
  EXPECT_NE(stats.out.find("tx_throttled"), std::string::npos) << stats.out;
  const Output metrics = ok({"metrics"});
  EXPECT_NE(metrics.out.find("vpd_throttled_total{endpoint=\"vp0\""), std::string::npos)
      << metrics.out;
  EXPECT_NE(metrics.out.find("vpd_throttled_seconds_total{endpoint=\"vp0\""), std::string::npos);

  // Cleared beside the running session: the same guest now goes as fast as the TAP takes it.
  const uint64_t sessions = show("vp0")["status"].value("sessions", uint64_t{0});
  ok({"vp0", "-tx-rate"});
  EXPECT_EQ(show("vp0").value("tx_rate", "?"), "");
  const Output cleared = ok({"vp0"});
  const size_t at = cleared.out.find("tx rate:");
  ASSERT_NE(at, std::string::npos) << cleared.out;
  const std::string line = cleared.out.substr(at, cleared.out.find('\n', at) - at);
  EXPECT_NE(line.find("unlimited"), std::string::npos) << line;
  const Figures free = flood(frame, 1.0);
  std::cout << "tx-rate cleared: vpd sent " << free.bits / 1e6 << " Mbit/s\n";
  EXPECT_GT(free.bits, 3 * 40e6) << "still limited: " << free.bits / 1e6 << " Mbit/s";
  EXPECT_EQ(show("vp0")["status"].value("sessions", uint64_t{0}), sessions)
      << "a tx-rate change must not reconnect the guest";
}

TEST_F(TxRate, packet_rate_survives_a_restart_and_holds_the_guest_at_the_limit) {
  ASSERT_EQ(vpd().start({"--no-io-uring"}), "");
  ok({"vp0", "create", "rate=100mbit", "up"});
  json e = show("vp0");
  EXPECT_EQ(e.value("rx_rate", ""), "100mbit");
  EXPECT_EQ(e.value("tx_rate", ""), "100mbit");
  ok({"vp0", "tx-rate=5kpps"});
  EXPECT_EQ(show("vp0").value("tx_rate", ""), "5kpps");

  // A bad value changes nothing and says what to write.
  const std::string saved = state_text();
  const Output bad = refused({"vp0", "tx-rate=5kfps"}, "bad-value");
  EXPECT_NE(bad.err.find("kpps"), std::string::npos) << bad.err;
  const Output rx_pps = refused({"vp0", "rx-rate=5kpps"}, "bad-value");
  EXPECT_NE(rx_pps.err.find("bytes, not packets"), std::string::npos) << rx_pps.err;
  EXPECT_EQ(state_text(), saved);

  // Saved: a kill -9 and restart keeps it, in the JSON view as in the state file.
  vpd().kill9();
  ASSERT_EQ(vpd().start({"--no-io-uring"}), "");
  const Output j = ok({"--json", "vp0"});
  e = json::parse(j.out, nullptr, false);
  EXPECT_EQ(e.value("tx_rate", ""), "5kpps") << j.out;
  EXPECT_EQ(e.value("rx_rate", ""), "100mbit") << j.out;

  attach();
  const Figures limited = flood(guest_frame(60), 2.3);
  std::cout << "tx-rate=5kpps: vpd sent " << limited.packets << " frames/s\n";
  EXPECT_GT(limited.packets, 0.9 * 5000) << limited.packets << " frames/s";
  EXPECT_LT(limited.packets, 1.1 * 5000) << limited.packets << " frames/s";
  drain();
  expect_every_frame_sent(counters());

  // rate= cleared clears both directions.
  ok({"vp0", "-rate"});
  e = show("vp0");
  EXPECT_EQ(e.value("tx_rate", "?"), "");
  EXPECT_EQ(e.value("rx_rate", "?"), "");
  const Figures free = flood(guest_frame(60), 1.0);
  std::cout << "tx-rate cleared: vpd sent " << free.packets << " frames/s\n";
  EXPECT_GT(free.packets, 3 * 5000) << "still limited: " << free.packets << " frames/s";
}

TEST_F(TxRate, other_transports_refuse_it_and_keep_their_state) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "transport=stream", "peerfeats=0"});
  const std::string saved = state_text();
  const Output r = refused({"vp0", "tx-rate=10mbit"}, "conflicting-settings");
  EXPECT_NE(r.err.find("vhost-user"), std::string::npos) << r.err;
  refused({"vp0", "rate=10mbit"}, "conflicting-settings");
  EXPECT_EQ(state_text(), saved);
  ok({"vp0", "rx-rate=10mbit"});
}

}  // namespace
}  // namespace vp::test
