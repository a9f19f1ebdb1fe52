// Access control against a real vpd (issue 6): who may connect to a bind socket (allow=,
// SO_PEERCRED), who may talk to the control socket (its group), and lock-mac (a guest cannot
// pose as another host on the bridge).

#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

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

constexpr uint32_t kRx = 0;
constexpr uint32_t kTx = 1;
constexpr std::array<uint8_t, 6> kGuestMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

// A virtio_net_hdr_mrg_rxbuf (no offload) and an ARP request from `src_mac`, 10.95.0.`sender`,
// asking who has 10.95.0.1.
std::vector<std::byte> arp_request(const std::array<uint8_t, 6>& src_mac, uint8_t sender) {
  std::vector<uint8_t> f(12, 0);
  auto put = [&](std::initializer_list<uint8_t> bytes) { f.insert(f.end(), bytes); };
  put({0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  f.insert(f.end(), src_mac.begin(), src_mac.end());
  put({0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01});
  f.insert(f.end(), src_mac.begin(), src_mac.end());
  put({10, 95, 0, sender, 0, 0, 0, 0, 0, 0, 10, 95, 0, 1});
  std::vector<std::byte> out(f.size());
  std::memcpy(out.data(), f.data(), f.size());
  return out;
}

class Access : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(enter_private_netns(), "");
    vpd_ = std::make_unique<Vpd>(dir_.path());
    ASSERT_EQ(vpd_->start(), "");
  }

  nlohmann::json status() { return vpd_->ctl_json({"vp0"})["status"]; }

  /// Connects to vp0's bind socket `n` times, each connection closed by vpd (refused), then
  /// waits until refused_peers counts `total`.
  ::testing::AssertionResult refuse_connections(int n, int total) {
    for (int i = 0; i < n; ++i) {
      auto c = connect_unix(vpd_->runtime_dir() + "/vp0.sock");
      if (!c) return ::testing::AssertionFailure() << i << ": " << c.error().message;
      pollfd p{c->get(), POLLIN, 0};
      if (::poll(&p, 1, 5000) != 1) {
        return ::testing::AssertionFailure() << "vpd did not close connection " << i;
      }
    }
    for (int i = 0; i < 250 && status().value("refused_peers", 0) < total; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (status().value("refused_peers", 0) == total) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "refused_peers is not " << total << ": " << status().dump(2);
  }

  // Connects a front-end to vp0's bind socket and negotiates; false if vpd hung up.
  bool attach() {
    auto fe = VhostFrontend::connect(vpd_->runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
    if (!fe) return false;
    fe_ = std::move(*fe);
    if (!fe_->negotiate(~0ull & ~virtio::kFeatureRingPacked, ~0ull)) return false;
    if (!fe_->set_mem_table() || !fe_->setup_queue(kRx, 256) || !fe_->setup_queue(kTx, 256)) {
      return false;
    }
    // Carrier on is not enough: the kernel activates the TAP's qdisc (operstate UP) from its
    // linkwatch work a little later, and drops what it sends there until then.
    for (int i = 0; i < 300; ++i) {
      if (link_json("vp0").value("operstate", "") == "UP") return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::optional<UsedBuffer> wait_used(uint32_t ring) {
    const auto deadline = steady_clock::now() + std::chrono::seconds(5);
    while (steady_clock::now() < deadline) {
      if (auto used = fe_->next_used(ring)) return used;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
  }

  // True when an ARP reply to 10.95.0.`sender` arrives on the RX ring within 3 s.
  bool arp_reply_for(uint8_t sender) {
    const auto deadline = steady_clock::now() + std::chrono::seconds(3);
    while (steady_clock::now() < deadline) {
      auto used = fe_->next_used(kRx);
      if (!used) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      const auto* b = reinterpret_cast<const uint8_t*>(fe_->buffer(kRx, used->id).data()) + 12;
      (void)fe_->post_rx(kRx);
      (void)fe_->kick(kRx);
      if (used->len >= 12 + 42 && b[12] == 0x08 && b[13] == 0x06 && b[21] == 2 && b[41] == sender) {
        return true;
      }
    }
    return false;
  }

  TempDir dir_;
  std::unique_ptr<Vpd> vpd_;
  std::unique_ptr<VhostFrontend> fe_;
};

TEST_F(Access, allow_list_turns_away_other_users_counts_and_logs_them) {
  ASSERT_EQ(vpd_->ctl({"vp0", "create", "allow=12345", "allow=12346:7", "up"}).status, 0)
      << vpd_->log();
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["allow"], (nlohmann::json{"12345", "12346:7"}));
  // This test runs as root, which is not on the list: vpd hangs up before any message.
  auto fe = VhostFrontend::connect(vpd_->runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
  ASSERT_TRUE(fe);
  pollfd p{(*fe)->socket(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "vpd did not close the connection";
  char byte = 0;
  EXPECT_EQ(::recv((*fe)->socket(), &byte, 1, 0), 0);
  for (int i = 0; i < 100 && status().value("refused_peers", 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(status().value("refused_peers", 0), 1) << status().dump(2);
  EXPECT_NE(vpd_->log().find("uid 0 gid 0"), std::string::npos) << vpd_->log();
  EXPECT_NE(vpd_->log().find("not in allow="), std::string::npos) << vpd_->log();
  EXPECT_NE(status().value("guest", ""), "connected");

  // Put root on the list: the same front-end is served.
  ASSERT_EQ(vpd_->ctl({"vp0", "allow=0"}).status, 0) << vpd_->log();
  ASSERT_TRUE(attach()) << vpd_->log();
  EXPECT_EQ(status().value("guest", ""), "connected");
  // Saved like every setting: a restart keeps the list.
  EXPECT_EQ(vpd_->stop(), 0);
  ASSERT_EQ(vpd_->start(), "");
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["allow"], (nlohmann::json{"0", "12345", "12346:7"}));
}

TEST_F(Access, connect_loop_of_refused_peers_logs_a_few_lines_then_one_summary) {
  ASSERT_EQ(vpd_->ctl({"vp0", "create", "allow=12345", "up"}).status, 0) << vpd_->log();
  auto count = [](const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
      ++n;
    }
    return n;
  };
  // Root is not on the list: every one of these is refused.
  constexpr int kConnects = 60;
  // The counter counts every one.
  ASSERT_TRUE(refuse_connections(kConnects, kConnects)) << vpd_->log();
  // The log has the first five (FrontendSocket::kRefusalLogBurst) and, once the 10 s interval
  // is over, one line for the rest, with no further refusal needed to bring it out.
  const std::string summary = "55 more refused connections on vp0 in the last 10 s";
  const auto deadline = steady_clock::now() + std::chrono::seconds(30);
  while (vpd_->log().find(summary) == std::string::npos && steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string log = vpd_->log();
  EXPECT_NE(log.find(summary), std::string::npos) << log;
  EXPECT_EQ(count(log, "not in allow="), 5u) << log;
  EXPECT_EQ(count(log, "more refused connection"), 1u) << log;

  // The next interval logs its first refusals again.
  ASSERT_TRUE(refuse_connections(1, kConnects + 1)) << vpd_->log();
  EXPECT_EQ(count(vpd_->log(), "not in allow="), 6u) << vpd_->log();
}

TEST_F(Access, refusals_held_back_when_the_endpoint_is_destroyed_are_logged_then) {
  ASSERT_EQ(vpd_->ctl({"vp0", "create", "allow=12345", "up"}).status, 0) << vpd_->log();
  // 5 logged one by one (FrontendSocket::kRefusalLogBurst), 7 held back.
  ASSERT_TRUE(refuse_connections(12, 12)) << vpd_->log();
  // Well within the 10 s interval: the summary is still held back.
  EXPECT_EQ(vpd_->log().find("more refused connection"), std::string::npos) << vpd_->log();
  ASSERT_EQ(vpd_->ctl({"vp0", "destroy"}).status, 0) << vpd_->log();
  EXPECT_NE(vpd_->log().find("vp0: 7 more refused connections on vp0 before its front-end "
                             "socket closed (not logged one by one)"),
            std::string::npos)
      << vpd_->log();
}

TEST_F(Access, lock_mac_drops_guest_frames_posing_as_another_host) {
  ASSERT_EQ(vpd_->ctl({"vp0", "create", "guest-mac=52:54:00:12:34:56", "lock-mac",
                       "address=10.95.0.1/24", "up"})
                .status,
            0)
      << vpd_->log();
  EXPECT_EQ(vpd_->ctl_json({"vp0"}).value("guest_mac", ""), "52:54:00:12:34:56");
  const auto args = vpd_->ctl({"vp0", "qemu-args"});
  EXPECT_NE(args.out.find("mac=52:54:00:12:34:56"), std::string::npos) << args.out;
  ASSERT_TRUE(attach()) << vpd_->log();
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(fe_->post_rx(kRx));
  ASSERT_TRUE(fe_->kick(kRx));

  // From the guest's own MAC: the kernel answers.
  ASSERT_TRUE(fe_->post_tx(kTx, arp_request(kGuestMac, 2)));
  ASSERT_TRUE(fe_->kick(kTx));
  EXPECT_TRUE(arp_reply_for(2)) << vpd_->log();

  // From another MAC: dropped and counted; the kernel never hears of 10.95.0.3.
  const std::array<uint8_t, 6> other{0x52, 0x54, 0x00, 0x99, 0x99, 0x99};
  ASSERT_TRUE(fe_->post_tx(kTx, arp_request(other, 3)));
  ASSERT_TRUE(fe_->kick(kTx));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(wait_used(kTx)) << "both TX chains come back";
  EXPECT_FALSE(arp_reply_for(3));
  const auto c = status()["counters"];
  EXPECT_EQ(c.value("tx_dropped_spoofed_mac", 0), 1) << c.dump();
  EXPECT_EQ(c.value("tx_packets", 0), 1) << c.dump();
  EXPECT_TRUE(ip_json({"neigh", "show", "10.95.0.3", "dev", "vp0"}).empty())
      << ip_json({"neigh", "show", "dev", "vp0"}).dump();
}

TEST_F(Access, control_socket_serves_group_vpd_and_refuses_other_users) {
  // The socket is 0660 group vpd when that group exists (the package creates it), else 0600
  // root. Make sure it exists for this test, and leave the machine as it was.
  const bool had_group = ::getgrnam("vpd") != nullptr;
  if (!had_group) {
    ASSERT_TRUE(sh("groupadd --system vpd"));
  }
  struct RemoveGroup {
    bool remove;
    ~RemoveGroup() {
      if (remove) (void)sh("groupdel vpd");
    }
  } cleanup{!had_group};
  const group* g = ::getgrnam("vpd");
  ASSERT_NE(g, nullptr);
  const std::string vpd_gid = std::to_string(g->gr_gid);
  EXPECT_EQ(vpd_->stop(), 0);
  ASSERT_EQ(vpd_->start(), "");

  // Open the directories on the way, so that the socket's own permissions decide.
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(vpd_->runtime_dir().c_str(), 0755), 0);
  struct stat st {};
  ASSERT_EQ(::stat(vpd_->socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(std::to_string(st.st_gid), vpd_gid);
  auto as_nobody = [&](const std::string& groups) {
    return run({"setpriv", "--reuid=65534", "--regid=65534", "--groups=" + groups, "--",
                VPCTL_BINARY, "--socket", vpd_->socket(), "list"});
  };
  const vp::test::Run outsider = as_nobody("65534");
  EXPECT_EQ(outsider.status, 3) << outsider.out << outsider.err;
  EXPECT_NE(outsider.err.find(vpd_->socket()), std::string::npos) << outsider.err;
  EXPECT_NE(outsider.err.find("ermission"), std::string::npos) << outsider.err;
  const vp::test::Run member = as_nobody(vpd_gid);
  EXPECT_EQ(member.status, 0) << member.out << member.err;
  EXPECT_TRUE(vpd_->alive());
}

}  // namespace
}  // namespace vp::test
