// An endpoint on an Open vSwitch bridge instead of a Linux bridge: Debian's openvswitch-switch
// (ovsdb-server and ovs-vswitchd started by the test with their own database and run
// directory, never the host's) with the userspace datapath (`datapath_type=netdev`; this
// kernel has no OVS datapath module), vp0 created without bridge= and added as an ordinary
// port, and a veth as the bridge's other port. Frames cross both ways, and still do after
// vpd is killed and restarted and after vpd re-applies a setting.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

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
constexpr std::array<uint8_t, 6> kGuestMac{0x52, 0x54, 0x00, 0x0f, 0x5e, 0x01};
constexpr std::array<uint8_t, 6> kLanMac{0x52, 0x54, 0x00, 0x0f, 0x5e, 0x02};

// Ethernet to `dst` from `src`, kEtherType, a payload of `n` pattern bytes.
std::vector<std::byte> frame(const std::array<uint8_t, 6>& dst, const std::array<uint8_t, 6>& src,
                             size_t n, uint8_t seed) {
  std::vector<std::byte> f(14 + n);
  std::memcpy(f.data(), dst.data(), 6);
  std::memcpy(f.data() + 6, src.data(), 6);
  f[12] = std::byte{kEtherType >> 8};
  f[13] = std::byte{kEtherType & 0xff};
  for (size_t i = 0; i < n; ++i) f[14 + i] = static_cast<std::byte>(seed + i * 11);
  return f;
}

class OpenVSwitch : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(enter_private_netns(), "");
    const std::string d = dir_.path();
    // Everything Open vSwitch writes goes under the test's directory.
    env_ = {"OVS_RUNDIR=" + d, "OVS_LOGDIR=" + d, "OVS_DBDIR=" + d, "OVS_SYSCONFDIR=" + d};
    db_ = "unix:" + d + "/db.sock";
    must({"ovsdb-tool", "create", d + "/conf.db", "/usr/share/openvswitch/vswitch.ovsschema"});
    must({"ovsdb-server", d + "/conf.db", "--remote=punix:" + d + "/db.sock",
          "--pidfile=" + d + "/ovsdb.pid", "--unixctl=" + d + "/ovsdb.ctl",
          "--log-file=" + d + "/ovsdb.log", "--detach"});
    must({"ovs-vsctl", "--db=" + db_, "--no-wait", "init"});
    must({"ovs-vswitchd", db_, "--pidfile=" + d + "/vswitchd.pid",
          "--unixctl=" + d + "/vswitchd.ctl", "--log-file=" + d + "/vswitchd.log", "--detach"});
    vsctl({"add-br", "br-ovs", "--", "set", "bridge", "br-ovs", "datapath_type=netdev"});
    ASSERT_TRUE(
        sh("ip link add lan type veth peer name lan-peer && ip link set lan up && "
           "ip link set lan-peer up"));
    vsctl({"add-port", "br-ovs", "lan"});

    vpd_ = std::make_unique<Vpd>(d);
    ASSERT_EQ(vpd_->start(), "");
    ASSERT_EQ(vpd_->ctl({"vp0", "create", "guest-mac=52:54:00:0f:5e:01", "up"}).status, 0);
    vsctl({"add-port", "br-ovs", "vp0"});
    lan_ = packet_socket("lan-peer", SOCK_NONBLOCK);
    ASSERT_TRUE(lan_);
  }

  void TearDown() override {
    fe_.reset();
    if (HasFailure()) {
      std::cerr << "---- ovs-vswitchd log ----\n" << file_text(dir_.path() + "/vswitchd.log");
      if (vpd_) std::cerr << "---- vpd log ----\n" << vpd_->log();
    }
    vpd_.reset();
    for (const char* pidfile : {"/vswitchd.pid", "/ovsdb.pid"}) {
      const std::string pid = file_text(dir_.path() + pidfile);
      if (!pid.empty()) ::kill(std::stoi(pid), SIGTERM);
    }
  }

  void must(const std::vector<std::string>& argv) {
    const vp::test::Run r = run(argv, env_);
    ASSERT_EQ(r.status, 0) << argv[0] << ": " << r.err << r.out;
  }
  void vsctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"ovs-vsctl", "--db=" + db_, "--timeout=20"});
    must(args);
  }

  void attach() {
    auto fe = VhostFrontend::connect(vpd_->runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
    ASSERT_TRUE(fe) << fe.error().message;
    fe_ = std::move(*fe);
    ASSERT_TRUE(fe_->negotiate(~virtio::kFeatureRingPacked, ~0ull)) << vpd_->log();
    ASSERT_TRUE(fe_->set_mem_table());
    ASSERT_TRUE(fe_->setup_queue(kRx, 256));
    ASSERT_TRUE(fe_->setup_queue(kTx, 256));
    for (int i = 0; i < 64; ++i) ASSERT_TRUE(fe_->post_rx(kRx));
    ASSERT_TRUE(fe_->kick(kRx));
  }

  // The guest sends a frame to the LAN's MAC; true when it comes out of the veth unchanged.
  bool guest_to_lan(uint8_t seed) {
    const auto f = frame(kLanMac, kGuestMac, 200, seed);
    std::vector<std::byte> with_header(12, std::byte{0});
    with_header.insert(with_header.end(), f.begin(), f.end());
    std::vector<std::byte> got(2048);
    const auto deadline = steady_clock::now() + std::chrono::seconds(10);
    // Resent now and then: until OVS has the port (and vp0 has carrier) it may drop it.
    auto next_send = steady_clock::now();
    while (steady_clock::now() < deadline) {
      if (steady_clock::now() >= next_send) {
        if (!fe_->post_tx(kTx, with_header) || !fe_->kick(kTx)) return false;
        next_send = steady_clock::now() + std::chrono::milliseconds(500);
      }
      while (fe_->next_used(kTx)) {
      }
      const ssize_t n = ::recv(lan_.get(), got.data(), got.size(), 0);
      if (n == static_cast<ssize_t>(f.size()) && std::memcmp(got.data(), f.data(), f.size()) == 0) {
        return true;
      }
      if (n < 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  // The LAN sends a frame to the guest's MAC; true when the guest receives it unchanged.
  bool lan_to_guest(uint8_t seed) {
    const auto f = frame(kGuestMac, kLanMac, 300, seed);
    const auto deadline = steady_clock::now() + std::chrono::seconds(10);
    auto next_send = steady_clock::now();
    while (steady_clock::now() < deadline) {
      if (steady_clock::now() >= next_send) {
        if (::send(lan_.get(), f.data(), f.size(), 0) != static_cast<ssize_t>(f.size())) {
          return false;
        }
        next_send = steady_clock::now() + std::chrono::milliseconds(500);
      }
      auto used = fe_->next_used(kRx);
      if (!used) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      const auto buf = fe_->buffer(kRx, used->id);
      const bool same =
          used->len == 12 + f.size() && std::memcmp(buf.data() + 12, f.data(), f.size()) == 0;
      (void)fe_->post_rx(kRx);
      (void)fe_->kick(kRx);
      if (same) return true;
    }
    return false;
  }

  TempDir dir_;
  std::vector<std::string> env_;
  std::string db_;
  std::unique_ptr<Vpd> vpd_;
  std::unique_ptr<VhostFrontend> fe_;
  Fd lan_;
};

TEST_F(OpenVSwitch, endpoint_as_an_ovs_port_passes_frames_across_restarts_and_changes) {
  attach();
  EXPECT_TRUE(guest_to_lan(1)) << "guest → OVS → LAN";
  EXPECT_TRUE(lan_to_guest(2)) << "LAN → OVS → guest";

  // vpd applies a change (one the guest sees: its session ends and it reconnects, as a
  // VMM does): the TAP stays where OVS put it.
  ASSERT_EQ(vpd_->ctl({"vp0", "mtu=1400", "address=10.55.0.1/24"}).status, 0);
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1400);
  attach();
  EXPECT_TRUE(guest_to_lan(3)) << "after mtu=1400";

  // kill -9 and a new vpd: the TAP (persistent) and its OVS port survive; the guest
  // reconnects and traffic resumes.
  fe_.reset();
  vpd_->kill9();
  ASSERT_EQ(vpd_->start(), "");
  attach();
  EXPECT_TRUE(guest_to_lan(4)) << "after vpd was killed and restarted";
  EXPECT_TRUE(lan_to_guest(5)) << "after vpd was killed and restarted";
  const vp::test::Run ports = run({"ovs-vsctl", "--db=" + db_, "list-ports", "br-ovs"}, env_);
  EXPECT_NE(ports.out.find("vp0"), std::string::npos) << ports.out;
}

}  // namespace
}  // namespace vp::test
