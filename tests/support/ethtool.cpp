#include "support/ethtool.hpp"

namespace vp::test {

std::optional<bool> feature_active(const std::string& ifname, std::string_view feature) {
  auto all = device_features(ifname);
  if (!all) return std::nullopt;
  auto it = all->find(std::string(feature));
  if (it == all->end()) return std::nullopt;
  return it->second;
}

}  // namespace vp::test
