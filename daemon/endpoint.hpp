#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "control/endpoint.hpp"
#include "net/tap.hpp"

namespace vp::daemon {

/// ifalias that marks a TAP as a vpd endpoint: vpd re-adopts such a TAP and refuses to
/// take over any other interface.
inline constexpr std::string_view kAliasMarker = "vpd endpoint";

/// One endpoint: its declared configuration and the kernel objects that realise it.
struct Endpoint {
  control::EndpointConfig config;
  std::string declared;  // see SavedEndpoint::declared
  net::Tap tap;          // vpd's own queue; invalid while the TAP could not be opened
  int ifindex = 0;
  unsigned tun_offloads = 0;          // what TUNSETOFFLOAD accepted
  int vnet_hdr_len = 0;               // what TUNSETVNETHDRSZ was given
  std::vector<std::string> problems;  // why the kernel does not match config, if it does not
  /// transport=tap: the TAP's carrier when vpd last looked (on while a VMM has it open).
  bool vmm_carrier = false;
};

}  // namespace vp::daemon
