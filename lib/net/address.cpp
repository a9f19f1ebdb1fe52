#include "net/address.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <charconv>

#include "sys/str.hpp"

namespace vp::net {

std::string IfAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family, bytes.data(), buf, sizeof buf);
  return str(buf, '/', static_cast<int>(prefix));
}

Result<ParsedAddress> parse_address(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return fail("invalid-address", str("address=", text, " is not usable: ", why,
                                       "; write it as 192.168.1.1/24 or fd00::1/64"));
  };
  const size_t slash = text.find('/');
  const std::string host(text.substr(0, slash));
  ParsedAddress out;
  IfAddress& a = out.address;
  if (::inet_pton(AF_INET, host.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET;
  } else if (::inet_pton(AF_INET6, host.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET6;
  } else {
    return invalid("it is neither an IPv4 nor an IPv6 address");
  }
  const int max_prefix = a.family == AF_INET ? 32 : 128;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    int prefix = -1;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || ec != std::errc{} || end != p.data() + p.size() || prefix < 1 ||
        prefix > max_prefix) {
      return invalid(str("the prefix length must be a number from 1 to ", max_prefix));
    }
    a.prefix = static_cast<uint8_t>(prefix);
  } else if (a.family == AF_INET) {
    // Classful default, as ifconfig (and QNX's `ifconfig vp0 192.168.1.1`) does.
    const uint8_t first = a.bytes[0];
    a.prefix = first < 128 ? 8 : first < 192 ? 16 : 24;
    out.prefix_defaulted = true;
  } else {
    a.prefix = 64;
    out.prefix_defaulted = true;
  }
  if (a.family == AF_INET) {
    if (a.bytes[0] == 0 || a.bytes[0] >= 224 || a.bytes[0] == 127) {
      return invalid("it is not a unicast address an interface can hold");
    }
  } else if (a.bytes[0] == 0xff) {
    return invalid("it is a multicast address");
  } else if (std::string_view(reinterpret_cast<const char*>(a.bytes.data()), 16) ==
             std::string_view("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16)) {
    return invalid("it is the loopback address, which only lo can hold");
  } else if (std::string_view(reinterpret_cast<const char*>(a.bytes.data()), 16) ==
             std::string_view("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16)) {
    return invalid("it is the unspecified address");
  }
  return out;
}

}  // namespace vp::net
