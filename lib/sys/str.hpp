#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>

namespace vp {

namespace detail {
inline void append(std::string& out, std::string_view s) { out += s; }
inline void append(std::string& out, const char* s) { out += s; }
inline void append(std::string& out, char c) { out += c; }
inline void append(std::string& out, bool b) { out += b ? "true" : "false"; }
template <std::integral T>
requires(!std::same_as<T, char> && !std::same_as<T, bool>) void append(std::string& out, T v) {
  out += std::to_string(v);
}
}  // namespace detail

/// Concatenates strings and integers: str("vp", 3, ": up") == "vp3: up". (GCC 12 has no
/// <format>.)
template <class... Args>
std::string str(const Args&... args) {
  std::string out;
  (detail::append(out, args), ...);
  return out;
}

/// "0x" and the lower-case hex digits of `value`, without leading zeros: hex(0x1c0) ==
/// "0x1c0", hex(0) == "0x0". For feature masks, flags and addresses in messages.
inline std::string hex(uint64_t value) {
  static constexpr char kDigits[] = "0123456789abcdef";
  char digits[16];
  std::size_t n = 0;
  do {
    digits[n++] = kDigits[value & 0xf];
    value >>= 4;
  } while (value != 0);
  std::string out = "0x";
  while (n > 0) out += digits[--n];
  return out;
}

}  // namespace vp
