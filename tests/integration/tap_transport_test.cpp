// transport=tap against a real vpd: vpd provisions a persistent TAP, hands it to owner=/
// group= and keeps no queue of it, so an unprivileged process (as a VMM would) opens it by
// name and exchanges frames with the kernel through it, inside a private network namespace.

#include <fcntl.h>
#include <grp.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "integration/vpd_fixture.hpp"

namespace vp::test {
namespace {

constexpr uid_t kVmmUid = 65534;  // nobody: not root, no capabilities
constexpr gid_t kVmmGid = 65534;

/// Runs `fn` in a child that dropped to uid/gid (no supplementary groups, so no
/// capabilities), in this network namespace; returns the child's exit status (or -1).
int as_user(uid_t uid, gid_t gid, const std::function<int()>& fn) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(90);
    ::_exit(fn());
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

/// What QEMU's tap_open() does: /dev/net/tun + TUNSETIFF by name; IFF_MULTI_QUEUE exactly when
/// it wants several queues; then its header size. Returns the fd, or -errno.
int open_tap(const std::string& name, bool multi_queue) {
  const int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return -errno;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags =
      static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0));
  if (::ioctl(fd, TUNSETIFF, &ifr) != 0) {
    const int err = errno;
    ::close(fd);
    return -err;
  }
  // Like QEMU, choose the header size: the TAP keeps what its previous user set.
  int hdr = 10;
  if (::ioctl(fd, TUNSETVNETHDRSZ, &hdr) != 0) {
    const int err = errno;
    ::close(fd);
    return -err;
  }
  return fd;
}

/// Through the TAP queue `fd` (10-byte vnet header, the kernel's default): an ARP request for
/// 10.94.0.1 from 10.94.0.2; true when the kernel's reply comes back within 5 s.
bool arp_through(int fd) {
  const uint8_t mac[6] = {0x52, 0x54, 0x00, 0x00, 0x00, 0x09};
  std::vector<uint8_t> f(10, 0);
  f.insert(f.end(), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  f.insert(f.end(), mac, mac + 6);
  f.insert(f.end(), {0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01});
  f.insert(f.end(), mac, mac + 6);
  f.insert(f.end(), {10, 94, 0, 2, 0, 0, 0, 0, 0, 0, 10, 94, 0, 1});
  for (int attempt = 0; attempt < 50; ++attempt) {
    // The kernel activates the qdisc shortly after carrier comes on: ask again until then.
    if (::write(fd, f.data(), f.size()) != static_cast<ssize_t>(f.size())) return false;
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, 100) > 0) {
      uint8_t buf[2048];
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n >= 10 + 42 && std::memcmp(buf + 10, mac, 6) == 0 && buf[10 + 12] == 0x08 &&
          buf[10 + 13] == 0x06 && buf[10 + 21] == 2) {
        return true;
      }
    }
  }
  return false;
}

class TapTransport : public VpdFixture {
 protected:
  void SetUp() override {
    VpdFixture::SetUp();
    ASSERT_EQ(vpd().start(), "");
  }

  bool carrier(const std::string& name) { return has_flag(link_json(name), "LOWER_UP"); }
};

TEST_F(TapTransport, an_unprivileged_owner_opens_the_tap_by_name_and_exchanges_frames) {
  ok({"vp0", "create", "transport=tap", "owner=65534", "group=65534", "address=10.94.0.1/24",
      "up"});
  const json link = link_json("vp0");
  ASSERT_TRUE(link.is_object());
  EXPECT_EQ(link["linkinfo"]["info_data"].value("persist", false), true) << link.dump();
  EXPECT_EQ(link["linkinfo"]["info_data"].value("multi_queue", true), false) << link.dump();
  EXPECT_EQ(link["linkinfo"]["info_data"].value("user", ""), "nobody") << link.dump();
  EXPECT_FALSE(carrier("vp0")) << "vpd keeps no queue of a transport=tap TAP";
  json shown = show("vp0");
  EXPECT_EQ(shown["status"].value("guest", ""), "not-attached");
  EXPECT_TRUE(contains(shown["status"].value("peerfeats_note", ""), "advisory"));
  EXPECT_FALSE(shown["status"].contains("counters")) << "vpd has no data path here";
  const Output human = ok({"vp0"});
  EXPECT_TRUE(contains(human.out, "peerfeats note:")) << human.out;
  EXPECT_TRUE(contains(human.out, "not attached (a VMM opens vp0 by name)")) << human.out;

  // The owner (a single-queue open, as QEMU does with queues=1) gets it: vpd holds no queue,
  // or this would be EBUSY.
  const int rc = as_user(kVmmUid, kVmmGid, [] {
    const int fd = open_tap("vp0", false);
    if (fd < 0) return 10 + (-fd % 100);
    return arp_through(fd) ? 0 : 3;
  });
  EXPECT_EQ(rc, 0) << "10+errno: open failed; 3: no ARP reply\n" << vpd().log();
  // Someone else may not.
  EXPECT_EQ(as_user(65533, 65533, [] { return -open_tap("vp0", false); }), EPERM);

  // While the "VMM" holds it, vpd shows it attached and what offloads it set.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(kVmmGid) != 0 || ::setuid(kVmmUid) != 0) {
      ::_exit(90);
    }
    const int fd = open_tap("vp0", false);
    if (fd < 0) ::_exit(91);
    ::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(TUN_F_CSUM | TUN_F_TSO4));
    char c = 0;
    (void)!::write(pipe_fds[1], &c, 1);
    ::pause();  // holds the queue until the parent kills it
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  char c = 0;
  ASSERT_EQ(::read(pipe_fds[0], &c, 1), 1);
  shown = show("vp0");
  EXPECT_EQ(shown["status"].value("guest", ""), "attached");
  EXPECT_EQ(shown["status"].value("tun_offloads", ""), "CSUM|TSO4") << shown.dump(2);
  EXPECT_TRUE(shown["status"].value("carrier", false));
  // A setting vpd owns still applies while the VMM holds the TAP.
  ok({"vp0", "mtu=1400"});
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1400);
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  ::close(pipe_fds[0]);
  EXPECT_FALSE(carrier("vp0")) << "the VMM's queue closed";

  const Output args = ok({"vp0", "qemu-args"});
  EXPECT_TRUE(contains(args.out, "-netdev tap,id=vp0,ifname=vp0,script=no,downscript=no"))
      << args.out;
  EXPECT_TRUE(contains(args.out, "/dev/vhost-net")) << args.out;
}

TEST_F(TapTransport, queues_two_gives_a_multiqueue_tap_the_owner_opens_twice) {
  ok({"vp0", "create", "transport=tap", "queues=2", "owner=65534", "address=10.94.0.1/24", "up"});
  EXPECT_EQ(link_json("vp0")["linkinfo"]["info_data"].value("multi_queue", false), true);
  const int rc = as_user(kVmmUid, kVmmGid, [] {
    const int a = open_tap("vp0", true);
    const int b = open_tap("vp0", true);
    if (a < 0 || b < 0) return 10;
    // Every queue attached is the VMM's: a frame the kernel steers goes to one of them.
    return arp_through(a) || arp_through(b) ? 0 : 3;
  });
  EXPECT_EQ(rc, 0) << vpd().log();
  const Output args = ok({"vp0", "qemu-args"});
  EXPECT_TRUE(contains(args.out, "queues=2")) << args.out;
}

TEST_F(TapTransport, switching_an_endpoint_to_tap_lets_go_of_vpds_queue) {
  ASSERT_TRUE(sh("ip link add br0 type bridge && ip link set br0 up"));
  // vhost-user, vpd holds a queue of a multiqueue TAP; no guest has attached.
  ok({"vp0", "create", "address=10.94.0.1/24", "bridge=br0", "mtu=1400", "up"});
  const json was = link_json("vp0");
  // Single queue wanted: vpd re-creates the TAP single-queue under the same name, with the
  // same MAC, MTU, bridge, address and state.
  ok({"vp0", "transport=tap", "-bind", "owner=65534", "group=65534"});
  const json now = link_json("vp0");
  EXPECT_NE(now.value("ifindex", 0), was.value("ifindex", 0)) << "a new TAP";
  EXPECT_EQ(now.value("address", ""), was.value("address", ""));
  EXPECT_EQ(now.value("mtu", 0), 1400);
  EXPECT_EQ(now.value("master", ""), "br0");
  EXPECT_TRUE(has_flag(now, "UP")) << now.dump();
  EXPECT_EQ(addresses_of("vp0"), std::vector<std::string>{"10.94.0.1/24"});
  EXPECT_EQ(show("vp0")["transport"], "tap");
  EXPECT_EQ(as_user(kVmmUid, kVmmGid,
                    [] {
                      const int fd = open_tap("vp0", false);  // QEMU with queues=1
                      return fd < 0 ? 10 : arp_through(fd) ? 0 : 3;
                    }),
            0)
      << vpd().log();
  // And back, while nobody has it open: multiqueue again, vpd's own queue.
  ok({"vp0", "transport=vhost-user", "-owner", "-group"});
  EXPECT_EQ(show("vp0")["transport"], "vhost-user");
  EXPECT_EQ(link_json("vp0").value("master", ""), "br0");
  // Multiqueue matches: it switches without a new TAP, and the owner can attach beside
  // nothing of vpd's.
  const int ifindex = link_json("vp0").value("ifindex", 0);
  ok({"vp0", "transport=tap", "-bind", "queues=2", "owner=65534"});
  EXPECT_EQ(link_json("vp0").value("ifindex", 0), ifindex);
  EXPECT_FALSE(carrier("vp0"));
  EXPECT_EQ(as_user(kVmmUid, kVmmGid,
                    [] {
                      const int fd = open_tap("vp0", true);
                      return fd < 0 ? 10 : arp_through(fd) ? 0 : 3;
                    }),
            0)
      << vpd().log();
}

TEST_F(TapTransport, vpd_restart_readopts_the_tap_the_vmm_holds) {
  ok({"vp0", "create", "transport=tap", "owner=65534", "address=10.94.0.1/24", "up"});
  const int ifindex = show("vp0")["status"].value("ifindex", 0);
  const int fd = open_tap("vp0", false);  // the "VMM" (root here, the owner check aside)
  ASSERT_GE(fd, 0) << std::strerror(-fd);
  ASSERT_EQ(vpd().stop(), 0);
  ASSERT_EQ(vpd().start(), "");
  const json shown = show("vp0");
  EXPECT_EQ(shown["status"].value("ifindex", 0), ifindex);
  EXPECT_EQ(shown["status"]["problems"].size(), 0u) << shown.dump(2);
  EXPECT_EQ(shown["status"].value("guest", ""), "attached");
  EXPECT_TRUE(arp_through(fd)) << "the VMM's queue kept working across the restart";
  ::close(fd);
}

}  // namespace
}  // namespace vp::test
