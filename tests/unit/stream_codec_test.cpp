// The QEMU stream framing codec (lib/stream): whole frames, frames split at every byte,
// and the hostile streams a frontend can send (zero or oversized lengths, runts, half a
// frame then nothing), all within one fixed buffer.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "stream/codec.hpp"

namespace vp::stream {
namespace {

std::vector<std::byte> framed(uint32_t length, uint8_t fill = 0xab, size_t body = SIZE_MAX) {
  std::vector<std::byte> out(kLengthSize);
  encode_length(length, std::span<std::byte, kLengthSize>(out.data(), kLengthSize));
  out.resize(kLengthSize + std::min<size_t>(length, body), std::byte{fill});
  return out;
}

void feed(Reassembler& r, std::span<const std::byte> bytes) {
  auto room = r.space();
  ASSERT_GE(room.size(), bytes.size());
  std::memcpy(room.data(), bytes.data(), bytes.size());
  r.commit(bytes.size());
}

TEST(StreamCodec, length_prefix_is_big_endian) {
  std::array<std::byte, 4> b{};
  encode_length(0x0102a0ff, b);
  EXPECT_EQ(b[0], std::byte{0x01});
  EXPECT_EQ(b[1], std::byte{0x02});
  EXPECT_EQ(b[2], std::byte{0xa0});
  EXPECT_EQ(b[3], std::byte{0xff});
  const auto f = framed(42);  // an ARP, unpadded as QEMU sends it
  EXPECT_EQ(f[3], std::byte{42});
  const Decoded d = decode(f);
  EXPECT_EQ(d.status, Decode::kFrame);
  EXPECT_EQ(d.length, 42u);
  EXPECT_EQ(d.consumed, 46u);
  EXPECT_EQ(d.frame.size(), 42u);
  EXPECT_EQ(d.frame.data(), f.data() + 4);
}

TEST(StreamCodec, fewer_than_four_bytes_need_more) {
  const auto f = framed(60);
  for (size_t n = 0; n < 4; ++n) EXPECT_EQ(decode({f.data(), n}).status, Decode::kNeedMore);
}

TEST(StreamCodec, half_a_frame_needs_more_and_reads_nothing_past_the_input) {
  const auto f = framed(1514);
  for (size_t n = 4; n < f.size(); n += 97) {
    const Decoded d = decode({f.data(), n});
    EXPECT_EQ(d.status, Decode::kNeedMore) << n;
    EXPECT_EQ(d.length, 1514u);
    EXPECT_TRUE(d.frame.empty());
  }
}

TEST(StreamCodec, zero_length_breaks_the_stream) {
  EXPECT_EQ(decode(framed(0)).status, Decode::kBadLength);
}

TEST(StreamCodec, length_over_qemu_bufsize_breaks_the_stream_before_the_body_arrives) {
  EXPECT_EQ(decode(framed(kMaxFrame, 0, 0)).status, Decode::kNeedMore);
  EXPECT_EQ(decode(framed(kMaxFrame + 1, 0, 0)).status, Decode::kBadLength);
  EXPECT_EQ(decode(framed(0xffffffff, 0, 0)).status, Decode::kBadLength);
  EXPECT_EQ(decode(framed(kMaxFrame, 0)).status, Decode::kFrame);
}

TEST(StreamCodec, shorter_than_ethernet_header_is_a_runt_that_keeps_the_stream_in_step) {
  auto bytes = framed(13);
  const auto next = framed(60, 0x11);
  bytes.insert(bytes.end(), next.begin(), next.end());
  Reassembler r;
  feed(r, bytes);
  Decoded d = r.next();
  EXPECT_EQ(d.status, Decode::kRunt);
  EXPECT_EQ(d.consumed, 17u);
  d = r.next();
  ASSERT_EQ(d.status, Decode::kFrame);
  EXPECT_EQ(d.length, 60u);
  EXPECT_EQ(d.frame[59], std::byte{0x11});
  EXPECT_EQ(r.next().status, Decode::kNeedMore);
  EXPECT_EQ(r.pending(), 0u);
}

TEST(StreamReassembler, frames_split_at_every_byte_come_out_whole_and_in_order) {
  std::vector<std::byte> bytes;
  for (uint32_t len : {60u, 42u, 1514u, 14u, 9000u}) {
    const auto f = framed(len, static_cast<uint8_t>(len));
    bytes.insert(bytes.end(), f.begin(), f.end());
  }
  auto r = std::make_unique<Reassembler>();
  std::vector<uint32_t> seen;
  for (size_t i = 0; i < bytes.size(); ++i) {
    feed(*r, {bytes.data() + i, 1});
    for (Decoded d = r->next(); d.status != Decode::kNeedMore; d = r->next()) {
      ASSERT_EQ(d.status, Decode::kFrame);
      EXPECT_EQ(d.frame.front(), static_cast<std::byte>(static_cast<uint8_t>(d.length)));
      EXPECT_EQ(d.frame.back(), static_cast<std::byte>(static_cast<uint8_t>(d.length)));
      seen.push_back(d.length);
    }
    r->compact();
  }
  EXPECT_EQ(seen, (std::vector<uint32_t>{60, 42, 1514, 14, 9000}));
  EXPECT_EQ(r->pending(), 0u);
}

TEST(StreamReassembler, the_largest_frame_fits_after_compact) {
  auto r = std::make_unique<Reassembler>();
  const auto small = framed(60);
  feed(*r, small);
  const auto big = framed(kMaxFrame, 0x5a);
  feed(*r, {big.data(), 1000});  // begins after the small frame
  EXPECT_EQ(r->next().status, Decode::kFrame);
  EXPECT_EQ(r->next().status, Decode::kNeedMore);
  r->compact();
  EXPECT_EQ(r->space().size(), Reassembler::kCapacity - 1000);
  feed(*r, {big.data() + 1000, big.size() - 1000});
  const Decoded d = r->next();
  ASSERT_EQ(d.status, Decode::kFrame);
  EXPECT_EQ(d.length, kMaxFrame);
  EXPECT_TRUE(r->space().empty() || r->pending() == 0);
}

TEST(StreamReassembler, half_a_frame_then_eof_is_left_pending) {
  auto r = std::make_unique<Reassembler>();
  const auto f = framed(1514);
  feed(*r, {f.data(), 700});
  EXPECT_EQ(r->next().status, Decode::kNeedMore);
  EXPECT_EQ(r->pending(), 700u);  // the caller counts it as truncated when the peer closes
}

TEST(StreamReassembler, bad_length_discards_everything_after_it) {
  auto r = std::make_unique<Reassembler>();
  auto bytes = framed(60);
  const auto bad = framed(0);
  bytes.insert(bytes.end(), bad.begin(), bad.end());
  const auto after = framed(60);
  bytes.insert(bytes.end(), after.begin(), after.end());
  feed(*r, bytes);
  EXPECT_EQ(r->next().status, Decode::kFrame);
  EXPECT_EQ(r->next().status, Decode::kBadLength);
  EXPECT_EQ(r->pending(), 0u);
}

TEST(StreamReassembler, unget_gives_an_undelivered_frame_back) {
  auto r = std::make_unique<Reassembler>();
  feed(*r, framed(60, 0x22));
  Decoded d = r->next();
  ASSERT_EQ(d.status, Decode::kFrame);
  r->unget(d);
  EXPECT_EQ(r->pending(), 64u);
  d = r->next();
  ASSERT_EQ(d.status, Decode::kFrame);
  EXPECT_EQ(d.frame[0], std::byte{0x22});
}

// A UDP/IPv4 frame as the kernel hands a CHECKSUM_PARTIAL one: the field holds the
// pseudo-header sum; completing it must give what a full software checksum gives.
TEST(StreamChecksum, completes_a_partial_udp_checksum) {
  std::vector<std::byte> frame(14 + 20 + 8 + 5);
  auto set = [&](size_t at, std::initializer_list<int> v) {
    for (int b : v) frame[at++] = static_cast<std::byte>(b);
  };
  set(12, {0x08, 0x00});
  set(14, {0x45, 0, 0, 33, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2});
  set(34, {0x30, 0x39, 0x00, 0x35, 0, 13, 0, 0});
  set(42, {'h', 'e', 'l', 'l', 'o'});
  // Pseudo header: src + dst + proto + UDP length.
  uint32_t pseudo = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 13;
  while (pseudo >> 16) pseudo = (pseudo & 0xffff) + (pseudo >> 16);
  set(40, {static_cast<int>(pseudo >> 8), static_cast<int>(pseudo & 0xff)});
  ASSERT_TRUE(complete_checksum(frame, 34, 6));
  // Verify: the sum over pseudo header + UDP header + data (with checksum) folds to 0xffff.
  uint32_t sum = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 13;
  for (size_t i = 34; i + 1 < frame.size(); i += 2) {
    sum += std::to_integer<uint32_t>(frame[i]) << 8 | std::to_integer<uint32_t>(frame[i + 1]);
  }
  sum += std::to_integer<uint32_t>(frame.back()) << 8;  // odd length: pad with zero
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  EXPECT_EQ(sum, 0xffffu);
}

TEST(StreamChecksum, refuses_a_field_outside_the_frame) {
  std::vector<std::byte> frame(60);
  EXPECT_FALSE(complete_checksum(frame, 59, 0));
  EXPECT_FALSE(complete_checksum(frame, 61, 0));
  EXPECT_FALSE(complete_checksum(frame, 40, 0xffff));
  EXPECT_FALSE(complete_checksum(frame, 0xffffffff, 0xffffffff));
  EXPECT_TRUE(complete_checksum(frame, 58, 0));
}

}  // namespace
}  // namespace vp::stream
