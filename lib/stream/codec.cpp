#include "stream/codec.hpp"

#include <cstring>

namespace vp::stream {

Decoded decode(std::span<const std::byte> in) noexcept {
  Decoded d;
  if (in.size() < kLengthSize) return d;
  d.length = uint32_t{std::to_integer<uint8_t>(in[0])} << 24 |
             uint32_t{std::to_integer<uint8_t>(in[1])} << 16 |
             uint32_t{std::to_integer<uint8_t>(in[2])} << 8 | std::to_integer<uint8_t>(in[3]);
  // GUEST: the length comes from the frontend; bounded before anything is sized by it.
  if (d.length == 0 || d.length > kMaxFrame) {
    d.status = Decode::kBadLength;
    return d;
  }
  if (in.size() - kLengthSize < d.length) return d;
  d.consumed = kLengthSize + d.length;
  d.frame = in.subspan(kLengthSize, d.length);
  d.status = d.length < kMinFrame ? Decode::kRunt : Decode::kFrame;
  return d;
}

Decoded Reassembler::next() noexcept {
  Decoded d = decode({buf_.data() + begin_, end_ - begin_});
  if (d.status == Decode::kFrame || d.status == Decode::kRunt) begin_ += d.consumed;
  if (d.status == Decode::kBadLength) begin_ = end_;  // nothing after it can be trusted
  return d;
}

void Reassembler::compact() noexcept {
  if (begin_ == 0) return;
  const size_t n = end_ - begin_;
  if (n) std::memmove(buf_.data(), buf_.data() + begin_, n);
  begin_ = 0;
  end_ = n;
}

bool complete_checksum(std::span<std::byte> frame, uint32_t start, uint32_t offset) noexcept {
  const uint64_t field = uint64_t{start} + offset;
  if (start > frame.size() || field + 2 > frame.size()) return false;
  uint64_t sum = 0;
  const std::byte* p = frame.data() + start;
  size_t n = frame.size() - start;
  for (; n >= 2; p += 2, n -= 2) {
    sum += uint32_t{std::to_integer<uint8_t>(p[0])} << 8 | std::to_integer<uint8_t>(p[1]);
  }
  if (n) sum += uint32_t{std::to_integer<uint8_t>(p[0])} << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  uint16_t csum = static_cast<uint16_t>(~sum);
  // UDP (RFC 768): a computed 0 is sent as all ones; for TCP and ICMP both mean zero.
  if (csum == 0) csum = 0xffff;
  frame[field] = static_cast<std::byte>(csum >> 8);
  frame[field + 1] = static_cast<std::byte>(csum);
  return true;
}

}  // namespace vp::stream
