#include "net/ifname.hpp"

#include <cctype>

#include "sys/str.hpp"

namespace vp::net {
namespace {

Result<void> check_characters(std::string_view what, std::string_view name) {
  for (unsigned char c : name) {
    if (c == '/' || c == ':' || std::isspace(c) || c < 0x20 || c == 0x7f) {
      return fail("invalid-name", str(what, " '", name,
                                      "' has a character an interface name cannot have ('/', ':', "
                                      "white space or a control character)"));
    }
  }
  return {};
}

}  // namespace

Result<void> validate_ifname(std::string_view name) {
  if (name.empty()) return fail("invalid-name", "an interface name cannot be empty");
  if (name.size() > kMaxIfnameLength) {
    return fail("name-too-long", str("interface name '", name, "' is ", name.size(),
                                     " bytes; Linux allows at most 15"));
  }
  if (name == "." || name == "..") {
    return fail("invalid-name", str("'", name, "' cannot be an interface name"));
  }
  return check_characters("interface name", name);
}

Result<void> validate_prefix(std::string_view prefix) {
  if (prefix.empty()) return fail("invalid-name", "name= needs a prefix such as vp");
  if (prefix.size() >= kMaxIfnameLength) {
    return fail("name-too-long",
                str("name prefix '", prefix, "' is ", prefix.size(),
                    " bytes; it needs room for an index within Linux's 15-byte limit, "
                    "so use at most 14"));
  }
  if (prefix == "." || prefix == "..") {
    return fail("invalid-name", str("'", prefix, "' cannot be a name prefix"));
  }
  return check_characters("name prefix", prefix);
}

}  // namespace vp::net
