#include "dataplane/net_header.hpp"

#include "net/offloads.hpp"

namespace vp::dataplane {

namespace {

uint16_t le16(std::span<const std::byte> b, std::size_t at) noexcept {
  return static_cast<uint16_t>(std::to_integer<uint16_t>(b[at]) |
                               (std::to_integer<uint16_t>(b[at + 1]) << 8));
}

}  // namespace

NetHdr decode_net_hdr(std::span<const std::byte> bytes) noexcept {
  // SPEC: virtio 1.2 §5.1.6: u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size;
  // le16 csum_start; le16 csum_offset; [le16 num_buffers].
  return NetHdr{std::to_integer<uint8_t>(bytes[0]),
                std::to_integer<uint8_t>(bytes[1]),
                le16(bytes, 2),
                le16(bytes, 4),
                le16(bytes, 6),
                le16(bytes, 8)};
}

TxHeaderFault check_tx_header(const NetHdr& hdr, uint32_t frame_len, uint64_t features) noexcept {
  namespace f = vp::net::feature;
  // GUEST: every field below comes from a guest buffer (copied once by the caller).
  // SPEC: §5.1.6.2.1: the driver MUST NOT set DATA_VALID or RSC_INFO; other bits are undefined.
  if ((hdr.flags & ~kHdrFNeedsCsum) != 0) return TxHeaderFault::kBadFlags;
  const bool needs_csum = (hdr.flags & kHdrFNeedsCsum) != 0;
  if (needs_csum) {
    // SPEC: §5.1.6.2.1: without VIRTIO_NET_F_CSUM the driver MUST set flags to zero.
    if ((features & f::kCsum) == 0) return TxHeaderFault::kCsumNotNegotiated;
    // GUEST: u16 + u16 + 2 cannot overflow 32 bits; the 2-byte checksum field lies inside.
    if (uint32_t{hdr.csum_start} + hdr.csum_offset + 2 > frame_len) {
      return TxHeaderFault::kBadCsumOffsets;
    }
  }
  const uint8_t type = hdr.gso_type & static_cast<uint8_t>(~kGsoEcn);
  if (type != kGsoNone) {
    uint64_t needed = 0;
    switch (type) {
      case kGsoTcpv4:
        needed = f::kHostTso4;
        break;
      case kGsoTcpv6:
        needed = f::kHostTso6;
        break;
      case kGsoUdp:
        needed = f::kHostUfo;
        break;
      case kGsoUdpL4:
        needed = f::kHostUso;
        break;
      default:
        return TxHeaderFault::kBadGso;
    }
    // SPEC: §5.1.6.2.1: gso_type NONE unless the matching HOST_* feature was negotiated.
    if ((features & needed) == 0) return TxHeaderFault::kGsoNotNegotiated;
    if ((hdr.gso_type & kGsoEcn) != 0 && (features & f::kHostEcn) == 0) {
      return TxHeaderFault::kGsoNotNegotiated;
    }
    // SPEC: §5.1.6.2.1: with a gso_type the driver MUST set NEEDS_CSUM and gso_size (the MSS).
    if (!needs_csum || hdr.gso_size == 0) return TxHeaderFault::kBadGso;
  } else if ((hdr.gso_type & kGsoEcn) != 0) {
    return TxHeaderFault::kBadGso;  // ECN qualifies a segmentation type; alone it means nothing
  }
  // GUEST: hdr_len is a hint, but tun refuses one past the frame; refuse it first and count it.
  if (hdr.hdr_len > frame_len) return TxHeaderFault::kHdrLenPastFrame;
  return TxHeaderFault::kNone;
}

}  // namespace vp::dataplane
