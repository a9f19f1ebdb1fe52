#pragma once

// Netdev features as `ethtool -k` shows them, read with the ETHTOOL_GFEATURES ioctl (the
// names are the kernel's ETH_SS_FEATURES strings, e.g. "tx-tcp-segmentation" for
// NETIF_F_TSO). `ip -j -d link` does not show offloads; tests read them here.

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "net/ethtool.hpp"

namespace vp::test {

/// Every feature of `ifname` by name (lib/net/ethtool.hpp, which vpd uses too).
using net::device_features;

/// Whether the feature `feature` of `ifname` is active; nullopt when the features cannot
/// be read or the kernel has no feature of that name.
std::optional<bool> feature_active(const std::string& ifname, std::string_view feature);

}  // namespace vp::test
