#include "net/ethtool.hpp"

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "net/offloads.hpp"
#include "sys/fd.hpp"

namespace vp::net {

std::optional<std::map<std::string, bool>> device_features(const std::string& ifname) {
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) return std::nullopt;
  Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return std::nullopt;
  auto ethtool = [&](void* data) {
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
    ifr.ifr_data = static_cast<char*>(data);
    return ::ioctl(sock.get(), SIOCETHTOOL, &ifr) == 0;
  };
  // The kernel writes variable-length tails; 8-byte words keep them aligned.
  std::vector<uint64_t> sset((sizeof(ethtool_sset_info) + sizeof(uint32_t)) / 8 + 1);
  auto* info = reinterpret_cast<ethtool_sset_info*>(sset.data());
  info->cmd = ETHTOOL_GSSET_INFO;
  info->sset_mask = 1ULL << ETH_SS_FEATURES;
  if (!ethtool(info) || info->sset_mask == 0) return std::nullopt;
  const uint32_t count = info->data[0];

  std::vector<uint64_t> strings((sizeof(ethtool_gstrings) + count * ETH_GSTRING_LEN) / 8 + 1);
  auto* names = reinterpret_cast<ethtool_gstrings*>(strings.data());
  names->cmd = ETHTOOL_GSTRINGS;
  names->string_set = ETH_SS_FEATURES;
  names->len = count;
  if (!ethtool(names)) return std::nullopt;

  const uint32_t blocks = (count + 31) / 32;
  std::vector<uint64_t> features(
      (sizeof(ethtool_gfeatures) + blocks * sizeof(ethtool_get_features_block)) / 8 + 1);
  auto* get = reinterpret_cast<ethtool_gfeatures*>(features.data());
  get->cmd = ETHTOOL_GFEATURES;
  get->size = blocks;
  if (!ethtool(get)) return std::nullopt;

  std::map<std::string, bool> out;
  for (uint32_t i = 0; i < count; ++i) {
    const char* name = reinterpret_cast<const char*>(names->data) + i * ETH_GSTRING_LEN;
    const std::string key(name, ::strnlen(name, ETH_GSTRING_LEN));
    if (key.empty()) continue;  // unnamed (reserved) bits
    out[key] = (get->features[i / 32].active & (1u << (i % 32))) != 0;
  }
  return out;
}

std::optional<unsigned> tun_offloads_active(const std::string& ifname) {
  auto all = device_features(ifname);
  if (!all) return std::nullopt;
  auto on = [&](const char* name) {
    auto it = all->find(name);
    return it != all->end() && it->second;
  };
  // What tun's set_offload() turns each TUN_F_* flag into (drivers/net/tun.c).
  unsigned flags = 0;
  if (on("tx-checksum-ip-generic")) flags |= tun::kCsum;
  if (on("tx-tcp-segmentation")) flags |= tun::kTso4;
  if (on("tx-tcp6-segmentation")) flags |= tun::kTso6;
  if (on("tx-tcp-ecn-segmentation")) flags |= tun::kTsoEcn;
  if (on("tx-udp-segmentation")) flags |= tun::kUso4 | tun::kUso6;
  return flags;
}

}  // namespace vp::net
