// Stream forwarding (lib/stream/forward): a SOCK_STREAM socketpair stands in for the
// frontend's connection and a SOCK_DGRAM socketpair for the TAP queue (it keeps frame
// boundaries, as a TAP does). Each test asserts what reached the other side and the exact
// counters.

#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/net_header.hpp"
#include "stream/forward.hpp"

namespace vp::stream {
namespace {

using dataplane::NetCounters;

constexpr size_t kHdr = dataplane::kNetHdrSize;
constexpr std::array<uint8_t, 6> kGuestMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

struct SocketPair {
  int vpd = -1;   // the side the library uses
  int peer = -1;  // the test's side: the frontend or the kernel's end of the TAP
  SocketPair(int type) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    vpd = fds[0];
    peer = fds[1];
  }
  ~SocketPair() {
    ::close(vpd);
    ::close(peer);
  }
  void set_sndbuf(int fd, int bytes) {
    ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes), 0);
  }
};

/// An Ethernet frame of `size` bytes from `src`, numbered `seq` (byte 14) for ordering checks.
/// A runt (`size` under 14) is the first `size` bytes of such a frame.
std::vector<std::byte> ether(size_t size, uint8_t seq = 0, std::array<uint8_t, 6> src = kGuestMac) {
  std::vector<std::byte> f(std::max<size_t>(size, 15), std::byte{0x5a});
  for (size_t i = 0; i < 6; ++i) {
    f[i] = std::byte{0xff};
    f[6 + i] = std::byte{src[i]};
  }
  f[12] = std::byte{0x08};
  f[13] = std::byte{0x00};
  f[14] = std::byte{seq};
  f.resize(size);
  return f;
}

void append_framed(std::vector<std::byte>& out, std::span<const std::byte> frame,
                   uint32_t length = UINT32_MAX) {
  std::array<std::byte, kLengthSize> prefix;
  encode_length(length == UINT32_MAX ? static_cast<uint32_t>(frame.size()) : length, prefix);
  out.insert(out.end(), prefix.begin(), prefix.end());
  out.insert(out.end(), frame.begin(), frame.end());
}

void send_all(int fd, std::span<const std::byte> bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

/// Every datagram waiting on `fd`.
std::vector<std::vector<std::byte>> datagrams(int fd) {
  std::vector<std::vector<std::byte>> out;
  std::vector<std::byte> buf(kHdr + kMaxFrame);
  for (;;) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) return out;
    out.emplace_back(buf.begin(), buf.begin() + n);
  }
}

std::vector<std::byte> drain_stream(int fd) {
  std::vector<std::byte> out;
  std::byte buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;
    out.insert(out.end(), buf, buf + n);
  }
}

/// A datagram as the TAP hands it to vpd: the vnet header, then the frame.
std::vector<std::byte> tap_frame(std::span<const std::byte> frame, uint8_t flags = 0,
                                 uint8_t gso_type = 0, uint16_t csum_start = 0,
                                 uint16_t csum_offset = 0) {
  std::vector<std::byte> d(kHdr);
  d[0] = std::byte{flags};
  d[1] = std::byte{gso_type};
  d[6] = std::byte{static_cast<uint8_t>(csum_start)};
  d[7] = std::byte{static_cast<uint8_t>(csum_start >> 8)};
  d[8] = std::byte{static_cast<uint8_t>(csum_offset)};
  d[9] = std::byte{static_cast<uint8_t>(csum_offset >> 8)};
  d.insert(d.end(), frame.begin(), frame.end());
  return d;
}

class StreamForward : public ::testing::Test {
 protected:
  SocketPair conn{SOCK_STREAM};
  SocketPair tap{SOCK_DGRAM};
  std::unique_ptr<Reassembler> in = std::make_unique<Reassembler>();
  std::unique_ptr<OutBuffer> out = std::make_unique<OutBuffer>();
  StreamSession session{.hdr_len = kHdr};
  NetCounters c;

  ForwardResult pull() { return from_peer(conn.vpd, tap.vpd, *in, session, c); }
  ForwardResult push() { return to_peer(tap.vpd, conn.vpd, *out, session, c); }
};

TEST_F(StreamForward, several_frames_in_one_read_each_reach_the_tap_whole) {
  std::vector<std::byte> wire;
  const size_t sizes[] = {60, 1514, 42};
  for (uint8_t i = 0; i < 3; ++i) append_framed(wire, ether(sizes[i], i));
  send_all(conn.peer, wire);

  const ForwardResult r = pull();
  EXPECT_EQ(r.status, ForwardStatus::kDone);
  EXPECT_EQ(r.frames, 3u);
  const auto got = datagrams(tap.peer);
  ASSERT_EQ(got.size(), 3u);
  for (uint8_t i = 0; i < 3; ++i) {
    const auto want = ether(sizes[i], i);
    ASSERT_EQ(got[i].size(), kHdr + want.size());
    EXPECT_TRUE(std::all_of(got[i].begin(), got[i].begin() + kHdr,
                            [](std::byte b) { return b == std::byte{0}; }));
    EXPECT_TRUE(std::equal(want.begin(), want.end(), got[i].begin() + kHdr));
  }
  NetCounters want;
  want.tx_packets = 3;
  want.tx_bytes = 60 + 1514 + 42;
  EXPECT_EQ(c, want);
}

TEST_F(StreamForward, frame_split_across_reads_is_delivered_once_complete) {
  std::vector<std::byte> wire;
  append_framed(wire, ether(1000, 7));
  send_all(conn.peer, {wire.data(), 3});  // not even the whole prefix
  EXPECT_EQ(pull().status, ForwardStatus::kDone);
  send_all(conn.peer, {wire.data() + 3, 500});
  EXPECT_EQ(pull().frames, 0u);
  EXPECT_TRUE(datagrams(tap.peer).empty());
  send_all(conn.peer, {wire.data() + 503, wire.size() - 503});
  const ForwardResult r = pull();
  EXPECT_EQ(r.status, ForwardStatus::kDone);
  EXPECT_EQ(r.frames, 1u);
  const auto got = datagrams(tap.peer);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].size(), kHdr + 1000);
  EXPECT_EQ(got[0][kHdr + 14], std::byte{7});
  NetCounters want;
  want.tx_packets = 1;
  want.tx_bytes = 1000;
  EXPECT_EQ(c, want);
}

TEST_F(StreamForward, zero_length_closes_the_stream) {
  std::vector<std::byte> wire;
  append_framed(wire, ether(60, 1));
  append_framed(wire, {}, 0);
  send_all(conn.peer, wire);
  const ForwardResult r = pull();
  EXPECT_EQ(r.status, ForwardStatus::kBadLength);
  EXPECT_EQ(r.length, 0u);
  EXPECT_EQ(datagrams(tap.peer).size(), 1u);  // what came before it was delivered
  NetCounters want;
  want.tx_packets = 1;
  want.tx_bytes = 60;
  want.stream_bad_length = 1;
  EXPECT_EQ(c, want);
}

TEST_F(StreamForward, oversized_length_closes_the_stream_and_counts_too_long) {
  std::vector<std::byte> wire;
  append_framed(wire, ether(60), kMaxFrame + 1);
  send_all(conn.peer, wire);
  const ForwardResult r = pull();
  EXPECT_EQ(r.status, ForwardStatus::kBadLength);
  EXPECT_EQ(r.length, kMaxFrame + 1);
  EXPECT_TRUE(datagrams(tap.peer).empty());
  NetCounters want;
  want.stream_bad_length = 1;
  want.tx_dropped_too_long = 1;
  EXPECT_EQ(c, want);
}

TEST_F(StreamForward, runt_is_dropped_and_counted_and_the_stream_stays_in_step) {
  std::vector<std::byte> wire;
  append_framed(wire, ether(10));
  append_framed(wire, ether(60, 2));
  send_all(conn.peer, wire);
  const ForwardResult r = pull();
  EXPECT_EQ(r.status, ForwardStatus::kDone);
  EXPECT_EQ(r.frames, 1u);
  const auto got = datagrams(tap.peer);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0][kHdr + 14], std::byte{2});
  NetCounters want;
  want.tx_packets = 1;
  want.tx_bytes = 60;
  want.tx_dropped_too_short = 1;
  EXPECT_EQ(c, want);
}

TEST_F(StreamForward, lock_mac_drops_a_spoofed_source_and_passes_the_guests_mac) {
  session.lock_mac = true;
  session.guest_mac = kGuestMac;
  std::vector<std::byte> wire;
  append_framed(wire, ether(60, 1, {0x52, 0x54, 0x00, 0x66, 0x66, 0x66}));
  append_framed(wire, ether(60, 2));
  send_all(conn.peer, wire);
  EXPECT_EQ(pull().frames, 1u);
  const auto got = datagrams(tap.peer);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0][kHdr + 14], std::byte{2});
  NetCounters want;
  want.tx_packets = 1;
  want.tx_bytes = 60;
  want.tx_dropped_spoofed_mac = 1;
  EXPECT_EQ(c, want);
}

TEST_F(StreamForward, eof_in_the_middle_of_a_frame_closes_and_counts_truncated) {
  std::vector<std::byte> wire;
  append_framed(wire, ether(200));
  send_all(conn.peer, {wire.data(), 100});
  ::shutdown(conn.peer, SHUT_WR);
  const ForwardResult r = pull();
  EXPECT_EQ(r.status, ForwardStatus::kClosed);
  EXPECT_EQ(r.error, 0);
  NetCounters want;
  want.stream_truncated = 1;
  EXPECT_EQ(c, want);
}

// The TAP says EAGAIN: the frame is rewound, vpd reads no more from the frontend (the rest
// stays in its socket), and every frame arrives, in order, once the TAP drains.
TEST_F(StreamForward, tap_full_rewinds_the_frame_and_stops_reading_the_frontend) {
  tap.set_sndbuf(tap.vpd, 4096);
  constexpr int kFrames = 100;
  std::vector<std::byte> wire;
  for (int i = 0; i < kFrames; ++i) append_framed(wire, ether(1000, static_cast<uint8_t>(i)));
  send_all(conn.peer, wire);

  ForwardResult r = pull();
  ASSERT_EQ(r.status, ForwardStatus::kTapFull);
  EXPECT_GT(in->pending(), 0u);  // the frame that did not fit is still buffered
  int unread = 0;
  ASSERT_EQ(::ioctl(conn.vpd, FIONREAD, &unread), 0);
  EXPECT_GT(unread, 0);  // the frontend's bytes wait in its socket, not in vpd
  uint64_t tap_full = 1;

  std::vector<std::vector<std::byte>> got = datagrams(tap.peer);
  for (int i = 0; i < 1000 && got.size() < kFrames; ++i) {
    r = pull();
    if (r.status == ForwardStatus::kTapFull) ++tap_full;
    for (auto& d : datagrams(tap.peer)) got.push_back(std::move(d));
  }
  ASSERT_EQ(got.size(), static_cast<size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_EQ(got[i].size(), kHdr + 1000);
    EXPECT_EQ(got[i][kHdr + 14], std::byte{static_cast<uint8_t>(i)}) << i;
  }
  EXPECT_EQ(in->pending(), 0u);
  NetCounters want;
  want.tx_packets = kFrames;
  want.tx_bytes = kFrames * 1000;
  want.tx_tap_full = tap_full;
  EXPECT_EQ(c, want);
}

// The frontend does not read: the frame stays half sent, the TAP is not read meanwhile, and
// once the frontend drains its socket the rest follows byte for byte.
TEST_F(StreamForward, frontend_full_keeps_the_partly_sent_frame_and_resumes) {
  conn.set_sndbuf(conn.vpd, 4096);
  constexpr int kFrames = 8;
  for (int i = 0; i < kFrames; ++i) {
    const auto d = tap_frame(ether(1500, static_cast<uint8_t>(i)));
    ASSERT_EQ(::send(tap.peer, d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));
  }
  ForwardResult r = push();
  ASSERT_EQ(r.status, ForwardStatus::kPeerFull);
  EXPECT_TRUE(out->blocked);
  EXPECT_GT(out->len, 0u);
  EXPECT_LT(out->sent, out->len);
  EXPECT_LT(r.frames, static_cast<uint32_t>(kFrames));  // frames wait in the TAP
  EXPECT_EQ(push().status, ForwardStatus::kPeerFull);   // blocked: the TAP is not read
  uint64_t peer_full = 1;

  constexpr size_t kTotal = kFrames * (kLengthSize + 1500);
  std::vector<std::byte> wire = drain_stream(conn.peer);
  for (int i = 0; i < 1000 && wire.size() < kTotal; ++i) {
    if (flush_out(conn.vpd, *out, c).status == ForwardStatus::kDone &&
        push().status == ForwardStatus::kPeerFull) {
      ++peer_full;  // blocked again on a later frame
    }
    const auto more = drain_stream(conn.peer);
    wire.insert(wire.end(), more.begin(), more.end());
  }
  ASSERT_EQ(wire.size(), kTotal);
  for (int i = 0; i < kFrames; ++i) {
    const Decoded d = decode({wire.data() + i * (kLengthSize + 1500), kLengthSize + 1500});
    ASSERT_EQ(d.status, Decode::kFrame);
    ASSERT_EQ(d.frame.size(), 1500u);
    EXPECT_EQ(d.frame[14], std::byte{static_cast<uint8_t>(i)});
  }
  NetCounters want;
  want.rx_packets = kFrames;
  want.rx_bytes = kFrames * 1500;
  want.stream_peer_full = peer_full;
  EXPECT_EQ(c, want);
}

// A UDP/IPv4 frame as the kernel hands a CHECKSUM_PARTIAL one: the field holds the
// pseudo-header sum; the frontend must get the completed checksum.
TEST_F(StreamForward, tap_frame_with_needs_csum_reaches_the_frontend_completed) {
  std::vector<std::byte> frame(14 + 20 + 8 + 5);
  auto set = [&](size_t at, std::initializer_list<int> v) {
    for (int b : v) frame[at++] = static_cast<std::byte>(b);
  };
  set(12, {0x08, 0x00});
  set(14, {0x45, 0, 0, 33, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2});
  set(34, {0x30, 0x39, 0x00, 0x35, 0, 13, 0, 0});
  set(42, {'h', 'e', 'l', 'l', 'o'});
  const uint32_t pseudo = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 13;
  set(40, {static_cast<int>(pseudo >> 8), static_cast<int>(pseudo & 0xff)});
  const auto d = tap_frame(frame, dataplane::kHdrFNeedsCsum, 0, 34, 6);
  ASSERT_EQ(::send(tap.peer, d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));

  const ForwardResult r = push();
  EXPECT_EQ(r.status, ForwardStatus::kDone);
  EXPECT_EQ(r.frames, 1u);
  const auto wire = drain_stream(conn.peer);
  const Decoded got = decode(wire);
  ASSERT_EQ(got.status, Decode::kFrame);
  ASSERT_EQ(got.frame.size(), frame.size());
  uint32_t sum = pseudo;
  for (size_t i = 34; i + 1 < got.frame.size(); i += 2) {
    sum +=
        std::to_integer<uint32_t>(got.frame[i]) << 8 | std::to_integer<uint32_t>(got.frame[i + 1]);
  }
  sum += std::to_integer<uint32_t>(got.frame.back()) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  EXPECT_EQ(sum, 0xffffu);
  NetCounters want;
  want.rx_packets = 1;
  want.rx_bytes = frame.size();
  EXPECT_EQ(c, want);
}

TEST_F(StreamForward, gso_frame_and_tap_runt_are_dropped_and_counted) {
  const auto gso = tap_frame(ether(3000), dataplane::kHdrFNeedsCsum, dataplane::kGsoTcpv4, 34, 16);
  ASSERT_EQ(::send(tap.peer, gso.data(), gso.size(), 0), static_cast<ssize_t>(gso.size()));
  const auto runt = tap_frame(ether(13));
  ASSERT_EQ(::send(tap.peer, runt.data(), runt.size(), 0), static_cast<ssize_t>(runt.size()));
  const auto ok = tap_frame(ether(60, 9));
  ASSERT_EQ(::send(tap.peer, ok.data(), ok.size(), 0), static_cast<ssize_t>(ok.size()));

  const ForwardResult r = push();
  EXPECT_EQ(r.status, ForwardStatus::kDone);
  EXPECT_EQ(r.frames, 1u);
  const auto wire = drain_stream(conn.peer);
  const Decoded got = decode(wire);
  ASSERT_EQ(got.status, Decode::kFrame);
  EXPECT_EQ(got.consumed, wire.size());
  EXPECT_EQ(got.frame[14], std::byte{9});
  NetCounters want;
  want.rx_packets = 1;
  want.rx_bytes = 60;
  want.rx_dropped_offload = 1;
  want.rx_dropped_runt = 1;
  EXPECT_EQ(c, want);
}

}  // namespace
}  // namespace vp::stream
