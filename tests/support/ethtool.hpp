#pragma once

// Netdev features as `ethtool -k` shows them, read with the ETHTOOL_GFEATURES ioctl (the
// names are the kernel's ETH_SS_FEATURES strings, e.g. "tx-tcp-segmentation" for
// NETIF_F_TSO). `ip -j -d link` does not show offloads; tests read them here.

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace vp::test {

/// Every feature of `ifname` by name, true when active; nullopt when they cannot be read
/// (no such interface, no permission).
std::optional<std::map<std::string, bool>> device_features(const std::string& ifname);

/// Whether the feature `feature` of `ifname` is active; nullopt when the features cannot
/// be read or the kernel has no feature of that name.
std::optional<bool> feature_active(const std::string& ifname, std::string_view feature);

}  // namespace vp::test
