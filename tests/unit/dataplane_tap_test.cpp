// The forwarder against a REAL TAP (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, vnet header 12) in a
// private network namespace. Each test runs in its own thread that unshare(CLONE_NEWNET)s
// (a network namespace is per thread), so nothing leaves the namespace and the rest of the
// test process is untouched. Skipped without the privilege to create namespaces.
//
// Frames out of a TAP come from the kernel side: the TAP gets 10.77.0.1/24 and a static ARP
// entry for 10.77.0.2, so a UDP datagram sent to 10.77.0.2 is transmitted into the TAP.
// Frames into a TAP are addressed to 10.77.0.1 and read by a UDP socket bound there.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "dataplane/forward.hpp"
#include "dataplane_rings.hpp"
#include "net/offloads.hpp"
#include "net/tap.hpp"

namespace vp::dataplane {
namespace {

using test::Bytes;
using test::UsedElem;

constexpr uint64_t kVersion1 = 1ull << 32;
constexpr const char* kTapName = "vpdt0";
constexpr unsigned char kPeerMac[6] = {0x02, 0, 0, 0, 0x77, 0x02};

bool wait_readable(int fd, int ms = 2000) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

void write_file(const char* path, const char* text) {
  Fd fd(::open(path, O_WRONLY | O_CLOEXEC));
  if (fd) (void)!::write(fd.get(), text, std::strlen(text));
}

/// The TAP, its address, a neighbour with a static ARP entry, and a UDP socket in the namespace.
struct TapRig {
  net::Tap tap;
  Fd inet;  // AF_INET datagram socket: ioctls, and the kernel-side sender/receiver
  unsigned char tap_mac[6] = {};

  /// Empty string on success, else why not.
  std::string setup() {
    // No IPv6 in this namespace: no router solicitations or MLD reports in the TAP.
    write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
    auto opened = net::Tap::open(kTapName, false);
    if (!opened) return opened.error().message;
    tap = std::move(*opened);
    if (auto r = tap.set_vnet_hdr_size(12); !r) return r.error().message;
    inet.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, kTapName);
    auto* sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
    sin->sin_family = AF_INET;
    ::inet_pton(AF_INET, "10.77.0.1", &sin->sin_addr);
    if (::ioctl(inet.get(), SIOCSIFADDR, &ifr) < 0) return "SIOCSIFADDR";
    ::inet_pton(AF_INET, "255.255.255.0", &sin->sin_addr);
    if (::ioctl(inet.get(), SIOCSIFNETMASK, &ifr) < 0) return "SIOCSIFNETMASK";
    std::memset(&ifr, 0, sizeof ifr);
    std::strcpy(ifr.ifr_name, kTapName);
    if (::ioctl(inet.get(), SIOCGIFHWADDR, &ifr) < 0) return "SIOCGIFHWADDR";
    std::memcpy(tap_mac, ifr.ifr_hwaddr.sa_data, 6);
    if (::ioctl(inet.get(), SIOCGIFFLAGS, &ifr) < 0) return "SIOCGIFFLAGS";
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(inet.get(), SIOCSIFFLAGS, &ifr) < 0) return "SIOCSIFFLAGS";
    arpreq arp{};
    auto* pa = reinterpret_cast<sockaddr_in*>(&arp.arp_pa);
    pa->sin_family = AF_INET;
    ::inet_pton(AF_INET, "10.77.0.2", &pa->sin_addr);
    arp.arp_ha.sa_family = ARPHRD_ETHER;
    std::memcpy(arp.arp_ha.sa_data, kPeerMac, 6);
    arp.arp_flags = ATF_COM | ATF_PERM;
    std::strcpy(arp.arp_dev, kTapName);
    if (::ioctl(inet.get(), SIOCSARP, &arp) < 0) return "SIOCSARP";
    // Anything the kernel sent on link-up is not ours.
    std::byte junk[2048];
    ::usleep(50000);
    while (::read(tap.fd(), junk, sizeof junk) > 0) {
    }
    return {};
  }

  /// A datagram to the neighbour: the kernel transmits it into the TAP.
  void send_to_neighbour(const Bytes& payload, uint16_t port = 7777) {
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(port);
    ::inet_pton(AF_INET, "10.77.0.2", &dst.sin_addr);
    ASSERT_EQ(::sendto(inet.get(), payload.data(), payload.size(), 0,
                       reinterpret_cast<sockaddr*>(&dst), sizeof dst),
              static_cast<ssize_t>(payload.size()));
  }
};

/// Runs `body` in a new thread in a new network namespace with a TapRig; the skip reason if
/// that is not possible here.
std::optional<std::string> in_private_netns(const std::function<void(TapRig&)>& body) {
  std::optional<std::string> skip;
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      skip = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
      return;
    }
    TapRig rig;
    if (std::string why = rig.setup(); !why.empty()) {
      skip = "TAP setup: " + why;
      return;
    }
    body(rig);
  });
  t.join();
  return skip;
}

Bytes payload(std::size_t len, int seed) {
  Bytes p(len);
  for (std::size_t i = 0; i < len; ++i) p[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  return p;
}

uint16_t be16(const Bytes& b, std::size_t at) {
  return static_cast<uint16_t>((std::to_integer<unsigned>(b[at]) << 8) |
                               std::to_integer<unsigned>(b[at + 1]));
}

// An IPv4/UDP frame from the neighbour to the TAP's address, checksums complete (UDP 0).
Bytes udp_frame_to_tap(const unsigned char* tap_mac, const Bytes& data, uint16_t port) {
  Bytes f(14 + 20 + 8 + data.size());
  auto put = [&](std::size_t at, std::initializer_list<int> v) {
    for (int x : v) f[at++] = static_cast<std::byte>(x);
  };
  for (int i = 0; i < 6; ++i) f[i] = std::byte{tap_mac[i]};
  for (int i = 0; i < 6; ++i) f[6 + i] = std::byte{kPeerMac[i]};
  put(12, {0x08, 0x00});
  const auto ip_len = static_cast<uint16_t>(20 + 8 + data.size());
  put(14, {0x45, 0, ip_len >> 8, ip_len & 0xff, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 2, 10, 77,
           0,    1});
  uint32_t sum = 0;
  for (std::size_t i = 14; i < 34; i += 2) sum += be16(f, i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  const auto csum = static_cast<uint16_t>(~sum);
  put(24, {csum >> 8, csum & 0xff});
  const auto udp_len = static_cast<uint16_t>(8 + data.size());
  put(34, {0x27, 0x0f, port >> 8, port & 0xff, udp_len >> 8, udp_len & 0xff, 0, 0});
  std::memcpy(f.data() + 42, data.data(), data.size());
  return f;
}

// What the design rests on: tun truncates a frame to the room the reader offers, returns the
// TRUNCATED length (no error, no flag with IFF_NO_PI) and discards the rest; a read smaller
// than the vnet header fails with EINVAL and also drops the frame. Hence the probe element.
TEST(DataplaneRealTap, tun_truncates_silently_to_the_room_offered) {
  const auto skip = in_private_netns([](TapRig& rig) {
    rig.send_to_neighbour(payload(1000, 1));  // frame 14 + 20 + 8 + 1000 = 1042
    rig.send_to_neighbour(payload(100, 2));   // 142
    rig.send_to_neighbour(payload(200, 3));   // 242
    ASSERT_TRUE(wait_readable(rig.tap.fd()));
    std::byte hdr[12];
    std::byte body[50];
    iovec iov[2] = {{hdr, sizeof hdr}, {body, sizeof body}};
    EXPECT_EQ(::readv(rig.tap.fd(), iov, 2), 62);  // not 1054: truncated and no sign of it
    std::byte small[5];
    errno = 0;
    EXPECT_EQ(::read(rig.tap.fd(), small, sizeof small), -1);
    EXPECT_EQ(errno, EINVAL);  // shorter than the vnet header: and the 142-byte frame is gone
    std::byte big[2048];
    EXPECT_EQ(::read(rig.tap.fd(), big, sizeof big), 12 + 242);  // the third frame, whole
    EXPECT_EQ(::read(rig.tap.fd(), big, sizeof big), -1);
    // No way to learn the size first: FIONREAD is not supported on the tun character device.
    int pending = 0;
    EXPECT_EQ(::ioctl(rig.tap.fd(), FIONREAD, &pending), -1);
  });
  if (skip) GTEST_SKIP() << *skip;
}

TEST(DataplaneRealTap, kernel_frame_lands_in_guest_buffer_and_too_big_one_is_dropped) {
  const auto skip = in_private_netns([](TapRig& rig) {
    test::GuestRam ram;
    test::SplitRing ring(ram, 64);
    virtio::SplitQueue q;
    ASSERT_TRUE(q.configure(ram.memory, ring.config(0)).has_value());
    const NetSession s = make_net_session(kVersion1);
    NetScratch scratch;
    NetCounters c;
    const uint64_t small_gpa = ram.alloc(12 + 100);
    const uint16_t small = ring.add({{small_gpa, 112, true}});

    // 142-byte frame into a 100-byte room: read, dropped, counted; the buffer stays.
    rig.send_to_neighbour(payload(100, 1));
    ASSERT_TRUE(wait_readable(rig.tap.fd()));
    ForwardResult r = forward_rx(q, rig.tap.fd(), -1, s, scratch, c);
    EXPECT_EQ(r.frames, 0u);
    EXPECT_EQ(c.rx_dropped_too_big, 1u);
    EXPECT_TRUE(ring.take_all_used().empty());

    // A 52-byte frame fits the same buffer.
    const Bytes data = payload(10, 2);
    rig.send_to_neighbour(data);
    ASSERT_TRUE(wait_readable(rig.tap.fd()));
    r = forward_rx(q, rig.tap.fd(), -1, s, scratch, c);
    EXPECT_EQ(r.frames, 1u);
    EXPECT_EQ(ring.take_all_used(), (std::vector<UsedElem>{{small, 12 + 52}}));
    const Bytes got = ram.read(small_gpa, 12 + 52);
    EXPECT_EQ(got[10], std::byte{1});  // num_buffers
    EXPECT_EQ(got[11], std::byte{0});
    EXPECT_EQ(std::memcmp(got.data() + 12, kPeerMac, 6), 0);  // to the neighbour
    EXPECT_EQ(be16(got, 12 + 12), 0x0800);
    EXPECT_EQ(be16(got, 12 + 36), 7777);  // UDP destination port
    EXPECT_EQ(test::slice(got, 12 + 42, 10), data);
    EXPECT_EQ(c.rx_packets, 1u);
    EXPECT_EQ(c.rx_bytes, 52u);
    EXPECT_EQ(c.tap_read_fails, 0u);
  });
  if (skip) GTEST_SKIP() << *skip;
}

TEST(DataplaneRealTap, mergeable_kernel_frame_spans_guest_buffers) {
  const auto skip = in_private_netns([](TapRig& rig) {
    test::GuestRam ram;
    test::PackedRing ring(ram, 64);
    virtio::PackedQueue q;
    ASSERT_TRUE(q.configure(ram.memory, ring.config(0)).has_value());
    NetSession s = make_net_session(kVersion1 | kFeatureMrgRxbuf);
    s.max_rx_frame = 1500 + 18;  // no GSO negotiated: the worker caps frames at MTU + 18
    NetScratch scratch;
    NetCounters c;
    std::vector<uint64_t> gpas;
    std::vector<uint16_t> ids;
    for (int i = 0; i < 20; ++i) {
      gpas.push_back(ram.alloc(256));
      ids.push_back(ring.add({{gpas.back(), 256, true}}));
    }
    const Bytes data = payload(1000, 3);
    rig.send_to_neighbour(data);  // 12 + 1042 = 1054 = 4 * 256 + 30
    ASSERT_TRUE(wait_readable(rig.tap.fd()));
    const ForwardResult r = forward_rx(q, rig.tap.fd(), -1, s, scratch, c);
    EXPECT_EQ(r.frames, 1u);
    EXPECT_EQ(ring.take_all_used(),
              (std::vector<UsedElem>{
                  {ids[0], 256}, {ids[1], 256}, {ids[2], 256}, {ids[3], 256}, {ids[4], 30}}));
    Bytes got;
    for (int i = 0; i < 4; ++i) got = test::concat(got, ram.read(gpas[i], 256));
    got = test::concat(got, ram.read(gpas[4], 30));
    EXPECT_EQ(got[10], std::byte{5});  // num_buffers
    EXPECT_EQ(test::slice(got, 12 + 42, 1000), data);
    EXPECT_EQ(c.rx_packets, 1u);
    EXPECT_EQ(c.rx_bytes, 1042u);
  });
  if (skip) GTEST_SKIP() << *skip;
}

TEST(DataplaneRealTap, guest_frames_reach_the_kernel_and_bad_csum_offsets_do_not) {
  const auto skip = in_private_netns([](TapRig& rig) {
    Fd rx(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_port = htons(8888);
    ::inet_pton(AF_INET, "10.77.0.1", &local.sin_addr);
    ASSERT_EQ(::bind(rx.get(), reinterpret_cast<sockaddr*>(&local), sizeof local), 0);

    test::GuestRam ram;
    test::SplitRing ring(ram, 64);
    virtio::SplitQueue q;
    ASSERT_TRUE(q.configure(ram.memory, ring.config(0)).has_value());
    const NetSession s = make_net_session(kVersion1 | net::feature::kCsum);
    NetScratch scratch;
    NetCounters c;
    auto offer = [&](const Bytes& hdr, const Bytes& frame) {
      const uint64_t h = ram.alloc(hdr.size());
      ram.write(h, hdr);
      const uint64_t d = ram.alloc(frame.size());
      ram.write(d, frame);
      return ring.add(
          {{h, static_cast<uint32_t>(hdr.size())}, {d, static_cast<uint32_t>(frame.size())}});
    };

    // 1: complete checksums. 2: NEEDS_CSUM over the UDP header (csum_start 34, offset 6).
    // 3: NEEDS_CSUM with the checksum field past the frame: must never reach the kernel.
    const Bytes d1 = payload(64, 1), d2 = payload(300, 2), d3 = payload(20, 3);
    const Bytes f1 = udp_frame_to_tap(rig.tap_mac, d1, 8888);
    const Bytes f2 = udp_frame_to_tap(rig.tap_mac, d2, 8888);
    const Bytes f3 = udp_frame_to_tap(rig.tap_mac, d3, 8888);
    const uint16_t id1 = offer(test::net_hdr(12), f1);
    const uint16_t id2 = offer(test::net_hdr(12, 1, 0, 0, 0, 34, 6), f2);
    const uint16_t id3 =
        offer(test::net_hdr(12, 1, 0, 0, 0, static_cast<uint16_t>(f3.size() - 1), 0), f3);

    const ForwardResult r = forward_tx(q, rig.tap.fd(), -1, s, scratch, c);
    EXPECT_EQ(r.frames, 2u);
    EXPECT_EQ(ring.take_all_used(), (std::vector<UsedElem>{{id1, 0}, {id2, 0}, {id3, 0}}));
    EXPECT_EQ(c.tx_packets, 2u);
    EXPECT_EQ(c.tx_bytes, f1.size() + f2.size());
    EXPECT_EQ(c.tx_dropped_bad_csum_offsets, 1u);
    EXPECT_EQ(c.tap_write_fails, 0u);

    Bytes buf(2048);
    ASSERT_TRUE(wait_readable(rx.get()));
    ssize_t n = ::recv(rx.get(), buf.data(), buf.size(), 0);
    ASSERT_EQ(n, static_cast<ssize_t>(d1.size()));
    EXPECT_EQ(test::slice(buf, 0, d1.size()), d1);
    ASSERT_TRUE(wait_readable(rx.get()));
    n = ::recv(rx.get(), buf.data(), buf.size(), 0);
    ASSERT_EQ(n, static_cast<ssize_t>(d2.size()));
    EXPECT_EQ(test::slice(buf, 0, d2.size()), d2);
    EXPECT_FALSE(wait_readable(rx.get(), 100));  // the third never arrived
  });
  if (skip) GTEST_SKIP() << *skip;
}

}  // namespace
}  // namespace vp::dataplane
