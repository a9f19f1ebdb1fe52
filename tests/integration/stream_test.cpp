// transport=stream endpoints against a real vpd: a test peer speaking QEMU's stream framing
// (4-byte big-endian length + raw Ethernet frame) exchanges frames with the kernel through
// the endpoint's TAP, in bind and peer mode, and hostile peers (bad lengths, half frames, a
// peer that never reads) cost only their own connection, inside a private network namespace.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "integration/vpd_fixture.hpp"
#include "sys/unix_socket.hpp"

namespace vp::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::array<uint8_t, 6> kGuestMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

/// An ARP request from the guest (10.`net`.0.2) asking who has 10.`net`.0.1, unpadded (42
/// bytes, as QEMU sends it).
std::vector<uint8_t> arp_request(uint8_t net) {
  std::vector<uint8_t> f{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
  f.insert(f.end(), {0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01});
  f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
  f.insert(f.end(), {10, net, 0, 2, 0, 0, 0, 0, 0, 0, 10, net, 0, 1});
  return f;
}

std::vector<uint8_t> framed(const std::vector<uint8_t>& frame) {
  const auto n = static_cast<uint32_t>(frame.size());
  std::vector<uint8_t> out(4 + frame.size());
  out[0] = static_cast<uint8_t>(n >> 24);
  out[1] = static_cast<uint8_t>(n >> 16);
  out[2] = static_cast<uint8_t>(n >> 8);
  out[3] = static_cast<uint8_t>(n);
  if (n) std::memcpy(out.data() + 4, frame.data(), n);
  return out;
}

bool send_all(int fd, const std::vector<uint8_t>& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

/// Reads exactly `n` bytes; false on EOF, error or timeout.
bool read_exact(int fd, uint8_t* out, size_t n, steady_clock::time_point deadline) {
  size_t got = 0;
  while (got < n) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    const ssize_t r = ::recv(fd, out + got, n - got, 0);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

/// The next framed frame from the peer socket (nullopt on EOF/timeout); the length prefix
/// must be sane.
std::optional<std::vector<uint8_t>> read_frame(int fd, milliseconds timeout = milliseconds(5000)) {
  const auto deadline = steady_clock::now() + timeout;
  uint8_t len[4];
  if (!read_exact(fd, len, 4, deadline)) return std::nullopt;
  const uint32_t n =
      uint32_t{len[0]} << 24 | uint32_t{len[1]} << 16 | uint32_t{len[2]} << 8 | len[3];
  EXPECT_GE(n, 14u);
  EXPECT_LE(n, 65536u + 4096u);
  if (n < 14 || n > 65536 + 4096) return std::nullopt;
  std::vector<uint8_t> f(n);
  if (!read_exact(fd, f.data(), n, deadline)) return std::nullopt;
  return f;
}

bool is_arp_reply_from(const std::vector<uint8_t>& f, uint8_t net) {
  return f.size() >= 42 && std::memcmp(f.data(), kGuestMac.data(), 6) == 0 && f[12] == 0x08 &&
         f[13] == 0x06 && f[21] == 2 && f[28] == 10 && f[29] == net && f[31] == 1;
}

/// True when the peer at `fd` gets the kernel's ARP reply to a request sent through it.
bool arp_round_trip(int fd, uint8_t net) {
  if (!send_all(fd, framed(arp_request(net)))) return false;
  const auto deadline = steady_clock::now() + std::chrono::seconds(5);
  while (steady_clock::now() < deadline) {
    auto f = read_frame(fd, milliseconds(1000));
    if (!f) continue;
    if (is_arp_reply_from(*f, net)) return true;
  }
  return false;
}

/// True once the peer's end sees EOF (vpd closed the connection).
bool closed_by_vpd(int fd, milliseconds timeout = milliseconds(5000)) {
  const auto deadline = steady_clock::now() + timeout;
  uint8_t buf[4096];
  while (steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
  }
  return false;
}

class Stream : public VpdFixture {
 protected:
  void SetUp() override {
    VpdFixture::SetUp();
    ASSERT_EQ(vpd().start(), "");
  }

  /// Creates `name` as a stream endpoint with 10.`net`.0.1/24, up.
  void create(const std::string& name, uint8_t net, const std::string& socket_option) {
    std::vector<std::string> args{name, "create", "transport=stream",
                                  "address=10." + std::to_string(net) + ".0.1/24", "up"};
    if (!socket_option.empty()) args.push_back(socket_option);
    ok(args);
  }

  Fd connect_bind(const std::string& name) {
    auto fd = connect_unix(vpd().runtime_dir() + "/" + name + ".sock");
    EXPECT_TRUE(fd) << fd.error().message;
    return fd ? std::move(*fd) : Fd();
  }

  /// The kernel activates the TAP's qdisc some time after carrier comes on.
  bool wait_operstate(const std::string& name, const std::string& state) {
    for (int i = 0; i < 500; ++i) {
      if (link_json(name).value("operstate", "") == state) return true;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return false;
  }

  /// Waits until `counter` of `name` reaches at least `n`; returns the last value seen.
  uint64_t wait_counter(const std::string& name, const std::string& counter, uint64_t n) {
    uint64_t v = 0;
    for (int i = 0; i < 250; ++i) {
      v = show(name)["status"]["counters"].value(counter, uint64_t{0});
      if (v >= n) break;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return v;
  }

  /// The guest state in the words `vpctl vp0` uses: "listening on PATH", "connected", ...
  std::string guest(const std::string& name) {
    const json status = show(name)["status"];
    const std::string state = status.value("guest", std::string("?"));
    if (state != "listening" && state != "dialing") return state;
    return state + " on " + status.value("socket", std::string("?"));
  }
};

TEST_F(Stream, bind_peer_exchanges_frames_with_the_tap_both_ways) {
  create("vp0", 97, "");  // default bind=RUNTIME/vp0.sock
  const json shown = show("vp0");
  EXPECT_EQ(shown["transport"], "stream");
  EXPECT_EQ(shown["status"]["tun_offloads"], "none");
  EXPECT_FALSE(has_flag(link_json("vp0"), "LOWER_UP")) << "no carrier before a peer connects";
  EXPECT_TRUE(contains(guest("vp0"), "listening on ")) << guest("vp0");

  Fd peer = connect_bind("vp0");
  ASSERT_TRUE(peer);
  ASSERT_TRUE(wait_operstate("vp0", "UP")) << link_json("vp0").dump();
  EXPECT_EQ(guest("vp0"), "connected");
  // Peer → TAP: the kernel answers the ARP request; TAP → peer: its reply comes back framed.
  ASSERT_TRUE(arp_round_trip(peer.get(), 97)) << vpd().log();
  // Kernel-originated traffic too: a ping to the guest's address makes the kernel ask for it.
  // (The ARP request above left a neighbour entry for 10.97.0.2, which the kernel would use
  // without asking and only re-probe seconds later: forget it first.)
  ASSERT_TRUE(sh("ip neigh flush dev vp0"));
  ASSERT_TRUE(sh("ping -c1 -W1 10.97.0.2 >/dev/null 2>&1 || true"));
  bool asked = false;
  for (int i = 0; i < 10 && !asked; ++i) {
    auto f = read_frame(peer.get(), milliseconds(1000));
    asked = f && f->size() >= 42 && (*f)[12] == 0x08 && (*f)[13] == 0x06 && (*f)[21] == 1 &&
            (*f)[38] == 10 && (*f)[41] == 2;
  }
  EXPECT_TRUE(asked) << "the kernel's ARP request for 10.97.0.2 reached the peer";

  const json c = show("vp0")["status"]["counters"];
  EXPECT_GE(c.value("tx_packets", 0), 1);
  EXPECT_GE(c.value("tx_bytes", 0), 42);
  EXPECT_GE(c.value("rx_packets", 0), 2);
  EXPECT_EQ(c.value("stream_bad_length", 1), 0);
  const Output stats = ok({"vp0", "stats"});
  EXPECT_TRUE(contains(stats.out, "stream_peer_full")) << stats.out;
  // A stream has no rings: the vhost-user data path's counters are left out.
  for (const char* vhost_only :
       {"kicks", "interrupts", "dirty_pages_logged", "no_rx_avail_buffer", "tx_throttled"}) {
    EXPECT_FALSE(c.contains(vhost_only)) << vhost_only << ": " << c.dump();
  }
  EXPECT_TRUE(c.contains("tx_dropped_spoofed_mac")) << c.dump();

  // One frontend at a time: a second one is turned away, the first keeps working.
  Fd second = connect_bind("vp0");
  ASSERT_TRUE(second);
  EXPECT_TRUE(closed_by_vpd(second.get()));
  EXPECT_TRUE(arp_round_trip(peer.get(), 97));

  // Disconnect: carrier off, listening again, and a new peer is served.
  peer.reset();
  ASSERT_TRUE(wait_operstate("vp0", "DOWN")) << link_json("vp0").dump();
  EXPECT_TRUE(contains(guest("vp0"), "listening on ")) << guest("vp0");
  Fd again = connect_bind("vp0");
  ASSERT_TRUE(again);
  ASSERT_TRUE(wait_operstate("vp0", "UP"));
  EXPECT_TRUE(arp_round_trip(again.get(), 97)) << vpd().log();
  EXPECT_EQ(show("vp0")["status"]["session"].value("sessions", 0), 2);
}

TEST_F(Stream, peer_mode_dials_a_server_that_appears_later_and_redials_after_disconnect) {
  const std::string sock = path("qemu-stream.sock");
  create("vp0", 96, "peer=" + sock);
  EXPECT_TRUE(contains(guest("vp0"), "dialing on ")) << guest("vp0");
  std::this_thread::sleep_for(milliseconds(300));  // vpd tries and backs off meanwhile

  auto server = listen_unix(sock, 0600);
  ASSERT_TRUE(server) << server.error().message;
  auto accept_one = [&](std::chrono::seconds timeout) {
    pollfd p{server->get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count() * 1000)) <= 0) return Fd();
    return Fd(::accept4(server->get(), nullptr, nullptr, SOCK_CLOEXEC));
  };
  Fd conn = accept_one(std::chrono::seconds(10));
  ASSERT_TRUE(conn) << "vpd dialled the server once it listened\n" << vpd().log();
  ASSERT_TRUE(wait_operstate("vp0", "UP"));
  ASSERT_TRUE(arp_round_trip(conn.get(), 96)) << vpd().log();

  // The VM went away and came back: vpd dials again.
  conn.reset();
  Fd again = accept_one(std::chrono::seconds(10));
  ASSERT_TRUE(again) << vpd().log();
  EXPECT_TRUE(arp_round_trip(again.get(), 96)) << vpd().log();
  EXPECT_GE(show("vp0")["status"]["session"].value("sessions", 0), 2);
}

TEST_F(Stream, peerfeats_on_a_stream_endpoint_is_refused_with_the_reason) {
  const Output r = refused({"vp0", "create", "transport=stream", "peerfeats=0x1"}, "bad-peerfeats");
  EXPECT_TRUE(contains(r.err, "virtio-net header")) << r.err;
}

TEST_F(Stream, hostile_lengths_and_half_frames_close_only_their_own_connection) {
  create("vp0", 97, "");
  create("vp1", 95, "");
  Fd good = connect_bind("vp0");
  ASSERT_TRUE(good);
  ASSERT_TRUE(wait_operstate("vp0", "UP"));

  struct Case {
    std::vector<uint8_t> bytes;
    const char* counter;
  };
  std::vector<uint8_t> oversized{0x00, 0x01, 0x10, 0x01};  // 65536+4096+1
  std::vector<uint8_t> huge{0xff, 0xff, 0xff, 0xff};
  std::vector<uint8_t> half = framed(arp_request(95));
  half.resize(4 + 20);
  const Case cases[] = {{{0, 0, 0, 0}, "stream_bad_length"},
                        {oversized, "stream_bad_length"},
                        {huge, "stream_bad_length"},
                        {half, "stream_truncated"}};
  uint64_t bad = 0;
  for (const Case& c : cases) {
    Fd hostile = connect_bind("vp1");
    ASSERT_TRUE(hostile);
    ASSERT_TRUE(send_all(hostile.get(), c.bytes));
    if (std::string(c.counter) == "stream_truncated") {
      ::shutdown(hostile.get(), SHUT_WR);  // half a frame, then EOF
      EXPECT_EQ(wait_counter("vp1", c.counter, 1), 1u) << vpd().log();
    } else {
      EXPECT_TRUE(closed_by_vpd(hostile.get())) << "vpd closes a stream it cannot trust";
      EXPECT_EQ(wait_counter("vp1", c.counter, ++bad), bad);
    }
    // The other endpoint, on the same worker, never noticed.
    EXPECT_TRUE(arp_round_trip(good.get(), 97)) << vpd().log();
  }
  // A runt is dropped and counted; the stream stays in step.
  Fd runt = connect_bind("vp1");
  ASSERT_TRUE(runt);
  ASSERT_TRUE(wait_operstate("vp1", "UP"));
  std::vector<uint8_t> bytes = framed(std::vector<uint8_t>(13, 0xee));
  ASSERT_TRUE(send_all(runt.get(), bytes));
  EXPECT_TRUE(arp_round_trip(runt.get(), 95)) << vpd().log();
  EXPECT_EQ(wait_counter("vp1", "tx_dropped_too_short", 1), 1u);
  EXPECT_EQ(show("vp1")["status"]["counters"].value("stream_bad_length", 0), 3);
}

TEST_F(Stream, a_peer_that_never_reads_is_backpressured_without_stalling_others) {
  create("vp0", 97, "");
  create("vp1", 95, "");
  Fd good = connect_bind("vp0");
  Fd sleeper = connect_bind("vp1");
  ASSERT_TRUE(good && sleeper);
  ASSERT_TRUE(wait_operstate("vp1", "UP"));
  int small = 4096;
  ASSERT_EQ(::setsockopt(sleeper.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);

  // Far more than any socket buffer: 4000 datagrams of 1400 bytes towards the sleeper.
  ASSERT_TRUE(sh("ip neigh replace 10.95.0.2 lladdr 52:54:00:12:34:56 dev vp1 nud permanent"));
  Fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  ::inet_pton(AF_INET, "10.95.0.2", &to.sin_addr);
  std::vector<uint8_t> payload(1400, 0x5a);
  int sent = 0;
  for (int i = 0; i < 4000; ++i) {
    if (::sendto(udp.get(), payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to),
                 sizeof to) > 0) {
      ++sent;
    }
    if (i % 200 == 0) std::this_thread::sleep_for(milliseconds(2));
  }
  ASSERT_GT(sent, 100);
  EXPECT_GE(wait_counter("vp1", "stream_peer_full", 1), 1u) << vpd().log();
  // vpd is not stuck on the sleeper: another endpoint exchanges frames, and vpctl answers.
  EXPECT_TRUE(arp_round_trip(good.get(), 97)) << vpd().log();
  EXPECT_TRUE(vpd().alive());

  // When the sleeper wakes up, every frame it gets is whole (framing intact after the
  // partial writes), and what it got is what vpd counted as delivered.
  uint64_t udp_frames = 0;
  while (auto f = read_frame(sleeper.get(), milliseconds(1500))) {
    if (f->size() == 14 + 20 + 8 + 1400 && (*f)[23] == 17) ++udp_frames;
  }
  EXPECT_GT(udp_frames, 10u);
  EXPECT_LE(udp_frames, static_cast<uint64_t>(sent));
  const json c = show("vp1")["status"]["counters"];
  EXPECT_GE(c.value("rx_packets", uint64_t{0}), udp_frames);
  EXPECT_TRUE(arp_round_trip(sleeper.get(), 95)) << "the sleeper's session still works";
}

}  // namespace
}  // namespace vp::test
