#pragma once

// The virtio-net header (virtio 1.2 §5.1.6) as the data plane sees it: sizes, the feature
// bits that shape it, and the one check every guest TX header passes before its frame may
// reach the TAP. Pure functions, no I/O: table-tested in tests/unit/dataplane_header_test.cpp.

#include <cstddef>
#include <cstdint>
#include <span>

namespace vp::dataplane {

// SPEC: virtio 1.2 §5.1.3 feature bits the data plane reads (the offload bits are in
// net/offloads.hpp).
inline constexpr uint64_t kFeatureMrgRxbuf = 1ull << 15;  // VIRTIO_NET_F_MRG_RXBUF

// SPEC: virtio 1.2 §5.1.6: struct virtio_net_hdr is 10 bytes; 12 with num_buffers, which is
// present when VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF is negotiated.
inline constexpr uint32_t kNetHdrLegacySize = 10;
inline constexpr uint32_t kNetHdrSize = 12;
inline constexpr std::size_t kNumBuffersOffset = 10;

// SPEC: virtio 1.2 §5.1.6 flags and gso_type values.
inline constexpr uint8_t kHdrFNeedsCsum = 1;
inline constexpr uint8_t kHdrFDataValid = 2;
inline constexpr uint8_t kHdrFRscInfo = 4;
inline constexpr uint8_t kGsoNone = 0;
inline constexpr uint8_t kGsoTcpv4 = 1;
inline constexpr uint8_t kGsoUdp = 3;
inline constexpr uint8_t kGsoTcpv6 = 4;
inline constexpr uint8_t kGsoUdpL4 = 5;
inline constexpr uint8_t kGsoEcn = 0x80;

inline constexpr uint32_t kEthHeaderSize = 14;
/// The largest Ethernet frame (without virtio header) either direction carries: a 64 KiB
/// IP packet (GSO) plus an Ethernet header and one VLAN tag.
inline constexpr uint32_t kMaxFrameSize = 65535 + kEthHeaderSize + 4;

/// Header length in use for a set of negotiated features (the TAP's TUNSETVNETHDRSZ is set
/// to the same value, so headers pass through unchanged).
constexpr uint32_t net_hdr_len(uint64_t features) noexcept {
  constexpr uint64_t kVersion1 = 1ull << 32;
  return (features & (kVersion1 | kFeatureMrgRxbuf)) != 0 ? kNetHdrSize : kNetHdrLegacySize;
}

/// The fields of a virtio_net_hdr, decoded from little-endian bytes (legacy headers are
/// guest-endian; every host vpd supports is little-endian).
struct NetHdr {
  uint8_t flags = 0;
  uint8_t gso_type = 0;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;
};

/// Decodes the first 10 bytes of `bytes` (which must hold at least 10).
NetHdr decode_net_hdr(std::span<const std::byte> bytes) noexcept;

/// Why a guest TX header was refused. Each maps to one NetCounters field.
enum class TxHeaderFault : uint8_t {
  kNone,
  kBadFlags,           ///< DATA_VALID, RSC_INFO or an undefined bit: the driver must not set them
  kCsumNotNegotiated,  ///< NEEDS_CSUM without VIRTIO_NET_F_CSUM
  kBadCsumOffsets,     ///< csum_start + csum_offset + 2 past the frame
  kGsoNotNegotiated,   ///< a gso_type (or the ECN bit) whose HOST_* feature was not acked
  kBadGso,             ///< unknown gso_type, gso_size 0, GSO without NEEDS_CSUM
  kHdrLenPastFrame,    ///< hdr_len larger than the frame
};

/// Checks a guest TX header against the negotiated features and the frame it describes
/// (`frame_len`: bytes after the virtio header). Never trusts csum_start (DPDK
/// CVE-2024-11614): the checksum field must lie inside the frame.
// SPEC: virtio 1.2 §5.1.6.2.1 (driver requirements on flags, gso_type, gso_size).
TxHeaderFault check_tx_header(const NetHdr& hdr, uint32_t frame_len, uint64_t features) noexcept;

}  // namespace vp::dataplane
