// End-to-end tier: live migration of a guest whose NIC is served by vpd over vhost-user. The
// source QEMU runs on vp0, the target (same command line plus -incoming) on vp1, both ports
// of one bridge; the monitor's `migrate` moves the guest, vpd logs the pages it writes for
// the source, and after the switch the guest keeps pinging the bridge from the target.

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "support/guest.hpp"
#include "support/harness.hpp"
#include "sys/unix_socket.hpp"

namespace vp::test {
namespace {

using std::chrono::steady_clock;

// A QEMU human monitor (HMP) on a Unix socket: each command is answered by what QEMU prints
// up to its next "(qemu) " prompt.
class Monitor {
 public:
  // Connects (retrying while QEMU creates the socket) and reads the banner.
  std::string open(const std::string& path) {
    for (int i = 0; i < 100 && !fd_; ++i) {
      if (auto fd = connect_unix(path)) {
        fd_ = std::move(*fd);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    if (!fd_) return "cannot connect to the monitor at " + path;
    read_prompt();
    return "";
  }

  std::string command(const std::string& line) {
    const std::string text = line + "\n";
    if (::send(fd_.get(), text.data(), text.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(text.size())) {
      return "<send failed>";
    }
    return read_prompt();
  }

 private:
  std::string read_prompt() {
    std::string out;
    const auto deadline = steady_clock::now() + std::chrono::seconds(10);
    while (out.find("(qemu) ") == std::string::npos && steady_clock::now() < deadline) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) != 1) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  Fd fd_;
};

TEST(VhostUserMigrationE2E, guest_moves_from_vp0_to_vp1_and_pings_the_bridge_from_there) {
  ASSERT_FALSE(guest_image_dir().empty())
      << "VPD_E2E_IMAGE_DIR is not set (see tests/CMakeLists.txt)";
  ASSERT_EQ(enter_private_netns(), "");
  ASSERT_TRUE(
      sh("ip link add br0 type bridge && ip link set br0 up && "
         "ip addr add 10.99.0.1/24 dev br0"));
  TempDir dir;
  Vpd vpd(dir.path());
  ASSERT_EQ(vpd.start(), "");
  ASSERT_EQ(vpd.ctl({"vp0", "create", "bridge=br0", "up"}).status, 0);
  ASSERT_EQ(vpd.ctl({"vp1", "create", "bridge=br0", "up"}).status, 0);

  // The same machine on both sides, its NIC on vp0 or vp1. QEMU 7.2 under TCG needs
  // vectors=0 on a vhost-user NIC.
  auto options = [&](const std::string& endpoint, const std::string& monitor) {
    GuestOptions o;
    o.image_dir = guest_image_dir();
    o.ip = "10.99.0.2/24";
    o.peer = "10.99.0.1";
    o.shared_memory = true;
    o.pingloop = 300;
    o.nic = {
        "-chardev", "socket,id=c0,path=" + vpd.runtime_dir() + "/" + endpoint + ".sock,reconnect=1",
        "-netdev",  "vhost-user,id=n0,chardev=c0",
        "-device",  "virtio-net-pci,netdev=n0,romfile=,vectors=0,mac=52:54:00:00:00:02",
        "-monitor", "unix:" + monitor + ",server=on,wait=off"};
    return o;
  };
  const std::string incoming = dir.path() + "/migration.sock";
  Guest source(dir.path() + "/console-source");
  ASSERT_EQ(source.start(options("vp0", dir.path() + "/monitor-source")), "");
  ASSERT_TRUE(source.wait_for("VP-E2E-PING: ok", std::chrono::seconds(180))) << source.console();

  GuestOptions target_options = options("vp1", dir.path() + "/monitor-target");
  target_options.nic.push_back("-incoming");
  target_options.nic.push_back("unix:" + incoming);
  Guest target(dir.path() + "/console-target");
  ASSERT_EQ(target.start(target_options), "");
  // The target connects to vp1 and waits for the migration stream.
  bool ready = false;
  for (int i = 0; i < 300 && !ready; ++i) {
    ready = std::filesystem::exists(incoming) &&
            vpd.ctl_json({"vp1"})["status"].value("guest", "") == "connected";
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(ready) << target.console() << "\nvpd log:\n" << vpd.log();

  // What vpd puts into vp1 (frames the bridge receives from the target's port).
  Fd vp1_frames = packet_socket("vp1", SOCK_NONBLOCK);
  ASSERT_TRUE(vp1_frames);
  Monitor monitor;
  ASSERT_EQ(monitor.open(dir.path() + "/monitor-source"), "");
  const std::string started = monitor.command("migrate -d unix:" + incoming);
  EXPECT_EQ(started.find("rror"), std::string::npos) << started << "\n" << vpd.log();
  std::string status;
  const auto deadline = steady_clock::now() + std::chrono::minutes(5);
  while (steady_clock::now() < deadline) {
    status = monitor.command("info migrate");
    if (status.find("Migration status: completed") != std::string::npos ||
        status.find("Migration status: failed") != std::string::npos ||
        status.find("Migration status: cancelled") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_NE(status.find("Migration status: completed"), std::string::npos)
      << status << "\nsource:\n"
      << source.console() << "\ntarget:\n"
      << target.console() << "\nvpd log:\n"
      << vpd.log();

  // The source logged what it wrote into the guest while its RAM was copied.
  const auto vp0 = vpd.ctl_json({"vp0"})["status"];
  EXPECT_GT(vp0["counters"].value("dirty_pages_logged", 0u), 0u) << vp0.dump(2);
  EXPECT_EQ(vp0["session"].value("refused_messages", 1u), 0u) << vp0.dump(2) << vpd.log();

  // The source's rings stopped at GET_VRING_BASE: frames sent out of vp0 now (straight into
  // its TAP, past the bridge) reach no guest memory there: vpd delivers nothing more.
  EXPECT_EQ(vp0["session"].value("queues_running", 1u), 0u) << vp0.dump(2);
  {
    const uint64_t before = vp0["counters"].value("rx_packets", 0ull);
    Fd br = packet_socket("vp0");
    ASSERT_TRUE(br);
    uint8_t bcast[60] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xb5};
    for (int i = 0; i < 20; ++i) EXPECT_EQ(::send(br.get(), bcast, sizeof bcast, 0), 60);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const auto after = vpd.ctl_json({"vp0"})["status"];
    EXPECT_EQ(after["counters"].value("rx_packets", 0ull), before) << after.dump(2);
  }

  // The guest runs on: its pings, printed by the target now, go out through vp1.
  bool pinged = false;
  for (int i = 0; i < 1200 && !pinged; ++i) {
    pinged = target.serial().find("VP-E2E-PING: ok") != std::string::npos;
    if (!pinged) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(pinged) << target.console() << "\nvpd log:\n" << vpd.log();
  const auto vp1 = vpd.ctl_json({"vp1"})["status"];
  EXPECT_EQ(vp1["session"].value("queues_running", 0u), 2u) << vp1.dump(2);
  EXPECT_GT(vp1["counters"].value("tx_packets", 0u), 0u) << vp1.dump(2);
  EXPECT_GT(vp1["counters"].value("rx_packets", 0u), 0u) << vp1.dump(2);
  EXPECT_EQ(vp1["session"].value("refused_messages", 1u), 0u) << vp1.dump(2) << vpd.log();
  EXPECT_FALSE(vp1["session"].value("dirty_logging", true)) << "the target does not log";
  // QEMU asked vp1 to announce the guest (SEND_RARP): a RARP broadcast from the guest's MAC
  // came in through vp1, and the bridge has the guest behind vp1.
  EXPECT_NE(vpd.log().find("announced the guest's MAC"), std::string::npos) << vpd.log();
  bool rarp = false;
  uint8_t frame[2048];
  for (int i = 0; i < 2000 && !rarp; ++i) {
    const ssize_t n = ::recv(vp1_frames.get(), frame, sizeof frame, 0);
    if (n < 0) break;  // everything queued has been read
    const uint8_t guest[6] = {0x52, 0x54, 0x00, 0x00, 0x00, 0x02};
    rarp = n >= 42 && frame[12] == 0x80 && frame[13] == 0x35 &&
           std::memcmp(frame + 6, guest, 6) == 0 && frame[0] == 0xff;
  }
  EXPECT_TRUE(rarp) << "no RARP broadcast from 52:54:00:00:00:02 through vp1";
  const vp::test::Run fdb = run({"bridge", "fdb", "show", "br", "br0"});
  EXPECT_NE(fdb.out.find("52:54:00:00:00:02 dev vp1"), std::string::npos) << fdb.out;
}

}  // namespace
}  // namespace vp::test
