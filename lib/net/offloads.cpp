#include "net/offloads.hpp"

#include <array>
#include <bit>
#include <charconv>
#include <utility>

#include "sys/str.hpp"

namespace vp::net {
namespace {

struct ToggleName {
  uint32_t bit;
  const char* name;
};
constexpr std::array<ToggleName, 10> kToggles{{
    {toggle::kRxcsum, "rxcsum"},
    {toggle::kTxcsum, "txcsum"},
    {toggle::kRxcsum6, "rxcsum6"},
    {toggle::kTxcsum6, "txcsum6"},
    {toggle::kTcp4csum, "tcp4csum"},
    {toggle::kUdp4csum, "udp4csum"},
    {toggle::kTcp6csum, "tcp6csum"},
    {toggle::kUdp6csum, "udp6csum"},
    {toggle::kTso4, "tso4"},
    {toggle::kTso6, "tso6"},
}};

struct FeatureName {
  uint64_t bit;
  const char* name;
};
constexpr std::array<FeatureName, 26> kFeatures{{
    {feature::kCsum, "CSUM"},
    {feature::kGuestCsum, "GUEST_CSUM"},
    {feature::kGso, "GSO"},
    {feature::kGuestTso4, "GUEST_TSO4"},
    {feature::kGuestTso6, "GUEST_TSO6"},
    {feature::kGuestEcn, "GUEST_ECN"},
    {feature::kGuestUfo, "GUEST_UFO"},
    {feature::kHostTso4, "HOST_TSO4"},
    {feature::kHostTso6, "HOST_TSO6"},
    {feature::kHostEcn, "HOST_ECN"},
    {feature::kHostUfo, "HOST_UFO"},
    {feature::kGuestUso4, "GUEST_USO4"},
    {feature::kGuestUso6, "GUEST_USO6"},
    {feature::kHostUso, "HOST_USO"},
    // Not offloads, but named when vpctl shows what a guest negotiated.
    {1ull << 3, "MTU"},
    {1ull << 5, "MAC"},
    {1ull << 15, "MRG_RXBUF"},
    {1ull << 16, "STATUS"},
    {1ull << 21, "GUEST_ANNOUNCE"},
    {1ull << 22, "MQ"},
    {1ull << 27, "ANY_LAYOUT"},
    {1ull << 28, "INDIRECT_DESC"},
    {1ull << 29, "EVENT_IDX"},
    {1ull << 30, "PROTOCOL_FEATURES"},
    {1ull << 32, "VERSION_1"},
    {1ull << 34, "RING_PACKED"},
}};

// SPEC: virtio 1.2 §5.1.3.1 — each bit and the bits it needs (any one of `any_of`, all of
// `all_of`).
struct Dependency {
  uint64_t bit;
  uint64_t all_of;
  uint64_t any_of;
};
constexpr std::array<Dependency, 12> kDependencies{{
    {feature::kGuestTso4, feature::kGuestCsum, 0},
    {feature::kGuestTso6, feature::kGuestCsum, 0},
    {feature::kGuestEcn, 0, feature::kGuestTso4 | feature::kGuestTso6},
    {feature::kGuestUfo, feature::kGuestCsum, 0},
    {feature::kGuestUso4, feature::kGuestCsum, 0},
    {feature::kGuestUso6, feature::kGuestCsum, 0},
    {feature::kHostTso4, feature::kCsum, 0},
    {feature::kHostTso6, feature::kCsum, 0},
    {feature::kHostEcn, 0, feature::kHostTso4 | feature::kHostTso6},
    {feature::kHostUfo, feature::kCsum, 0},
    {feature::kHostUso, feature::kCsum, 0},
    {feature::kGso, ~0ull, 0},  // legacy: never satisfiable, never offered
}};

constexpr uint32_t kChecksumProtocols =
    toggle::kTcp4csum | toggle::kUdp4csum | toggle::kTcp6csum | toggle::kUdp6csum;

}  // namespace

uint32_t toggle_by_name(std::string_view name) {
  for (const auto& t : kToggles) {
    if (name == t.name) return t.bit;
  }
  return 0;
}

std::string toggle_names(uint32_t mask) {
  std::string out;
  for (const auto& t : kToggles) {
    if (!(mask & t.bit)) continue;
    if (!out.empty()) out += ',';
    out += t.name;
  }
  return out;
}

Result<uint64_t> parse_peerfeats(std::string_view text) {
  uint64_t value = 0;
  std::string_view digits = text;
  int base = 10;
  if (digits.starts_with("0x") || digits.starts_with("0X")) {
    digits.remove_prefix(2);
    base = 16;
  }
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size()) {
    return fail("bad-peerfeats",
                str("peerfeats=", text,
                    " is not a number; give the VIRTIO_NET_F_* mask in hex (0x19c3) or "
                    "decimal (6595)"));
  }
  const uint64_t unknown = value & ~kPeerfeatsKnown;
  if (unknown) {
    std::string bits;
    for (int i = 0; i < 64; ++i) {
      if (!(unknown >> i & 1)) continue;
      if (!bits.empty()) bits += ", ";
      bits += std::to_string(i);
    }
    return fail("bad-peerfeats",
                str("peerfeats=", text, " has bit", (std::popcount(unknown) > 1 ? "s " : " "), bits,
                    " that vpd does not know as an offload feature; the known bits are 0, 1, "
                    "6-14 (the QNX maximum 0x7fc3) and 54-56 (USO)"));
  }
  return value;
}

uint64_t features_allowed_by(uint32_t toggles) {
  auto on = [&](uint32_t bits) { return (toggles & bits) == bits; };
  uint64_t allowed = kPeerfeatsKnown;
  // Guest→host frames are what the host receives: rx toggles gate CSUM.
  if (!on(toggle::kRxcsum | toggle::kRxcsum6 | kChecksumProtocols)) allowed &= ~feature::kCsum;
  // Host→guest frames are what the host transmits: tx toggles gate GUEST_CSUM.
  if (!on(toggle::kTxcsum | toggle::kTxcsum6 | kChecksumProtocols)) {
    allowed &= ~feature::kGuestCsum;
  }
  if (!on(toggle::kTso4)) allowed &= ~(feature::kGuestTso4 | feature::kHostTso4);
  if (!on(toggle::kTso6)) allowed &= ~(feature::kGuestTso6 | feature::kHostTso6);
  return allowed;
}

uint64_t close_dependencies(uint64_t features) {
  for (;;) {
    uint64_t next = features;
    for (const auto& d : kDependencies) {
      if (!(next & d.bit)) continue;
      const bool all_ok = (next & d.all_of) == d.all_of;
      const bool any_ok = d.any_of == 0 || (next & d.any_of) != 0;
      if (!all_ok || !any_ok) next &= ~d.bit;
    }
    if (next == features) return features;
    features = next;
  }
}

uint64_t effective_features(std::optional<uint64_t> peerfeats, uint32_t toggles) {
  return close_dependencies(kOffloadsSupported & peerfeats.value_or(~0ull) &
                            features_allowed_by(toggles));
}

unsigned tun_offloads_for(uint64_t features) {
  if (!(features & feature::kGuestCsum)) return 0;
  unsigned flags = tun::kCsum;
  if (features & feature::kGuestTso4) flags |= tun::kTso4;
  if (features & feature::kGuestTso6) flags |= tun::kTso6;
  if ((features & feature::kGuestEcn) && (flags & (tun::kTso4 | tun::kTso6))) {
    flags |= tun::kTsoEcn;
  }
  if (features & feature::kGuestUfo) flags |= tun::kUfo;
  if (features & feature::kGuestUso4) flags |= tun::kUso4;
  if (features & feature::kGuestUso6) flags |= tun::kUso6;
  return flags;
}

std::string feature_names(uint64_t features) {
  std::string out;
  uint64_t named = 0;
  for (const auto& f : kFeatures) {
    named |= f.bit;
    if (!(features & f.bit)) continue;
    if (!out.empty()) out += '|';
    out += f.name;
  }
  for (int i = 0; i < 64; ++i) {
    if (!((features & ~named) >> i & 1)) continue;
    if (!out.empty()) out += '|';
    out += str("bit ", i);
  }
  return out.empty() ? "none" : out;
}

std::string tun_offload_names(unsigned flags) {
  static constexpr std::pair<unsigned, const char*> kNames[] = {
      {tun::kCsum, "CSUM"}, {tun::kTso4, "TSO4"}, {tun::kTso6, "TSO6"}, {tun::kTsoEcn, "TSO_ECN"},
      {tun::kUfo, "UFO"},   {tun::kUso4, "USO4"}, {tun::kUso6, "USO6"}};
  std::string out;
  for (const auto& [bit, name] : kNames) {
    if (!(flags & bit)) continue;
    if (!out.empty()) out += '|';
    out += name;
  }
  return out.empty() ? "none" : out;
}

}  // namespace vp::net
