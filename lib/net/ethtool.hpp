#pragma once

// Netdev features as `ethtool -k` shows them, read with the ETHTOOL_GFEATURES ioctl (the
// names are the kernel's ETH_SS_FEATURES strings, e.g. "tx-tcp-segmentation" for
// NETIF_F_TSO). Neither netlink nor `ip -j -d link` shows offloads.

#include <map>
#include <optional>
#include <string>

namespace vp::net {

/// Every feature of `ifname` by name, true when active; nullopt when they cannot be read
/// (no such interface, no permission).
std::optional<std::map<std::string, bool>> device_features(const std::string& ifname);

/// The TUN_F_* flags (vp::net::tun) whose netdev features `ifname` has active now: what a
/// VMM's TUNSETOFFLOAD left on a TAP that vpd does not serve itself. nullopt when the
/// features cannot be read.
std::optional<unsigned> tun_offloads_active(const std::string& ifname);

}  // namespace vp::net
