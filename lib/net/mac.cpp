#include "net/mac.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "sys/str.hpp"

namespace vp::net {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// FNV-1a, 64 bits: stable across builds and hosts, unlike std::hash.
uint64_t fnv1a(uint64_t h, std::string_view s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  if (in) std::getline(in, line);
  return line;
}

}  // namespace

bool Mac::is_zero() const noexcept {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

std::string Mac::to_string() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i) out += ':';
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 0xf];
  }
  return out;
}

Result<Mac> parse_mac(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return fail("invalid-mac",
                str("mac=", text, " is not a usable MAC address: ", why,
                    "; write it as a0b0c0d0e0f0, a0:b0:c0:d0:e0:f0 or a0-b0-c0-d0-e0-f0"));
  };
  std::string digits;
  if (text.size() == 12) {
    digits = text;
  } else if (text.size() == 17) {
    const char sep = text[2];
    if (sep != ':' && sep != '-') return invalid("unexpected separator");
    for (size_t i = 0; i < text.size(); ++i) {
      if (i % 3 == 2) {
        if (text[i] != sep) return invalid("separators must be all ':' or all '-'");
      } else {
        digits += text[i];
      }
    }
  } else {
    return invalid("it must have 12 hex digits");
  }
  Mac mac;
  for (size_t i = 0; i < 6; ++i) {
    const int hi = hex_digit(digits[2 * i]);
    const int lo = hex_digit(digits[2 * i + 1]);
    if (hi < 0 || lo < 0) return invalid("it has a character that is not a hex digit");
    mac.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  if (mac.is_zero()) {
    return fail("invalid-mac", str("mac=", text,
                                   " is the all-zero address, which no interface may use; "
                                   "pick a locally administered unicast address such as "
                                   "02:00:00:00:00:01"));
  }
  if (mac.is_multicast()) {
    return fail("invalid-mac",
                str("mac=", text,
                    " is a multicast address (lowest bit of the first byte set); an interface "
                    "needs a unicast address, e.g. with first byte 02"));
  }
  return mac;
}

Mac stable_mac(std::string_view machine_id, std::string_view name) {
  uint64_t h = fnv1a(0xcbf29ce484222325ull, "vpd-endpoint-mac");
  h = fnv1a(h, machine_id);
  h = fnv1a(h, "/");
  h = fnv1a(h, name);
  Mac mac;
  for (size_t i = 0; i < 6; ++i) mac.bytes[i] = static_cast<uint8_t>(h >> (8 * i));
  mac.bytes[0] = static_cast<uint8_t>((mac.bytes[0] & 0xfc) | 0x02);  // local, unicast
  return mac;
}

std::string read_machine_id() {
  for (const char* path : {"/etc/machine-id", "/var/lib/dbus/machine-id"}) {
    std::string id = first_line(path);
    if (!id.empty()) return id;
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) return host;
  return "localhost";
}

}  // namespace vp::net
