// End-to-end tier: a real guest (Debian's QEMU under TCG, Debian's kernel, a busybox
// initramfs) whose virtio-net NIC is served by vpd over vhost-user, pinging an address on
// the host bridge through vpN, inside a private network namespace.

#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "support/guest.hpp"
#include "support/harness.hpp"

namespace vp::test {
namespace {

constexpr const char* kHost = "10.99.0.1";
constexpr const char* kGuest = "10.99.0.2";

class VhostUserE2E : public ::testing::Test {
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

  GuestOptions guest_options(std::vector<std::string> nic) {
    GuestOptions o;
    o.image_dir = guest_image_dir();
    o.ip = std::string(kGuest) + "/24";
    o.peer = kHost;
    o.shared_memory = true;
    o.nic = std::move(nic);
    return o;
  }

  // QEMU 7.2 under TCG needs vectors=0 on a vhost-user NIC (TESTING.md).
  static std::vector<std::string> device() {
    return {"-netdev", "vhost-user,id=n0,chardev=c0", "-device",
            "virtio-net-pci,netdev=n0,romfile=,vectors=0,mac=52:54:00:00:00:02"};
  }

  TempDir dir_;
  std::unique_ptr<Vpd> vpd_;
};

TEST_F(VhostUserE2E, guest_on_bind_socket_pings_the_bridge_and_the_host_pings_back) {
  ASSERT_EQ(ctl({"vp0", "create", "bridge=br0", "up"}).status, 0);
  const std::string sock = vpd_->runtime_dir() + "/vp0.sock";
  std::vector<std::string> nic{"-chardev", "socket,id=c0,path=" + sock + ",reconnect=1"};
  for (auto& a : device()) nic.push_back(a);
  GuestOptions o = guest_options(nic);
  o.linger = 30;
  Guest guest(dir_.path() + "/console");
  ASSERT_EQ(guest.start(o), "");
  ASSERT_TRUE(guest.wait_for("VP-E2E-RESULT:", std::chrono::seconds(120))) << guest.console();
  EXPECT_NE(guest.console().find("VP-E2E-RESULT: ok"), std::string::npos) << guest.console();

  // The host reaches the guest through the bridge and vp0.
  EXPECT_TRUE(sh(std::string("ping -c 3 -W 2 ") + kGuest + " >/dev/null")) << vpd_->log();

  const auto shown = vpd_->ctl_json({"vp0"});
  const auto& status = shown["status"];
  EXPECT_EQ(status.value("guest", ""), "connected") << shown.dump(2);
  EXPECT_TRUE(status.value("carrier", false)) << "carrier is on while the queues run";
  EXPECT_GT(status["counters"].value("tx_packets", 0), 3u) << shown.dump(2);
  EXPECT_GT(status["counters"].value("rx_packets", 0), 3u) << shown.dump(2);
  EXPECT_EQ(status["session"].value("queues_running", 0), 2u);
  EXPECT_EQ(status.value("vnet_hdr_len", 0), 12);
  EXPECT_TRUE(contains_name(status["session"]["features"], "VERSION_1")) << status.dump(2);
  guest.wait_exit(std::chrono::seconds(60));

  // The frontend is gone: carrier off, vpd listens again.
  for (int i = 0; i < 50 && vpd_->ctl_json({"vp0"})["status"].value("guest", "") == "connected";
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto after = vpd_->ctl_json({"vp0"})["status"];
  EXPECT_EQ(after.value("guest", ""), "listening");
  EXPECT_EQ(after.value("socket", ""), sock);
  EXPECT_FALSE(after.value("carrier", true));
}

TEST_F(VhostUserE2E, guest_with_two_vcpus_runs_both_queue_pairs_and_pings) {
  ASSERT_EQ(ctl({"vp0", "create", "bridge=br0", "queues=2", "up"}).status, 0);
  const std::string sock = vpd_->runtime_dir() + "/vp0.sock";
  // Linux's virtio_net enables min(max_virtqueue_pairs, online CPUs) pairs at probe, through
  // the control queue that QEMU serves; QEMU passes it on with SET_VRING_ENABLE. (-smp rides
  // with the NIC options: they are only appended to QEMU's command line.)
  std::vector<std::string> nic{"-smp",
                               "2",
                               "-chardev",
                               "socket,id=c0,path=" + sock + ",reconnect=1",
                               "-netdev",
                               "vhost-user,id=n0,chardev=c0,queues=2",
                               "-device",
                               "virtio-net-pci,netdev=n0,romfile=,mq=on,vectors=0,"
                               "mac=52:54:00:00:00:02"};
  GuestOptions o = guest_options(nic);
  o.linger = 30;
  Guest guest(dir_.path() + "/console");
  ASSERT_EQ(guest.start(o), "");
  ASSERT_TRUE(guest.wait_for("VP-E2E-RESULT:", std::chrono::seconds(120))) << guest.console();
  EXPECT_NE(guest.console().find("VP-E2E-RESULT: ok"), std::string::npos)
      << guest.console() << vpd_->log();

  const auto shown = vpd_->ctl_json({"vp0"});
  const auto& session = shown["status"]["session"];
  EXPECT_TRUE(contains_name(session["features"], "MQ")) << shown.dump(2);
  EXPECT_EQ(session.value("queues", 0), 4) << shown.dump(2);
  // QEMU 7.2 talks to each pair as its own vhost device: nothing it sent was refused (it
  // repeats ADD_MEM_REG per pair, which is why vpd offers only SET_MEM_TABLE with MQ).
  EXPECT_EQ(session.value("refused_messages", -1), 0) << vpd_->log();
  EXPECT_EQ(session.value("queues_running", 0), 4) << "the guest enabled both pairs\n"
                                                   << shown.dump(2);
  // The host reaches the guest through the bridge, whichever TAP queue each flow takes.
  EXPECT_TRUE(sh(std::string("ping -c 3 -W 2 ") + kGuest + " >/dev/null")) << vpd_->log();
  EXPECT_TRUE(shown["status"].value("carrier", false));
  // ~Guest stops QEMU: no need to wait out the linger.
}

TEST_F(VhostUserE2E, vpd_dials_a_qemu_that_serves_the_socket_and_redials_when_it_restarts) {
  const std::string sock = dir_.path() + "/qemu-vp0.sock";
  ASSERT_EQ(ctl({"vp0", "create", "peer=" + sock, "bridge=br0", "up"}).status, 0);
  std::vector<std::string> nic{"-chardev", "socket,id=c0,path=" + sock + ",server=on,wait=off"};
  for (auto& a : device()) nic.push_back(a);
  GuestOptions o = guest_options(nic);
  o.linger = 30;
  uint64_t sessions = 0;
  {
    Guest guest(dir_.path() + "/console");
    ASSERT_EQ(guest.start(o), "");
    ASSERT_TRUE(guest.wait_for("VP-E2E-RESULT:", std::chrono::seconds(120))) << guest.console();
    EXPECT_NE(guest.console().find("VP-E2E-RESULT: ok"), std::string::npos)
        << guest.console() << vpd_->log();
    EXPECT_NE(vpd_->log().find("connected to frontend at " + sock), std::string::npos);
    // Both ways: the host reaches the guest through the bridge and vp0.
    EXPECT_TRUE(sh(std::string("ping -c 3 -W 2 ") + kGuest + " >/dev/null")) << vpd_->log();
    sessions = vpd_->ctl_json({"vp0"})["status"]["session"].value("sessions", uint64_t{0});
    EXPECT_GE(sessions, 1u);
    // ~Guest stops QEMU: the VMM goes away with its socket.
  }
  for (int i = 0; i < 50 && vpd_->ctl_json({"vp0"})["status"].value("guest", "") == "connected";
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_FALSE(vpd_->ctl_json({"vp0"})["status"].value("carrier", true));

  // The VMM comes back (a VM restart): vpd dials it again and the new guest is on the bridge.
  Guest again(dir_.path() + "/console2");
  o.linger = 10;
  ASSERT_EQ(again.start(o), "");
  ASSERT_TRUE(again.wait_for("VP-E2E-RESULT:", std::chrono::seconds(120))) << again.console();
  EXPECT_NE(again.console().find("VP-E2E-RESULT: ok"), std::string::npos)
      << again.console() << vpd_->log();
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"]["session"].value("sessions", uint64_t{0}),
            sessions + 1)
      << vpd_->log();
  again.wait_exit(std::chrono::seconds(60));
}

TEST_F(VhostUserE2E, guest_traffic_resumes_after_vpd_is_killed_or_stopped_and_restarted) {
  ASSERT_EQ(ctl({"vp0", "create", "bridge=br0", "up"}).status, 0);
  const int ifindex = vpd_->ctl_json({"vp0"})["status"].value("ifindex", 0);
  const std::string sock = vpd_->runtime_dir() + "/vp0.sock";
  std::vector<std::string> nic{"-chardev", "socket,id=c0,path=" + sock + ",reconnect=1"};
  for (auto& a : device()) nic.push_back(a);
  GuestOptions o = guest_options(nic);
  o.pingloop = 90;
  Guest guest(dir_.path() + "/console");
  ASSERT_EQ(guest.start(o), "");
  ASSERT_TRUE(guest.wait_for("VP-E2E-PING: ok", std::chrono::seconds(120))) << guest.console();

  vpd_->kill9();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ASSERT_EQ(vpd_->start(), "");
  const size_t mark = guest.serial().size();
  // Pings resume: an "ok" line after the restart.
  bool resumed = false;
  for (int i = 0; i < 600 && !resumed; ++i) {
    const std::string tail = guest.serial().substr(mark);
    resumed = tail.find("VP-E2E-PING: ok") != std::string::npos;
    if (!resumed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(resumed) << guest.serial().substr(mark) << "\nvpd log:\n" << vpd_->log();
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"].value("ifindex", 0), ifindex)
      << "the TAP device survived the restart";

  // A clean stop and start (systemctl restart) as well.
  EXPECT_EQ(vpd_->stop(), 0) << vpd_->log();
  ASSERT_EQ(vpd_->start(), "");
  const size_t mark2 = guest.serial().size();
  resumed = false;
  for (int i = 0; i < 600 && !resumed; ++i) {
    resumed = guest.serial().substr(mark2).find("VP-E2E-PING: ok") != std::string::npos;
    if (!resumed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(resumed) << guest.serial().substr(mark2) << "\nvpd log:\n" << vpd_->log();
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"].value("ifindex", 0), ifindex);
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"].value("master", ""), "br0")
      << "still a port of the bridge";
}

}  // namespace
}  // namespace vp::test
