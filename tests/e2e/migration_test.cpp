// End-to-end tier: live migration of a guest whose NIC is served by vpd over vhost-user. The
// source QEMU runs on vp0, the target (same command line plus -incoming) on vp1, both ports
// of one bridge; the monitor's `migrate` moves the guest, vpd logs the pages it writes for
// the source, and after the switch the guest keeps pinging the bridge from the target. A TCP
// stream from the host runs into the guest before, during and after the migration; the guest
// checks every byte of it.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
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

// The host side of the guest's VP_STREAM check: numbered lines into a TCP connection, about
// a hundred a second (so the migration still converges under TCG), until stopped; then
// "VPEND" and the end of the stream.
class LineStream {
 public:
  // Connects to ADDR:PORT, retrying while the guest starts listening.
  std::string open(const char* addr, uint16_t port) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, addr, &to.sin_addr);
    for (int i = 0; i < 100; ++i) {
      Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0) {
        timeval timeout{60, 0};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        fd_ = std::move(fd);
        writer_ = std::thread([this] { write_lines(); });
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return std::string("cannot connect to the guest's stream: ") + std::strerror(errno);
  }
  // Stops writing, ends the stream; returns "" or why the stream broke.
  std::string close() {
    stop_ = true;
    if (writer_.joinable()) writer_.join();
    return error_;
  }
  uint64_t lines() const { return lines_; }
  // Waits (at most a minute) until `n` lines are out; false if the stream broke first.
  bool wait_lines(uint64_t n) const {
    for (int i = 0; i < 1200 && lines_ < n && !done_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return lines_ >= n;
  }
  ~LineStream() { close(); }

 private:
  bool send_all(const std::string& text) {
    size_t sent = 0;
    while (sent < text.size()) {
      const ssize_t n = ::send(fd_.get(), text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        error_ = std::string("send: ") + std::strerror(errno);
        return false;
      }
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  void write_lines() {
    while (!stop_) {
      char number[16];
      std::snprintf(number, sizeof number, "%08llu", static_cast<unsigned long long>(lines_));
      std::string line = std::string("VPSEQ ") + number + " ";
      for (int i = 0; i < 160; ++i) line += number;
      if (!send_all(line + "\n")) {
        done_ = true;
        return;
      }
      ++lines_;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (send_all("VPEND\n")) ::shutdown(fd_.get(), SHUT_WR);
    done_ = true;
  }

  Fd fd_;
  std::thread writer_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::atomic<uint64_t> lines_{0};
  std::string error_;
};

// An AF_PACKET socket on `ifname` that keeps only ARP frames. ETH_P_ALL, because a socket of
// one protocol sees nothing a bridge port's rx handler takes; a filter, because the stream
// would fill the socket's buffer otherwise.
Fd arp_socket(const std::string& ifname) {
  Fd fd = packet_socket(ifname, SOCK_NONBLOCK);
  if (!fd) return fd;
  sock_filter code[] = {
      {BPF_LD | BPF_H | BPF_ABS, 0, 0, 12},          // the EtherType
      {BPF_JMP | BPF_JEQ | BPF_K, 0, 1, ETH_P_ARP},  // ARP: keep it
      {BPF_RET | BPF_K, 0, 0, 0xffff},
      {BPF_RET | BPF_K, 0, 0, 0},
  };
  sock_fprog program{static_cast<unsigned short>(std::size(code)), code};
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) != 0) {
    return Fd();
  }
  // Frames that came in before the filter was attached.
  uint8_t drain[2048];
  while (::recv(fd.get(), drain, sizeof drain, 0) > 0) {
  }
  return fd;
}

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
    o.stream_port = 7777;
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
  ASSERT_TRUE(source.wait_for("VP-E2E-STREAM: listening", std::chrono::seconds(30)))
      << source.console();
  LineStream stream;
  ASSERT_EQ(stream.open("10.99.0.2", 7777), "") << source.console();

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

  // The ARP frames vpd puts into vp1 (what the bridge receives from the target's port).
  Fd vp1_arp = arp_socket("vp1");
  ASSERT_TRUE(vp1_arp);
  // Some of the stream goes to the guest before the migration starts.
  ASSERT_TRUE(stream.wait_lines(200)) << stream.close();
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
  // vpd offered QEMU VIRTIO_NET_F_GUEST_ANNOUNCE and the guest took it: after the switch
  // the guest announced itself, a gratuitous ARP (sender and target address its own) from
  // its MAC that came in through vp1, and the bridge has the guest behind vp1.
  const std::string features = vp1["session"]["features"].dump();
  EXPECT_NE(features.find("GUEST_ANNOUNCE"), std::string::npos) << features;
  bool announced = false;
  uint8_t frame[2048];
  std::string seen;  // the ARP frames that came in, for the failure message
  for (int i = 0; i < 2000 && !announced; ++i) {
    const ssize_t n = ::recv(vp1_arp.get(), frame, sizeof frame, 0);
    if (n < 0) break;  // everything queued has been read
    for (ssize_t b = 0; b < std::min<ssize_t>(n, 42); ++b) {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%02x", frame[b]);
      seen += hex;
    }
    seen += "\n";
    const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x00, 0x00, 0x02};
    const uint8_t guest_ip[4] = {10, 99, 0, 2};
    announced = n >= 42 && std::memcmp(frame + 6, guest_mac, 6) == 0 &&
                std::memcmp(frame + 28, guest_ip, 4) == 0 &&
                std::memcmp(frame + 38, guest_ip, 4) == 0;
  }
  EXPECT_TRUE(announced) << "no gratuitous ARP from 52:54:00:00:00:02 (10.99.0.2) through vp1; "
                            "ARP frames seen:\n"
                         << seen << target.console();
  const vp::test::Run fdb = run({"bridge", "fdb", "show", "br", "br0"});
  EXPECT_NE(fdb.out.find("52:54:00:00:00:02 dev vp1"), std::string::npos) << fdb.out;

  // The stream ran on into the guest on vp1 for a while after the switch; every line the
  // host sent, before, during and after the migration, reached the guest intact and once.
  const uint64_t at_switch = stream.lines();
  EXPECT_TRUE(stream.wait_lines(at_switch + 300));
  ASSERT_EQ(stream.close(), "");
  const std::string want =
      "VP-E2E-STREAM: lines " + std::to_string(stream.lines()) + " bad 0 end 1";
  EXPECT_TRUE(target.wait_for(want, std::chrono::seconds(120))) << "expected \"" << want << "\"\n"
                                                                << target.console();
}

}  // namespace
}  // namespace vp::test
