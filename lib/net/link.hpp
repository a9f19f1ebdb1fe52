#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/address.hpp"
#include "net/mac.hpp"
#include "sys/error.hpp"

namespace vp::net {

/// What the kernel says about one interface.
struct LinkInfo {
  int ifindex = 0;
  std::string name;
  std::string kind;  // rtnl link type: "tun", "bridge", "veth", "" when none
  Mac mac;
  uint32_t mtu = 0;
  bool up = false;       // IFF_UP
  bool carrier = false;  // IFF_LOWER_UP
  int master_ifindex = 0;
  std::string alias;  // IFLA_IFALIAS
};

/// A route netlink socket (libnl-route-3). Every call is synchronous; errors are
/// code "system" with the step and libnl's message, e.g. "set mtu of vp0: Invalid argument".
class Netlink {
 public:
  static Result<Netlink> open();
  Netlink(Netlink&&) noexcept;
  Netlink& operator=(Netlink&&) noexcept;
  ~Netlink();

  /// The interface called `name`, or nullopt when there is none.
  Result<std::optional<LinkInfo>> find_link(std::string_view name);
  Result<std::optional<LinkInfo>> find_link(int ifindex);

  Result<void> set_up(int ifindex, bool up);
  Result<void> set_mac(int ifindex, const Mac& mac);
  Result<void> set_mtu(int ifindex, uint32_t mtu);
  /// Enslaves to the bridge `master_ifindex`; 0 releases from any master.
  Result<void> set_master(int ifindex, int master_ifindex);
  Result<void> set_alias(int ifindex, std::string_view alias);
  /// Makes `noqueue` the root qdisc, so that bringing the link up creates no default
  /// qdisc. Call it while the link is down; the operator may replace it later.
  Result<void> set_noqueue(int ifindex);
  /// Makes a token bucket filter the root qdisc: what the link sends is shaped to
  /// `bytes_per_second` with a bucket of `burst` bytes, and at most `latency_us` of it waits
  /// in the queue (more is dropped, as tc-tbf(8) does).
  Result<void> set_tbf(int ifindex, uint64_t bytes_per_second, uint32_t burst, uint32_t latency_us);

  /// Global-scope and site addresses of the interface (IPv6 link-local fe80::/10 is the
  /// kernel's and is left out).
  Result<std::vector<IfAddress>> addresses(int ifindex);
  /// Adding an address that is already there succeeds; so does deleting one that is not.
  Result<void> add_address(int ifindex, const IfAddress& address);
  Result<void> del_address(int ifindex, const IfAddress& address);

  /// RTM_DELLINK.
  Result<void> delete_link(int ifindex);

 private:
  struct Impl;
  explicit Netlink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vp::net
