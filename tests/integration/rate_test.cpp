// rx-rate=: the host→guest rate limit, a tbf qdisc on the endpoint's TAP. A test front-end
// takes every frame while the host floods the guest with UDP; the rate vpd delivers is
// measured from its own counters and must be within 10 % of the limit. The qdisc is checked
// with tc, across a kill -9 and restart, and gone again when the limit is cleared.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
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

class RxRate : public VpdFixture {
 protected:
  void SetUp() override {
    VpdFixture::SetUp();
    ASSERT_EQ(vpd().start(), "");
  }
  void TearDown() override {
    fe_.reset();
    VpdFixture::TearDown();
  }

  void attach() {
    auto fe = attach_like_qemu(vpd().runtime_dir() + "/vp0.sock");
    ASSERT_TRUE(fe) << fe.error().message << "\n" << vpd().log();
    fe_ = std::move(*fe);
    while (fe_->outstanding(kRx) < 200 && fe_->post_rx(kRx)) {
    }
    ASSERT_TRUE(fe_->kick(kRx));
    for (int i = 0; i < 300 && link_json("vp0").value("operstate", "") != "UP"; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  /// `tc -j qdisc show dev vp0`: the root qdisc.
  static json root_qdisc() {
    const vp::test::Run r = run({"tc", "-j", "qdisc", "show", "dev", "vp0", "root"});
    const json all = json::parse(r.out, nullptr, false);
    return all.is_array() && !all.empty() ? all[0] : json();
  }

  uint64_t rx_bytes() { return show("vp0")["status"]["counters"].value("rx_bytes", 0ull); }

  /// Floods the guest (10.98.0.2, a permanent neighbour on vp0) with 1400-byte UDP
  /// datagrams for `seconds` while the front-end takes and re-posts every RX buffer; returns
  /// the bits per second vpd delivered between 0.5 s in (the bucket's burst spent) and the end.
  double measure_rx_rate(double seconds) {
    EXPECT_TRUE(sh("ip neigh replace 10.98.0.2 lladdr 52:54:00:12:34:56 dev vp0 nud permanent"));
    std::atomic<bool> stop{false};
    std::thread flood([&stop] {
      Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(9);
      ::inet_pton(AF_INET, "10.98.0.2", &to.sin_addr);
      std::vector<char> payload(1400, 'r');
      while (!stop.load(std::memory_order_relaxed)) {
        // ENOBUFS when tbf's queue is full: the limit at work.
        (void)::sendto(s.get(), payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to),
                       sizeof to);
      }
    });
    const auto start = steady_clock::now();
    const auto window_open = start + std::chrono::milliseconds(500);
    const auto end = start + std::chrono::duration_cast<steady_clock::duration>(
                                 std::chrono::duration<double>(seconds));
    std::optional<std::pair<steady_clock::time_point, uint64_t>> first;
    auto last_poll = steady_clock::now();
    while (steady_clock::now() < end) {
      bool any = false;
      while (fe_->next_used(kRx)) any = true;
      if (any) {
        while (fe_->outstanding(kRx) < 200 && fe_->post_rx(kRx)) {
        }
        (void)fe_->kick(kRx);
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (!first && steady_clock::now() >= window_open) {
        const auto t0 = steady_clock::now();
        const uint64_t b = rx_bytes();
        first.emplace(t0 + (steady_clock::now() - t0) / 2, b);
      }
      last_poll = steady_clock::now();
    }
    (void)last_poll;
    const auto t1 = steady_clock::now();
    const uint64_t b1 = rx_bytes();
    const auto t1_mid = t1 + (steady_clock::now() - t1) / 2;
    stop = true;
    flood.join();
    if (!first) return 0;
    const double dt = std::chrono::duration<double>(t1_mid - first->first).count();
    return static_cast<double>(b1 - first->second) * 8 / dt;
  }

  std::unique_ptr<VhostFrontend> fe_;
};

TEST_F(RxRate, guest_receives_at_the_limit_and_the_qdisc_follows_the_setting) {
  ok({"vp0", "create", "address=10.98.0.1/24", "rx-rate=40mbit", "up"});
  json q = root_qdisc();
  ASSERT_EQ(q.value("kind", ""), "tbf") << q.dump();
  EXPECT_EQ(q["options"].value("rate", 0ull), 5'000'000ull) << "bytes per second: " << q.dump();
  EXPECT_EQ(show("vp0").value("rx_rate", ""), "40mbit");
  EXPECT_NE(ok({"vp0"}).out.find("40mbit host→guest"), std::string::npos);

  attach();
  const double rate = measure_rx_rate(2.5);
  std::cout << "rx-rate=40mbit: the guest received " << rate / 1e6 << " Mbit/s\n";
  EXPECT_GT(rate, 0.9 * 40e6) << "achieved " << rate / 1e6 << " Mbit/s";
  EXPECT_LT(rate, 1.1 * 40e6) << "achieved " << rate / 1e6 << " Mbit/s";
  const json c = show("vp0")["status"]["counters"];
  EXPECT_EQ(c.value("rx_dropped_too_big", 0), 0) << c.dump();

  // A bad value is refused with a sentence; the setting, the qdisc and the saved state stay.
  const std::string saved = state_text();
  const Output bad = refused({"vp0", "rx-rate=40"}, "bad-value");
  EXPECT_NE(bad.err.find("unit"), std::string::npos) << bad.err;
  refused({"vp0", "rx-rate=20gbit"}, "bad-value");
  EXPECT_EQ(state_text(), saved);
  EXPECT_EQ(root_qdisc()["options"].value("rate", 0ull), 5'000'000ull);

  // Saved and re-applied: after kill -9, a hand-removed qdisc comes back on restart.
  fe_.reset();
  vpd().kill9();
  ASSERT_TRUE(sh("tc qdisc replace dev vp0 root noqueue"));
  ASSERT_EQ(vpd().start(), "");
  q = root_qdisc();
  EXPECT_EQ(q.value("kind", ""), "tbf") << q.dump();
  EXPECT_EQ(q["options"].value("rate", 0ull), 5'000'000ull) << q.dump();

  // Changed, then cleared: the TAP gets back its noqueue root.
  ok({"vp0", "rx-rate=1gbit"});
  EXPECT_EQ(root_qdisc()["options"].value("rate", 0ull), 125'000'000ull);
  ok({"vp0", "-rx-rate"});
  EXPECT_EQ(root_qdisc().value("kind", ""), "noqueue") << root_qdisc().dump();
  EXPECT_EQ(show("vp0").value("rx_rate", "?"), "");
  EXPECT_NE(ok({"vp0"}).out.find("rx rate:       unlimited"), std::string::npos);
}

}  // namespace
}  // namespace vp::test
