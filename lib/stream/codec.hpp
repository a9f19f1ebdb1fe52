#pragma once

// QEMU's stream framing (`-netdev stream`, `-netdev socket`): every frame is a 4-byte
// big-endian length, then that many bytes of raw Ethernet frame; no virtio header. Pure
// functions and one fixed-size reassembly buffer, no I/O: tests/unit/stream_codec_test.cpp
// feeds them hostile streams.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace vp::stream {

inline constexpr size_t kLengthSize = 4;
/// QEMU's NET_BUFSIZE (4096 + 65536): the largest frame either side may send. QEMU itself
/// closes a connection that announces more; so does vpd.
inline constexpr uint32_t kMaxFrame = 4096 + 65536;
/// An Ethernet header: anything shorter is no frame (dropped, the stream stays in step).
inline constexpr uint32_t kMinFrame = 14;

/// Writes `length` as the 4-byte big-endian prefix.
constexpr void encode_length(uint32_t length, std::span<std::byte, kLengthSize> out) noexcept {
  out[0] = static_cast<std::byte>(length >> 24);
  out[1] = static_cast<std::byte>(length >> 16);
  out[2] = static_cast<std::byte>(length >> 8);
  out[3] = static_cast<std::byte>(length);
}

enum class Decode : uint8_t {
  kFrame,      ///< `frame` is one whole frame; `consumed` bytes (prefix + frame) are used
  kRunt,       ///< a whole frame shorter than kMinFrame: skip `consumed` bytes, count it
  kNeedMore,   ///< the next frame is not complete yet
  kBadLength,  ///< the prefix says 0 or more than kMaxFrame: the stream is broken, close it
};

struct Decoded {
  Decode status = Decode::kNeedMore;
  uint32_t length = 0;  ///< the prefix's value once the 4 bytes are there
  size_t consumed = 0;
  std::span<const std::byte> frame;
};

/// Decodes the first frame of `in`. Never reads past `in`; never trusts the prefix beyond
/// the bounds above.
Decoded decode(std::span<const std::byte> in) noexcept;

/// Reassembles frames from a byte stream in one fixed buffer that holds the largest legal
/// frame with its prefix, so buffering is bounded whatever the peer sends. Usage per
/// readable event: read into space(), commit(n), then next() until kNeedMore, then
/// compact(). A kBadLength is sticky: the caller closes the connection.
class Reassembler {
 public:
  static constexpr size_t kCapacity = kLengthSize + kMaxFrame;

  /// Free room after the buffered bytes (never empty after compact() unless a frame is
  /// complete and not yet taken).
  std::span<std::byte> space() noexcept { return {buf_.data() + end_, kCapacity - end_}; }
  void commit(size_t n) noexcept { end_ += n; }
  /// The next complete frame (kFrame / kRunt advance past it), kNeedMore or kBadLength.
  Decoded next() noexcept;
  /// Undoes the last next() that returned kFrame (its frame could not be delivered yet).
  void unget(const Decoded& d) noexcept { begin_ -= d.consumed; }
  /// Moves a partial frame to the front so that space() can hold the rest of it.
  void compact() noexcept;
  /// Bytes of a frame begun but not complete (a peer that stops here sent half a frame).
  size_t pending() const noexcept { return end_ - begin_; }
  void clear() noexcept { begin_ = end_ = 0; }

 private:
  std::array<std::byte, kCapacity> buf_{};
  size_t begin_ = 0;
  size_t end_ = 0;
};

/// Completes a partial checksum as a NIC would (the kernel hands CHECKSUM_PARTIAL frames with
/// the pseudo-header sum already in the field): folds the one's-complement sum of
/// frame[start..] into frame[start + offset]. False when the field is not inside the frame.
bool complete_checksum(std::span<std::byte> frame, uint32_t start, uint32_t offset) noexcept;

}  // namespace vp::stream
