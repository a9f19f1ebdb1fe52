// End-to-end tier: a guest to the world. The host's bridge br0 has an uplink, a veth into a
// second network namespace that stands in for the LAN, where Debian's dnsmasq serves DHCP
// and is the LAN's router. A real guest (QEMU under TCG) on vp0 gets its address by DHCP
// through vpd and the bridge, then pings the router. Nothing leaves the two namespaces.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <regex>
#include <string>

#include "support/guest.hpp"
#include "support/harness.hpp"

namespace vp::test {
namespace {

constexpr const char* kRouter = "10.77.0.1";
constexpr const char* kGuestMac = "52:54:00:00:00:02";

class DhcpE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(guest_image_dir().empty())
        << "VPD_E2E_IMAGE_DIR is not set (see tests/CMakeLists.txt)";
    // The host: its own namespace with the bridge (no address on it: the guest's network is
    // the LAN's, not the host's) and vpd.
    ASSERT_EQ(enter_private_netns(), "");
    host_.reset(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(enter_private_netns(), "");
    lan_.reset(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(host_ && lan_);
    enter(host_);
    ASSERT_TRUE(sh("ip link add br0 type bridge && ip link set br0 up"));
    ASSERT_TRUE(sh("ip link add uplink type veth peer name lan0"));
    ASSERT_TRUE(sh("ip link set lan0 netns /proc/" + std::to_string(::getpid()) + "/fd/" +
                   std::to_string(lan_.get())));
    ASSERT_TRUE(sh("ip link set uplink master br0 up"));

    // The LAN: its router with dnsmasq handing out 10.77.0.50-99 and itself as the gateway.
    enter(lan_);
    ASSERT_TRUE(sh(std::string("ip addr add ") + kRouter + "/24 dev lan0 && ip link set lan0 up"));
    const std::string d = dir_.path();
    const vp::test::Run dnsmasq = run(
        {"dnsmasq", "--conf-file=/dev/null", "--port=0", "--interface=lan0", "--bind-interfaces",
         "--user=root", "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,10m",
         std::string("--dhcp-option=option:router,") + kRouter, "--dhcp-leasefile=" + d + "/leases",
         "--pid-file=" + d + "/dnsmasq.pid", "--log-dhcp", "--log-facility=" + d + "/dnsmasq.log"});
    ASSERT_EQ(dnsmasq.status, 0) << "dnsmasq (Debian's dnsmasq-base) did not start: "
                                 << dnsmasq.err;

    enter(host_);
    vpd_ = std::make_unique<Vpd>(d);
    ASSERT_EQ(vpd_->start(), "");
  }

  void TearDown() override {
    const std::string pid = file_text(dir_.path() + "/dnsmasq.pid");
    if (!pid.empty()) ::kill(std::stoi(pid), SIGTERM);
    if (HasFailure()) {
      std::cerr << "---- dnsmasq log ----\n" << file_text(dir_.path() + "/dnsmasq.log");
      if (vpd_) std::cerr << "---- vpd log ----\n" << vpd_->log();
    }
  }

  static void enter(const Fd& ns) { ASSERT_EQ(::setns(ns.get(), CLONE_NEWNET), 0); }

  TempDir dir_;
  Fd host_;
  Fd lan_;
  std::unique_ptr<Vpd> vpd_;
};

TEST_F(DhcpE2E, guest_gets_its_address_from_the_lan_by_dhcp_and_reaches_the_router) {
  ASSERT_EQ(vpd_->ctl({"vp0", "create", "bridge=br0", std::string("guest-mac=") + kGuestMac, "up"})
                .status,
            0);
  const std::string sock = vpd_->runtime_dir() + "/vp0.sock";
  GuestOptions o;
  o.image_dir = guest_image_dir();
  o.ip = "dhcp";
  o.peer = kRouter;
  o.mac = kGuestMac;
  o.shared_memory = true;
  // QEMU 7.2 under TCG needs vectors=0 on a vhost-user NIC.
  o.nic = {"-chardev", "socket,id=c0,path=" + sock + ",reconnect=1",
           "-netdev",  "vhost-user,id=n0,chardev=c0",
           "-device",  std::string("virtio-net-pci,netdev=n0,romfile=,vectors=0,mac=") + kGuestMac};
  Guest guest(dir_.path() + "/console");
  ASSERT_EQ(guest.start(o), "");
  ASSERT_TRUE(guest.wait_for("VP-E2E-RESULT:", std::chrono::seconds(150))) << guest.console();
  const std::string console = guest.console();

  // The lease: an address from the range, the LAN's router as the gateway.
  std::smatch m;
  const std::regex lease(R"(VP-E2E-DHCP: (10\.77\.0\.(\d+))/24 router 10\.77\.0\.1 )");
  ASSERT_TRUE(std::regex_search(console, m, lease)) << console;
  const int host_part = std::stoi(m[2].str());
  EXPECT_GE(host_part, 50);
  EXPECT_LE(host_part, 99);
  EXPECT_NE(console.find("VP-E2E-RESULT: ok"), std::string::npos)
      << "the guest did not reach the router\n"
      << console;
  guest.wait_exit(std::chrono::seconds(60));

  // dnsmasq's side: it leased that address to the guest's MAC.
  const std::string leases = file_text(dir_.path() + "/leases");
  EXPECT_NE(leases.find(std::string(kGuestMac) + " " + m[1].str()), std::string::npos) << leases;
  const auto counters = vpd_->ctl_json({"vp0"})["status"]["counters"];
  EXPECT_GE(counters.value("tx_packets", 0u), 4u) << "DISCOVER, REQUEST, pings";
  EXPECT_GE(counters.value("rx_packets", 0u), 4u) << "OFFER, ACK, replies";
}

}  // namespace
}  // namespace vp::test
