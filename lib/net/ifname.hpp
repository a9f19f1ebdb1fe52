#pragma once

#include <string>
#include <string_view>

#include "sys/error.hpp"

namespace vp::net {

inline constexpr size_t kMaxIfnameLength = 15;  // IFNAMSIZ - 1

/// Checks an interface name as the kernel would (dev_valid_name) before any syscall:
/// 1..15 bytes, not "." or "..", no '/', ':' or whitespace. Codes: "name-too-long",
/// "invalid-name".
Result<void> validate_ifname(std::string_view name);

/// Checks a `name=` prefix: the same characters, and room for at least one digit.
Result<void> validate_prefix(std::string_view prefix);

}  // namespace vp::net
