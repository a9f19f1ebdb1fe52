#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sys/error.hpp"

namespace vp::net {

/// VIRTIO_NET_F_* feature bits (virtio 1.2 §5.1.3) that peerfeats can name.
namespace feature {
inline constexpr uint64_t kCsum = 1ull << 0;
inline constexpr uint64_t kGuestCsum = 1ull << 1;
inline constexpr uint64_t kGso = 1ull << 6;  // legacy; accepted for QNX masks, never offered
inline constexpr uint64_t kGuestTso4 = 1ull << 7;
inline constexpr uint64_t kGuestTso6 = 1ull << 8;
inline constexpr uint64_t kGuestEcn = 1ull << 9;
inline constexpr uint64_t kGuestUfo = 1ull << 10;
inline constexpr uint64_t kHostTso4 = 1ull << 11;
inline constexpr uint64_t kHostTso6 = 1ull << 12;
inline constexpr uint64_t kHostEcn = 1ull << 13;
inline constexpr uint64_t kHostUfo = 1ull << 14;
inline constexpr uint64_t kGuestUso4 = 1ull << 54;
inline constexpr uint64_t kGuestUso6 = 1ull << 55;
inline constexpr uint64_t kHostUso = 1ull << 56;
}  // namespace feature

/// Every bit peerfeats accepts (0x7fc3 of the QNX table plus USO).
inline constexpr uint64_t kPeerfeatsKnown =
    0x7fc3ull | feature::kGuestUso4 | feature::kGuestUso6 | feature::kHostUso;
/// The offload bits vpd itself can offer a guest.
inline constexpr uint64_t kOffloadsSupported = kPeerfeatsKnown & ~feature::kGso;

/// TUNSETOFFLOAD flags (linux/if_tun.h; USO from Linux 6.2, defined here for older headers).
namespace tun {
inline constexpr unsigned kCsum = 0x01;
inline constexpr unsigned kTso4 = 0x02;
inline constexpr unsigned kTso6 = 0x04;
inline constexpr unsigned kTsoEcn = 0x08;
inline constexpr unsigned kUfo = 0x10;
inline constexpr unsigned kUso4 = 0x20;
inline constexpr unsigned kUso6 = 0x40;
}  // namespace tun

/// Host-side ifconfig-style toggles (`-rxcsum`, `tso4`, ...). All on by default.
namespace toggle {
inline constexpr uint32_t kRxcsum = 1u << 0;
inline constexpr uint32_t kTxcsum = 1u << 1;
inline constexpr uint32_t kRxcsum6 = 1u << 2;
inline constexpr uint32_t kTxcsum6 = 1u << 3;
inline constexpr uint32_t kTcp4csum = 1u << 4;
inline constexpr uint32_t kUdp4csum = 1u << 5;
inline constexpr uint32_t kTcp6csum = 1u << 6;
inline constexpr uint32_t kUdp6csum = 1u << 7;
inline constexpr uint32_t kTso4 = 1u << 8;
inline constexpr uint32_t kTso6 = 1u << 9;
inline constexpr uint32_t kAll = (1u << 10) - 1;
}  // namespace toggle

/// The toggle called `name` ("rxcsum", "tso6", ...), or 0.
uint32_t toggle_by_name(std::string_view name);
/// Names of the toggles in `mask`, in table order.
std::string toggle_names(uint32_t mask);

/// Parses a peerfeats mask, hex ("0x19c3") or decimal ("6595"). Code "bad-peerfeats",
/// naming the unknown bit numbers when there are any.
Result<uint64_t> parse_peerfeats(std::string_view text);

/// The feature bits the host toggles leave allowed. Virtio cannot tell IPv4 from IPv6
/// checksum offload, nor TCP from UDP, so a bit is allowed only when every toggle that
/// touches it is on.
uint64_t features_allowed_by(uint32_t toggles);

/// Drops every bit whose prerequisite is missing (virtio 1.2 §5.1.3.1: GUEST_TSO4
/// needs GUEST_CSUM, HOST_ECN needs HOST_TSO4 or HOST_TSO6, ...), until nothing changes.
uint64_t close_dependencies(uint64_t features);

/// What vpd offers a guest: supported ∩ peerfeats (all when unset) ∩ toggles, closed
/// under the dependencies.
uint64_t effective_features(std::optional<uint64_t> peerfeats, uint32_t toggles);

/// TUNSETOFFLOAD flags for the GUEST_* bits of `features`, so that the TAP hands the guest
/// only what it acked: GUEST_CSUM -> TUN_F_CSUM; GUEST_TSO4/6 -> TUN_F_TSO4/6, GUEST_ECN ->
/// TUN_F_TSO_ECN, GUEST_UFO -> TUN_F_UFO, GUEST_USO4/6 -> TUN_F_USO4/6, each only together
/// with CSUM.
unsigned tun_offloads_for(uint64_t features);

/// "CSUM|GUEST_CSUM|..." (or "none"); unnamed bits as "bit N".
std::string feature_names(uint64_t features);
/// "CSUM|TSO4|..." (or "none").
std::string tun_offload_names(unsigned flags);

}  // namespace vp::net
