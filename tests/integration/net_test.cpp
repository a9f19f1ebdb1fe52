// Tap and Netlink against the real kernel. Every test runs in a network namespace of its
// own (unshare(CLONE_NEWNET) in SetUp), so it needs CAP_SYS_ADMIN and CAP_NET_ADMIN and
// touches nothing outside; `ip` is used only to build fixtures and to read back.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/address.hpp"
#include "net/link.hpp"
#include "net/mac.hpp"
#include "net/offloads.hpp"
#include "net/tap.hpp"
#include "support/ethtool.hpp"
#include "sys/fd.hpp"

namespace vp::net {
namespace {

using vp::test::feature_active;

/// Standard output of a shell command (stderr goes to the test log).
std::string output_of(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  ::pclose(pipe);
  return out;
}

bool succeeds(const std::string& command) { return std::system(command.c_str()) == 0; }

/// Names of every interface in the namespace, as `ip` sees them.
std::vector<std::string> link_names() {
  std::vector<std::string> names;
  const std::string text = output_of("ip -o link show");
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t eol = std::min(text.find('\n', pos), text.size());
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    // "1: lo: <LOOPBACK,...> ..." or "5: vp0@if4: ..."
    const size_t start = line.find(": ");
    if (start == std::string::npos) continue;
    const size_t end = line.find_first_of(":@", start + 2);
    names.push_back(line.substr(start + 2, end - start - 2));
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string text_of(const IfAddress& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(a.family, a.bytes.data(), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(a.prefix);
}

std::vector<std::string> texts_of(const std::vector<IfAddress>& addresses) {
  std::vector<std::string> out;
  for (const auto& a : addresses) out.push_back(text_of(a));
  return out;
}

IfAddress address(int family, const char* host, uint8_t prefix) {
  IfAddress a;
  a.family = family;
  a.prefix = prefix;
  EXPECT_EQ(::inet_pton(family, host, a.bytes.data()), 1) << host;
  return a;
}

/// TUNGETIFF flags of a TAP queue (IFF_TAP, IFF_VNET_HDR, IFF_PERSIST, ...).
int tun_flags(const Tap& tap) {
  ifreq ifr{};
  if (::ioctl(tap.fd(), TUNGETIFF, &ifr) < 0) return -1;
  return static_cast<unsigned short>(ifr.ifr_flags);
}

int vnet_hdr_size(const Tap& tap) {
  int size = -1;
  if (::ioctl(tap.fd(), TUNGETVNETHDRSZ, &size) < 0) return -1;
  return size;
}

class NetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::unshare(CLONE_NEWNET) != 0) {
      if (errno == EPERM) GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) for a network namespace";
      FAIL() << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    }
    auto nl = Netlink::open();
    ASSERT_TRUE(nl) << nl.error().message;
    nl_.emplace(std::move(*nl));
    auto lo = link("lo");
    ASSERT_TRUE(lo);
    ASSERT_TRUE(nl_->set_up(lo->ifindex, true));
    lo = link("lo");
    ASSERT_TRUE(lo && lo->up);
    ASSERT_EQ(link_names(), std::vector<std::string>{"lo"}) << "the namespace is not fresh";
  }

  Netlink& nl() { return *nl_; }

  /// The link called `name`; nullopt (and a test failure on a netlink error) otherwise.
  std::optional<LinkInfo> link(std::string_view name) {
    auto found = nl_->find_link(name);
    if (!found) {
      ADD_FAILURE() << found.error().message;
      return std::nullopt;
    }
    return *found;
  }

  std::optional<LinkInfo> link(int ifindex) {
    auto found = nl_->find_link(ifindex);
    if (!found) {
      ADD_FAILURE() << found.error().message;
      return std::nullopt;
    }
    return *found;
  }

  std::vector<std::string> addresses_of(int ifindex) {
    auto list = nl_->addresses(ifindex);
    if (!list) {
      ADD_FAILURE() << list.error().message;
      return {};
    }
    EXPECT_TRUE(std::is_sorted(list->begin(), list->end()));
    return texts_of(*list);
  }

  std::optional<Netlink> nl_;
};

using TapTest = NetTest;
using NetlinkTest = NetTest;

// ---- Tap ----------------------------------------------------------------------------------

TEST_F(TapTest, tun_features_offer_tap_vnet_hdr_and_multi_queue) {
  auto features = tun_features();
  ASSERT_TRUE(features) << features.error().message;
  EXPECT_NE(*features & IFF_TAP, 0u);
  EXPECT_NE(*features & IFF_NO_PI, 0u);
  EXPECT_NE(*features & IFF_VNET_HDR, 0u);
  EXPECT_NE(*features & IFF_MULTI_QUEUE, 0u);
}

TEST_F(TapTest, open_vp0_creates_tap_of_kind_tun) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  EXPECT_EQ(tap->name(), "vp0");
  EXPECT_TRUE(tap->multi_queue());

  const int flags = tun_flags(*tap);
  EXPECT_EQ(flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE),
            IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE);
  EXPECT_EQ(flags & IFF_PERSIST, 0);
  EXPECT_NE(::fcntl(tap->fd(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(tap->fd(), F_GETFD) & FD_CLOEXEC, 0);

  auto info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, "tun");
  EXPECT_EQ(info->name, "vp0");
  EXPECT_GT(info->ifindex, 0);
  EXPECT_FALSE(info->mac.is_zero());
  auto by_index = link(info->ifindex);
  ASSERT_TRUE(by_index);
  EXPECT_EQ(by_index->name, "vp0");
  EXPECT_EQ(by_index->kind, "tun");
}

TEST_F(TapTest, closing_the_only_queue_of_non_persistent_tap_removes_it) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  ASSERT_TRUE(link("vp0"));
  tap->close();
  EXPECT_LT(tap->fd(), 0);
  EXPECT_FALSE(link("vp0"));
}

TEST_F(TapTest, persistent_tap_survives_close_and_reattaches) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  ASSERT_TRUE(tap->set_persist(true));
  EXPECT_NE(tun_flags(*tap) & IFF_PERSIST, 0);
  const auto before = link("vp0");
  ASSERT_TRUE(before);
  tap->close();

  const auto after_close = link("vp0");
  ASSERT_TRUE(after_close);
  EXPECT_EQ(after_close->ifindex, before->ifindex);

  auto again = Tap::open("vp0");  // a restarted vpd re-adopting its TAP
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_NE(tun_flags(*again) & IFF_PERSIST, 0);
  const auto reattached = link("vp0");
  ASSERT_TRUE(reattached);
  EXPECT_EQ(reattached->ifindex, before->ifindex);

  ASSERT_TRUE(again->set_persist(false));
  EXPECT_EQ(tun_flags(*again) & IFF_PERSIST, 0);
  ASSERT_TRUE(link("vp0"));  // still attached
  again->close();
  EXPECT_FALSE(link("vp0"));
}

TEST_F(TapTest, second_queue_attaches_to_multi_queue_tap) {
  auto first = Tap::open("vp0", true);
  ASSERT_TRUE(first) << first.error().message;
  auto second = Tap::open("vp0", true);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_TRUE(second->multi_queue());
  first->close();
  EXPECT_TRUE(link("vp0"));  // the second queue keeps it
  second->close();
  EXPECT_FALSE(link("vp0"));
}

TEST_F(TapTest, second_queue_of_single_queue_tap_is_refused_naming_the_device) {
  auto first = Tap::open("vp0", false);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_FALSE(first->multi_queue());
  EXPECT_EQ(tun_flags(*first) & IFF_MULTI_QUEUE, 0);
  auto second = Tap::open("vp0", false);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, "system");
  EXPECT_EQ(second.error().message.rfind("TUNSETIFF vp0: ", 0), 0u) << second.error().message;
  EXPECT_NE(second.error().message.find(std::strerror(EBUSY)), std::string::npos);

  // Asking for multi-queue does not hide why: the retry in single-queue mode says EBUSY.
  auto multi = Tap::open("vp0", true);
  ASSERT_FALSE(multi);
  EXPECT_EQ(multi.error().message.rfind(std::string("TUNSETIFF vp0: ") + std::strerror(EBUSY), 0),
            0u)
      << multi.error().message;
  EXPECT_TRUE(first->set_carrier(true));  // the first queue is untouched
}

TEST_F(TapTest, reattach_adopts_queue_mode_of_existing_tap) {
  auto single = Tap::open("vp0", false);
  ASSERT_TRUE(single) << single.error().message;
  ASSERT_TRUE(single->set_persist(true));
  single->close();
  auto adopted = Tap::open("vp0", true);
  ASSERT_TRUE(adopted) << adopted.error().message;
  EXPECT_FALSE(adopted->multi_queue());
  EXPECT_EQ(tun_flags(*adopted) & IFF_MULTI_QUEUE, 0);
  ASSERT_TRUE(adopted->set_persist(false));
  adopted->close();
  ASSERT_FALSE(link("vp0"));

  auto multi = Tap::open("vp1", true);
  ASSERT_TRUE(multi) << multi.error().message;
  ASSERT_TRUE(multi->set_persist(true));
  multi->close();
  auto adopted_multi = Tap::open("vp1", false);
  ASSERT_TRUE(adopted_multi) << adopted_multi.error().message;
  EXPECT_TRUE(adopted_multi->multi_queue());
  EXPECT_NE(tun_flags(*adopted_multi) & IFF_MULTI_QUEUE, 0);
  ASSERT_TRUE(adopted_multi->set_persist(false));
}

TEST_F(TapTest, name_held_by_a_bridge_is_refused_and_bridge_left_alone) {
  ASSERT_TRUE(succeeds("ip link add vp0 type bridge"));
  auto tap = Tap::open("vp0");
  ASSERT_FALSE(tap);
  EXPECT_EQ(tap.error().code, "system");
  EXPECT_EQ(tap.error().message.rfind("TUNSETIFF vp0: ", 0), 0u) << tap.error().message;
  EXPECT_NE(tap.error().message.find("not a TAP"), std::string::npos) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, "bridge");
}

TEST_F(TapTest, invalid_names_are_refused_before_anything_is_created) {
  auto slash = Tap::open("a/b");
  ASSERT_FALSE(slash);
  EXPECT_EQ(slash.error().code, "invalid-name");
  auto sixteen = Tap::open("abcdefghijklmnop");
  ASSERT_FALSE(sixteen);
  EXPECT_EQ(sixteen.error().code, "name-too-long");
  auto empty = Tap::open("");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, "invalid-name");

  EXPECT_EQ(link_names(), std::vector<std::string>{"lo"});
  EXPECT_FALSE(link("abcdefghijklmno"));  // not created truncated either
  EXPECT_FALSE(link("a"));
}

TEST_F(TapTest, vnet_hdr_size_10_and_12_read_back) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  ASSERT_TRUE(tap->set_vnet_hdr_size(10));
  EXPECT_EQ(vnet_hdr_size(*tap), 10);
  ASSERT_TRUE(tap->set_vnet_hdr_size(12));
  EXPECT_EQ(vnet_hdr_size(*tap), 12);

  auto too_small = tap->set_vnet_hdr_size(8);  // shorter than struct virtio_net_hdr
  ASSERT_FALSE(too_small);
  EXPECT_EQ(too_small.error().code, "system");
  EXPECT_EQ(too_small.error().message.rfind("TUNSETVNETHDRSZ vp0: ", 0), 0u)
      << too_small.error().message;
  EXPECT_EQ(vnet_hdr_size(*tap), 12);
}

TEST_F(TapTest, offload_csum_tso4_tso6_is_set_and_visible_as_device_features) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  const unsigned wanted = tun::kCsum | tun::kTso4 | tun::kTso6;
  auto set = tap->set_offload(wanted);
  ASSERT_TRUE(set) << set.error().message;
  EXPECT_EQ(*set, wanted);
  EXPECT_EQ(feature_active("vp0", "tx-checksum-ip-generic"), true);
  EXPECT_EQ(feature_active("vp0", "tx-tcp-segmentation"), true);
  EXPECT_EQ(feature_active("vp0", "tx-tcp6-segmentation"), true);
  EXPECT_EQ(feature_active("vp0", "tx-tcp-ecn-segmentation"), false);

  auto none = tap->set_offload(0);
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_EQ(*none, 0u);
  EXPECT_EQ(feature_active("vp0", "tx-checksum-ip-generic"), false);
  EXPECT_EQ(feature_active("vp0", "tx-tcp-segmentation"), false);
  EXPECT_EQ(feature_active("vp0", "tx-tcp6-segmentation"), false);
}

TEST_F(TapTest, offload_uso_is_kept_or_dropped_as_the_kernel_allows) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  const unsigned base = tun::kCsum | tun::kTso4 | tun::kTso6 | tun::kTsoEcn | tun::kUfo;
  auto all = tap->set_offload(base | tun::kUso4 | tun::kUso6);
  ASSERT_TRUE(all) << all.error().message;
  // Linux 6.2+ takes USO (as a pair); older kernels leave it out. Either way the answer
  // must be what the device now does.
  const bool uso = (*all & (tun::kUso4 | tun::kUso6)) != 0;
  EXPECT_EQ(*all & ~(tun::kUso4 | tun::kUso6 | tun::kUfo), base & ~tun::kUfo);
  EXPECT_EQ(feature_active("vp0", "tx-udp-segmentation"), uso);
  EXPECT_EQ(feature_active("vp0", "tx-tcp-ecn-segmentation"), true);

  // USO4 without USO6 is refused by every kernel that knows USO; the retry drops it.
  auto half = tap->set_offload(tun::kCsum | tun::kTso4 | tun::kUso4);
  ASSERT_TRUE(half) << half.error().message;
  EXPECT_EQ(*half, tun::kCsum | tun::kTso4);
  EXPECT_EQ(feature_active("vp0", "tx-udp-segmentation"), false);
  EXPECT_EQ(feature_active("vp0", "tx-tcp6-segmentation"), false);
  EXPECT_EQ(feature_active("vp0", "tx-tcp-segmentation"), true);
}

TEST_F(TapTest, offload_tso_without_csum_fails_naming_the_device) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto set = tap->set_offload(tun::kTso4);
  ASSERT_FALSE(set);
  EXPECT_EQ(set.error().code, "system");
  EXPECT_EQ(set.error().message, std::string("TUNSETOFFLOAD vp0: ") + std::strerror(EINVAL));
}

TEST_F(TapTest, carrier_off_and_on_shows_in_link_info_of_an_up_link) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  ASSERT_TRUE(nl().set_up(info->ifindex, true));
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->up);
  EXPECT_TRUE(info->carrier);  // an attached queue brings carrier

  ASSERT_TRUE(tap->set_carrier(false));
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->up);
  EXPECT_FALSE(info->carrier);

  ASSERT_TRUE(tap->set_carrier(true));
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->carrier);
}

TEST_F(TapTest, calls_on_a_closed_queue_fail_naming_the_step) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  tap->close();
  auto persist = tap->set_persist(true);
  ASSERT_FALSE(persist);
  EXPECT_EQ(persist.error().message, std::string("TUNSETPERSIST vp0: ") + std::strerror(EBADF));
  EXPECT_FALSE(link("vp0"));
}

// ---- Netlink ------------------------------------------------------------------------------

TEST_F(NetlinkTest, find_link_of_missing_name_or_ifindex_is_nullopt) {
  auto by_name = nl().find_link("nosuch0");
  ASSERT_TRUE(by_name) << by_name.error().message;
  EXPECT_FALSE(*by_name);
  auto by_index = nl().find_link(4242);
  ASSERT_TRUE(by_index) << by_index.error().message;
  EXPECT_FALSE(*by_index);
  auto bad_name = nl().find_link("a/b");
  ASSERT_TRUE(bad_name) << bad_name.error().message;
  EXPECT_FALSE(*bad_name);
  auto too_long = nl().find_link("abcdefghijklmnop");  // the kernel would say EINVAL
  ASSERT_TRUE(too_long) << too_long.error().message;
  EXPECT_FALSE(*too_long);

  auto lo = link("lo");
  ASSERT_TRUE(lo);
  EXPECT_EQ(lo->ifindex, 1);
  EXPECT_EQ(lo->kind, "");
  EXPECT_TRUE(lo->up);
}

TEST_F(NetlinkTest, set_up_and_down_on_tap) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->up);
  EXPECT_FALSE(info->carrier);  // IFF_LOWER_UP only while up
  ASSERT_TRUE(nl().set_up(info->ifindex, true));
  EXPECT_NE(output_of("ip -o link show dev vp0").find(",UP"), std::string::npos);
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->up);
  ASSERT_TRUE(nl().set_up(info->ifindex, false));
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->up);
  EXPECT_FALSE(info->carrier);
}

TEST_F(NetlinkTest, up_mtu_and_alias_apply_to_a_bridge) {
  ASSERT_TRUE(succeeds("ip link add br0 type bridge"));
  auto br0 = link("br0");
  ASSERT_TRUE(br0);
  EXPECT_EQ(br0->kind, "bridge");
  EXPECT_FALSE(br0->up);
  ASSERT_TRUE(nl().set_up(br0->ifindex, true));
  ASSERT_TRUE(nl().set_mtu(br0->ifindex, 1400));
  ASSERT_TRUE(nl().set_alias(br0->ifindex, "uplink"));
  br0 = link("br0");
  ASSERT_TRUE(br0);
  EXPECT_TRUE(br0->up);
  EXPECT_EQ(br0->mtu, 1400u);
  EXPECT_EQ(br0->alias, "uplink");
  EXPECT_NE(output_of("ip -o link show dev br0").find("mtu 1400"), std::string::npos);

  ASSERT_TRUE(nl().set_up(br0->ifindex, false));
  br0 = link("br0");
  ASSERT_TRUE(br0);
  EXPECT_FALSE(br0->up);

  auto missing = nl().set_up(4242, true);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, "system");
  EXPECT_EQ(missing.error().message.rfind("bring ifindex 4242 up: ", 0), 0u)
      << missing.error().message;
}

TEST_F(NetlinkTest, set_mac_on_tap_and_bridge) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  ASSERT_TRUE(succeeds("ip link add br0 type bridge"));
  const Mac tap_mac{{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}};
  const Mac bridge_mac{{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}};
  auto vp0 = link("vp0");
  auto br0 = link("br0");
  ASSERT_TRUE(vp0 && br0);
  ASSERT_TRUE(nl().set_mac(vp0->ifindex, tap_mac));
  ASSERT_TRUE(nl().set_mac(br0->ifindex, bridge_mac));
  vp0 = link("vp0");
  br0 = link("br0");
  ASSERT_TRUE(vp0 && br0);
  EXPECT_EQ(vp0->mac, tap_mac);
  EXPECT_EQ(br0->mac, bridge_mac);
  EXPECT_NE(output_of("ip -o link show dev vp0").find("02:11:22:33:44:55"), std::string::npos);

  auto multicast = nl().set_mac(vp0->ifindex, Mac{{0x01, 0, 0, 0, 0, 1}});
  ASSERT_FALSE(multicast);
  EXPECT_EQ(multicast.error().code, "system");
  EXPECT_EQ(multicast.error().message.rfind("set mac of vp0: ", 0), 0u)
      << multicast.error().message;
  vp0 = link("vp0");
  ASSERT_TRUE(vp0);
  EXPECT_EQ(vp0->mac, tap_mac);
}

TEST_F(NetlinkTest, set_mtu_on_tap_and_refusal_names_step_and_device) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->mtu, 1500u);
  ASSERT_TRUE(nl().set_mtu(info->ifindex, 9000));
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->mtu, 9000u);

  auto too_big = nl().set_mtu(info->ifindex, 70000);
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code, "system");
  EXPECT_EQ(too_big.error().message.rfind("set mtu of vp0: ", 0), 0u) << too_big.error().message;
  EXPECT_GT(too_big.error().message.size(), std::string("set mtu of vp0: ").size());
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->mtu, 9000u);

  auto missing = nl().set_mtu(4242, 1500);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message.rfind("set mtu of ifindex 4242: ", 0), 0u)
      << missing.error().message;
}

TEST_F(NetlinkTest, set_alias_and_clear_it) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->alias, "");
  ASSERT_TRUE(nl().set_alias(info->ifindex, "vpd: guest g1 eth0"));
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->alias, "vpd: guest g1 eth0");
  EXPECT_NE(output_of("ip link show dev vp0").find("alias vpd: guest g1 eth0"), std::string::npos);
  ASSERT_TRUE(nl().set_alias(info->ifindex, ""));
  info = link("vp0");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->alias, "");
  EXPECT_EQ(output_of("ip link show dev vp0").find("alias"), std::string::npos);
}

TEST_F(NetlinkTest, set_master_enslaves_tap_to_bridge_and_zero_releases_it) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  ASSERT_TRUE(succeeds("ip link add br0 type bridge"));
  auto vp0 = link("vp0");
  auto br0 = link("br0");
  ASSERT_TRUE(vp0 && br0);
  EXPECT_EQ(br0->kind, "bridge");
  EXPECT_EQ(vp0->master_ifindex, 0);

  ASSERT_TRUE(nl().set_master(vp0->ifindex, br0->ifindex));
  vp0 = link("vp0");
  ASSERT_TRUE(vp0);
  EXPECT_EQ(vp0->master_ifindex, br0->ifindex);
  EXPECT_NE(output_of("ip -o link show master br0").find("vp0"), std::string::npos);

  ASSERT_TRUE(nl().set_master(vp0->ifindex, 0));
  vp0 = link("vp0");
  ASSERT_TRUE(vp0);
  EXPECT_EQ(vp0->master_ifindex, 0);
  EXPECT_EQ(output_of("ip -o link show master br0").find("vp0"), std::string::npos);

  ASSERT_TRUE(nl().set_master(vp0->ifindex, 0));         // releasing a free port is no error
  auto not_a_bridge = nl().set_master(vp0->ifindex, 1);  // lo cannot be a master
  ASSERT_FALSE(not_a_bridge);
  EXPECT_EQ(not_a_bridge.error().message.rfind("set master of vp0: ", 0), 0u)
      << not_a_bridge.error().message;
}

TEST_F(NetlinkTest, ipv4_and_ipv6_addresses_read_back_sorted_without_link_local) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  ASSERT_TRUE(nl().set_up(info->ifindex, true));  // brings the kernel's fe80:: address
  EXPECT_NE(output_of("ip -6 -o addr show dev vp0 scope link").find("fe80::"), std::string::npos);

  ASSERT_TRUE(nl().add_address(info->ifindex, address(AF_INET6, "fd00:77::1", 64)));
  ASSERT_TRUE(nl().add_address(info->ifindex, address(AF_INET, "192.168.77.1", 24)));
  ASSERT_TRUE(nl().add_address(info->ifindex, address(AF_INET, "10.1.2.3", 8)));
  ASSERT_TRUE(nl().add_address(info->ifindex, address(AF_INET, "172.16.0.1", 32)));
  EXPECT_EQ(addresses_of(info->ifindex),
            (std::vector<std::string>{"10.1.2.3/8", "172.16.0.1/32", "192.168.77.1/24",
                                      "fd00:77::1/64"}));

  // `brd +` semantics, as `ip addr add` would set them.
  const std::string v4 = output_of("ip -4 -o addr show dev vp0");
  EXPECT_NE(v4.find("192.168.77.1/24 brd 192.168.77.255"), std::string::npos) << v4;
  EXPECT_NE(v4.find("10.1.2.3/8 brd 10.255.255.255"), std::string::npos) << v4;
  EXPECT_EQ(v4.find("172.16.0.1/32 brd"), std::string::npos) << v4;

  // Addresses of other interfaces are not listed, nor these as lo's.
  const auto lo_addresses = addresses_of(1);
  for (const char* mine : {"10.1.2.3/8", "172.16.0.1/32", "192.168.77.1/24", "fd00:77::1/64"}) {
    EXPECT_EQ(std::count(lo_addresses.begin(), lo_addresses.end(), mine), 0) << mine;
  }
  EXPECT_EQ(std::count(lo_addresses.begin(), lo_addresses.end(), "127.0.0.1/8"), 1);
}

TEST_F(NetlinkTest, adding_an_address_twice_succeeds_and_lists_it_once) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  for (int i = 0; i < 2; ++i) {
    auto v4 = nl().add_address(info->ifindex, address(AF_INET, "192.168.77.1", 24));
    ASSERT_TRUE(v4) << v4.error().message;
    auto v6 = nl().add_address(info->ifindex, address(AF_INET6, "fd00:77::1", 64));
    ASSERT_TRUE(v6) << v6.error().message;
  }
  EXPECT_EQ(addresses_of(info->ifindex),
            (std::vector<std::string>{"192.168.77.1/24", "fd00:77::1/64"}));
}

TEST_F(NetlinkTest, ipv6_address_present_with_another_prefix_is_not_taken_as_added) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  ASSERT_TRUE(nl().add_address(info->ifindex, address(AF_INET6, "fd00:77::1", 64)));
  auto other = nl().add_address(info->ifindex, address(AF_INET6, "fd00:77::1", 48));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().message.rfind("add address fd00:77::1/48 to vp0: ", 0), 0u)
      << other.error().message;
  EXPECT_EQ(addresses_of(info->ifindex), std::vector<std::string>{"fd00:77::1/64"});
}

TEST_F(NetlinkTest, deleting_addresses_removes_them_and_absent_ones_succeed) {
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto info = link("vp0");
  ASSERT_TRUE(info);
  const IfAddress v4 = address(AF_INET, "192.168.77.1", 24);
  const IfAddress v6 = address(AF_INET6, "fd00:77::1", 64);

  auto absent4 = nl().del_address(info->ifindex, v4);
  ASSERT_TRUE(absent4) << absent4.error().message;
  auto absent6 = nl().del_address(info->ifindex, v6);
  ASSERT_TRUE(absent6) << absent6.error().message;

  ASSERT_TRUE(nl().add_address(info->ifindex, v4));
  ASSERT_TRUE(nl().add_address(info->ifindex, v6));
  ASSERT_EQ(addresses_of(info->ifindex).size(), 2u);

  // Another prefix length is another IPv4 address: deleting it leaves this one.
  ASSERT_TRUE(nl().del_address(info->ifindex, address(AF_INET, "192.168.77.1", 16)));
  EXPECT_EQ(addresses_of(info->ifindex).size(), 2u);

  ASSERT_TRUE(nl().del_address(info->ifindex, v4));
  EXPECT_EQ(addresses_of(info->ifindex), std::vector<std::string>{"fd00:77::1/64"});
  ASSERT_TRUE(nl().del_address(info->ifindex, v6));
  EXPECT_EQ(addresses_of(info->ifindex), std::vector<std::string>{});
  EXPECT_EQ(output_of("ip -o addr show dev vp0 scope global"), "");

  auto again = nl().del_address(info->ifindex, v6);
  ASSERT_TRUE(again) << again.error().message;
}

TEST_F(NetlinkTest, address_on_missing_interface_fails_naming_it) {
  auto add = nl().add_address(4242, address(AF_INET, "192.168.77.1", 24));
  ASSERT_FALSE(add);
  EXPECT_EQ(add.error().code, "system");
  EXPECT_EQ(add.error().message.rfind("add address 192.168.77.1/24 to ifindex 4242: ", 0), 0u)
      << add.error().message;
  auto del = nl().del_address(4242, address(AF_INET6, "fd00::1", 64));
  ASSERT_FALSE(del);
  EXPECT_EQ(del.error().message.rfind("delete address fd00::1/64 from ifindex 4242: ", 0), 0u)
      << del.error().message;
}

TEST_F(NetlinkTest, delete_link_removes_bridge_and_tap) {
  ASSERT_TRUE(succeeds("ip link add br0 type bridge"));
  auto tap = Tap::open("vp0");
  ASSERT_TRUE(tap) << tap.error().message;
  ASSERT_TRUE(tap->set_persist(true));
  auto br0 = link("br0");
  auto vp0 = link("vp0");
  ASSERT_TRUE(br0 && vp0);

  ASSERT_TRUE(nl().delete_link(br0->ifindex));
  EXPECT_FALSE(link("br0"));
  EXPECT_FALSE(link(br0->ifindex));
  ASSERT_TRUE(nl().delete_link(vp0->ifindex));  // persistent and still attached
  EXPECT_FALSE(link("vp0"));
  EXPECT_EQ(link_names(), std::vector<std::string>{"lo"});

  auto gone = nl().delete_link(vp0->ifindex);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, "system");
  EXPECT_EQ(gone.error().message.rfind("delete ifindex " + std::to_string(vp0->ifindex) + ": ", 0),
            0u)
      << gone.error().message;
}

}  // namespace
}  // namespace vp::net
