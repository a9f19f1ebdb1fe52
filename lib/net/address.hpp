#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "sys/error.hpp"

namespace vp::net {

/// An interface address with its prefix length, e.g. 192.168.1.1/24 or fd00::1/64.
struct IfAddress {
  int family = 0;  // AF_INET or AF_INET6
  std::array<uint8_t, 16> bytes{};
  uint8_t prefix = 0;

  bool operator==(const IfAddress&) const = default;
  auto operator<=>(const IfAddress&) const = default;

  /// Canonical text, always with the prefix: "192.168.1.1/24", "fd00::1/64".
  std::string to_string() const;
};

struct ParsedAddress {
  IfAddress address;
  /// True when the text had no "/N" and a default was chosen (classful for IPv4, as
  /// ifconfig does; /64 for IPv6). The caller tells the user which one.
  bool prefix_defaulted = false;
};

/// Parses "A.B.C.D[/N]" or "X:Y::Z[/N]". Code "invalid-address" on anything else,
/// including network/broadcast-style mistakes such as a prefix over 32 (128).
Result<ParsedAddress> parse_address(std::string_view text);

}  // namespace vp::net
