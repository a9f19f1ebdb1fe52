#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "sys/error.hpp"

namespace vp::net {

/// An Ethernet address.
struct Mac {
  std::array<uint8_t, 6> bytes{};

  bool operator==(const Mac&) const = default;

  bool is_multicast() const noexcept { return (bytes[0] & 0x01) != 0; }
  bool is_locally_administered() const noexcept { return (bytes[0] & 0x02) != 0; }
  bool is_zero() const noexcept;

  /// "a0:b0:c0:d0:e0:f0", lower case.
  std::string to_string() const;
};

/// Parses `a0b0c0d0e0f0`, `a0:b0:c0:d0:e0:f0` or `a0-b0-c0-d0-e0-f0` (either case).
/// Refuses (code "invalid-mac") malformed text, multicast and all-zero addresses.
Result<Mac> parse_mac(std::string_view text);

/// A locally administered unicast address derived from `machine_id` and the endpoint
/// name, so the same endpoint on the same host always gets the same address.
Mac stable_mac(std::string_view machine_id, std::string_view name);

/// The host's machine id (/etc/machine-id, else /var/lib/dbus/machine-id, else the
/// host name); used as the seed of stable_mac().
std::string read_machine_id();

}  // namespace vp::net
