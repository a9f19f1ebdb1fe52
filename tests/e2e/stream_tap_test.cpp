// End-to-end tier for the other transports: real QEMU guests (TCG, busybox initramfs) on a
// transport=stream endpoint (`-netdev stream`, QEMU's own framing) and on a transport=tap
// endpoint (`-netdev tap,ifname=`, QEMU opens the TAP that vpd provisioned), pinging the host
// bridge and each other, inside a private network namespace.

#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "support/guest.hpp"
#include "support/harness.hpp"

namespace vp::test {
namespace {

constexpr const char* kHost = "10.99.0.1";

class TransportsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(guest_image_dir().empty())
        << "VPD_E2E_IMAGE_DIR is not set (see tests/CMakeLists.txt)";
    ASSERT_EQ(enter_private_netns(), "");
    ASSERT_TRUE(
        sh("ip link add br0 type bridge && ip link set br0 up && "
           "ip addr add 10.99.0.1/24 dev br0"));
    vpd_ = std::make_unique<Vpd>(dir_.path());
    ASSERT_EQ(vpd_->start(), "");
  }

  vp::test::Run ctl(const std::vector<std::string>& args) { return vpd_->ctl(args); }

  GuestOptions guest_options(const std::string& ip, const std::string& peer, const std::string& mac,
                             std::vector<std::string> nic) {
    GuestOptions o;
    o.image_dir = guest_image_dir();
    o.ip = ip + "/24";
    o.peer = peer;
    o.mac = mac;
    o.nic = std::move(nic);
    return o;
  }

  nlohmann::json status(const std::string& name) { return vpd_->ctl_json({name})["status"]; }

  TempDir dir_;
  std::unique_ptr<Vpd> vpd_;
};

TEST_F(TransportsE2E, stream_guest_pings_the_bridge_and_the_host_pings_back) {
  ASSERT_EQ(ctl({"vp0", "create", "transport=stream", "bridge=br0", "up"}).status, 0);
  const std::string sock = vpd_->runtime_dir() + "/vp0.sock";
  // What vpctl tells the operator to give QEMU is what this guest runs with.
  const auto args = ctl({"vp0", "qemu-args"});
  const std::string netdev = "stream,id=vp0,server=off,addr.type=unix,addr.path=" + sock;
  ASSERT_NE(args.out.find("-netdev " + netdev), std::string::npos) << args.out;
  GuestOptions o = guest_options(
      "10.99.0.2", kHost, "52:54:00:00:00:02",
      {"-netdev", netdev, "-device", "virtio-net-pci,netdev=vp0,romfile=,mac=52:54:00:00:00:02"});
  o.linger = 10;
  Guest guest(dir_.path() + "/console");
  ASSERT_EQ(guest.start(o), "");
  ASSERT_TRUE(guest.wait_for("VP-E2E-RESULT:", std::chrono::seconds(120))) << guest.console();
  EXPECT_NE(guest.console().find("VP-E2E-RESULT: ok"), std::string::npos)
      << guest.console() << vpd_->log();
  EXPECT_TRUE(sh("ping -c 3 -W 2 10.99.0.2 >/dev/null")) << vpd_->log();

  const auto s = status("vp0");
  EXPECT_EQ(s.value("guest", ""), "connected") << s.dump(2);
  EXPECT_TRUE(s.value("carrier", false));
  EXPECT_EQ(s.value("tun_offloads", ""), "none");
  EXPECT_GT(s["counters"].value("tx_packets", 0), 3u) << s.dump(2);
  EXPECT_GT(s["counters"].value("rx_packets", 0), 3u) << s.dump(2);
  EXPECT_EQ(s["counters"].value("stream_bad_length", 1), 0u);
  EXPECT_EQ(s["counters"].value("rx_dropped_offload", 1), 0u);
  guest.wait_exit(std::chrono::seconds(60));

  // QEMU is gone: carrier off, vpd listens again.
  for (int i = 0; i < 50 && status("vp0").value("guest", "") == "connected"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(status("vp0").value("guest", ""), "listening");
  EXPECT_EQ(status("vp0").value("socket", ""), sock);
  EXPECT_FALSE(status("vp0").value("carrier", true));
}

TEST_F(TransportsE2E, tap_guest_opens_the_provisioned_tap_and_pings_the_bridge) {
  ASSERT_EQ(ctl({"vp1", "create", "transport=tap", "bridge=br0", "up"}).status, 0);
  EXPECT_FALSE(status("vp1").value("carrier", true)) << "no VMM yet, and vpd holds no queue";
  const auto args = ctl({"vp1", "qemu-args"});
  const std::string netdev = "tap,id=vp1,ifname=vp1,script=no,downscript=no";
  ASSERT_NE(args.out.find("-netdev " + netdev), std::string::npos) << args.out;
  EXPECT_NE(args.out.find("/dev/vhost-net"), std::string::npos) << args.out;
  // QEMU finds the TAP by name in its own network namespace: this one.
  GuestOptions o = guest_options(
      "10.99.0.3", kHost, "52:54:00:00:00:03",
      {"-netdev", netdev, "-device", "virtio-net-pci,netdev=vp1,romfile=,mac=52:54:00:00:00:03"});
  o.linger = 10;
  Guest guest(dir_.path() + "/console");
  ASSERT_EQ(guest.start(o), "");
  ASSERT_TRUE(guest.wait_for("VP-E2E-RESULT:", std::chrono::seconds(120))) << guest.console();
  EXPECT_NE(guest.console().find("VP-E2E-RESULT: ok"), std::string::npos)
      << guest.console() << vpd_->log();
  EXPECT_TRUE(sh("ping -c 3 -W 2 10.99.0.3 >/dev/null"));
  const auto s = status("vp1");
  EXPECT_TRUE(s.value("carrier", false)) << "QEMU's queue is attached: " << s.dump(2);
  EXPECT_EQ(s.value("guest", ""), "attached") << s.dump(2);
  // QEMU set the offloads (virtio-net with a vnet-header TAP): vpd reads them back.
  EXPECT_NE(s.value("tun_offloads", "none"), "none") << s.dump(2);
  EXPECT_EQ(s.value("master", ""), "br0");
  guest.wait_exit(std::chrono::seconds(60));
  for (int i = 0; i < 50 && status("vp1").value("carrier", true); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_FALSE(status("vp1").value("carrier", true)) << "QEMU closed its queue";
}

TEST_F(TransportsE2E, two_guests_on_one_bridge_ping_each_other) {
  // Guest A on a stream endpoint that vpd dials (QEMU serves); guest B on a tap endpoint.
  const std::string sock = dir_.path() + "/qemu-a.sock";
  ASSERT_EQ(ctl({"vp0", "create", "transport=stream", "peer=" + sock, "bridge=br0", "up"}).status,
            0);
  ASSERT_EQ(ctl({"vp1", "create", "transport=tap", "bridge=br0", "up"}).status, 0);
  GuestOptions a =
      guest_options("10.99.0.2", "10.99.0.3", "52:54:00:00:00:02",
                    {"-netdev", "stream,id=n0,server=on,addr.type=unix,addr.path=" + sock,
                     "-device", "virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:00:00:02"});
  a.linger = 20;
  GuestOptions b =
      guest_options("10.99.0.3", "10.99.0.2", "52:54:00:00:00:03",
                    {"-netdev", "tap,id=n0,ifname=vp1,script=no,downscript=no", "-device",
                     "virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:00:00:03"});
  b.linger = 20;
  Guest ga(dir_.path() + "/console-a");
  Guest gb(dir_.path() + "/console-b");
  ASSERT_EQ(ga.start(a), "");
  ASSERT_EQ(gb.start(b), "");
  ASSERT_TRUE(ga.wait_for("VP-E2E-RESULT:", std::chrono::seconds(150))) << ga.console();
  ASSERT_TRUE(gb.wait_for("VP-E2E-RESULT:", std::chrono::seconds(150))) << gb.console();
  EXPECT_NE(ga.console().find("VP-E2E-RESULT: ok"), std::string::npos)
      << ga.console() << vpd_->log();
  EXPECT_NE(gb.console().find("VP-E2E-RESULT: ok"), std::string::npos)
      << gb.console() << vpd_->log();
  EXPECT_NE(vpd_->log().find("connected to stream frontend at " + sock), std::string::npos);
}

}  // namespace
}  // namespace vp::test
