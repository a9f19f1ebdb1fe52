#include "net/link.hpp"

#include <linux/if.h>  // IFF_LOWER_UP, which <net/if.h> lacks; do not add <net/if.h> here
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/tbf.h>
#include <netlink/route/tc.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "net/ifname.hpp"
#include "sys/str.hpp"

namespace vp::net {
namespace {

struct LinkPut {
  void operator()(rtnl_link* link) const noexcept { rtnl_link_put(link); }
};
struct AddrPut {
  void operator()(rtnl_addr* addr) const noexcept { rtnl_addr_put(addr); }
};
struct NlAddrPut {
  void operator()(nl_addr* addr) const noexcept { nl_addr_put(addr); }
};
struct CacheFree {
  void operator()(nl_cache* cache) const noexcept { nl_cache_free(cache); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkPut>;
using AddrPtr = std::unique_ptr<rtnl_addr, AddrPut>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrPut>;
using CachePtr = std::unique_ptr<nl_cache, CacheFree>;

/// Code "system", "<step>: <libnl's message>"; `err` is a (negative) NLE_* code.
std::unexpected<Error> nl_fail(std::string_view step, int err) {
  return fail("system", str(step, ": ", nl_geterror(err)));
}

bool is_missing(int err) { return err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV; }

size_t address_length(int family) { return family == AF_INET ? 4 : 16; }

LinkInfo to_link_info(rtnl_link* link) {
  LinkInfo info;
  info.ifindex = rtnl_link_get_ifindex(link);
  if (const char* name = rtnl_link_get_name(link)) info.name = name;
  if (const char* kind = rtnl_link_get_type(link)) info.kind = kind;
  if (nl_addr* mac = rtnl_link_get_addr(link);
      mac != nullptr && nl_addr_get_len(mac) == info.mac.bytes.size()) {
    std::memcpy(info.mac.bytes.data(), nl_addr_get_binary_addr(mac), info.mac.bytes.size());
  }
  info.mtu = rtnl_link_get_mtu(link);
  const unsigned flags = rtnl_link_get_flags(link);
  info.up = (flags & IFF_UP) != 0;
  info.carrier = (flags & IFF_LOWER_UP) != 0;
  info.master_ifindex = rtnl_link_get_master(link);
  if (const char* alias = rtnl_link_get_ifalias(link)) info.alias = alias;
  return info;
}

}  // namespace

struct Netlink::Impl {
  nl_sock* sock = nullptr;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (sock != nullptr) nl_socket_free(sock);  // also closes the socket
  }

  /// The link with `ifindex`, or a libnl error code.
  std::pair<LinkPtr, int> get(int ifindex) const {
    if (ifindex <= 0) return {nullptr, -NLE_OBJ_NOTFOUND};
    rtnl_link* link = nullptr;
    const int err = rtnl_link_get_kernel(sock, ifindex, nullptr, &link);
    return {LinkPtr(err < 0 ? nullptr : link), err < 0 ? err : 0};
  }

  /// "vp0" when the kernel still knows `ifindex`, else "ifindex 7"; for error messages.
  std::string describe(int ifindex) const {
    auto [link, err] = get(ifindex);
    if (link != nullptr) {
      if (const char* name = rtnl_link_get_name(link.get())) return name;
    }
    return str("ifindex ", ifindex);
  }

  /// Applies what `fill` sets on an empty rtnl_link to the interface `ifindex`. Errors read
  /// "<before><name><after>: <libnl's message>", e.g. "set mtu of vp0: ...".
  template <class Fill>
  Result<void> change(int ifindex, std::string_view before, std::string_view after, Fill&& fill) {
    auto [orig, err] = get(ifindex);
    if (orig == nullptr) return nl_fail(str(before, "ifindex ", ifindex, after), err);
    const char* name = rtnl_link_get_name(orig.get());
    const std::string step = str(before, name != nullptr ? name : "?", after);
    LinkPtr changes(rtnl_link_alloc());
    if (changes == nullptr) return nl_fail(step, -NLE_NOMEM);
    if (const int e = fill(changes.get()); e < 0) return nl_fail(step, e);
    // RTM_NEWLINK on orig's ifindex; libnl falls back to RTM_SETLINK where that is refused.
    if (const int e = rtnl_link_change(sock, orig.get(), changes.get(), 0); e < 0) {
      return nl_fail(step, e);
    }
    return {};
  }

  /// An rtnl_addr for `address` on `ifindex` (a template for RTM_NEWADDR / RTM_DELADDR).
  std::pair<AddrPtr, int> build(int ifindex, const IfAddress& address) const {
    AddrPtr addr(rtnl_addr_alloc());
    NlAddrPtr local(
        nl_addr_build(address.family, address.bytes.data(), address_length(address.family)));
    if (addr == nullptr || local == nullptr) return {nullptr, -NLE_NOMEM};
    rtnl_addr_set_ifindex(addr.get(), ifindex);
    rtnl_addr_set_family(addr.get(), address.family);
    if (const int err = rtnl_addr_set_local(addr.get(), local.get()); err < 0) {
      return {nullptr, err};
    }
    rtnl_addr_set_prefixlen(addr.get(), address.prefix);
    return {std::move(addr), 0};
  }
};

Netlink::Netlink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Netlink::Netlink(Netlink&&) noexcept = default;
Netlink& Netlink::operator=(Netlink&&) noexcept = default;
Netlink::~Netlink() = default;

Result<Netlink> Netlink::open() {
  auto impl = std::make_unique<Impl>();
  impl->sock = nl_socket_alloc();
  if (impl->sock == nullptr) return nl_fail("open route netlink socket", -NLE_NOMEM);
  if (const int err = nl_connect(impl->sock, NETLINK_ROUTE); err < 0) {
    return nl_fail("connect to route netlink", err);
  }
  return Netlink(std::move(impl));
}

Result<std::optional<LinkInfo>> Netlink::find_link(std::string_view name) {
  // A name the kernel could never accept names no interface; asking would only get EINVAL.
  if (!validate_ifname(name)) return std::nullopt;
  const std::string n(name);
  rtnl_link* raw = nullptr;
  const int err = rtnl_link_get_kernel(impl_->sock, 0, n.c_str(), &raw);
  if (is_missing(err)) return std::nullopt;
  if (err < 0) return nl_fail(str("look up ", name), err);
  LinkPtr link(raw);
  return to_link_info(link.get());
}

Result<std::optional<LinkInfo>> Netlink::find_link(int ifindex) {
  auto [link, err] = impl_->get(ifindex);
  if (is_missing(err)) return std::nullopt;
  if (err < 0) return nl_fail(str("look up ifindex ", ifindex), err);
  return to_link_info(link.get());
}

Result<void> Netlink::set_up(int ifindex, bool up) {
  return impl_->change(ifindex, "bring ", up ? " up" : " down", [&](rtnl_link* changes) {
    if (up) {
      rtnl_link_set_flags(changes, IFF_UP);
    } else {
      rtnl_link_unset_flags(changes, IFF_UP);
    }
    return 0;
  });
}

Result<void> Netlink::set_mac(int ifindex, const Mac& mac) {
  return impl_->change(ifindex, "set mac of ", "", [&](rtnl_link* changes) {
    NlAddrPtr addr(nl_addr_build(AF_LLC, mac.bytes.data(), mac.bytes.size()));
    if (addr == nullptr) return -NLE_NOMEM;
    rtnl_link_set_addr(changes, addr.get());  // takes its own reference
    return 0;
  });
}

Result<void> Netlink::set_mtu(int ifindex, uint32_t mtu) {
  return impl_->change(ifindex, "set mtu of ", "", [&](rtnl_link* changes) {
    rtnl_link_set_mtu(changes, mtu);
    return 0;
  });
}

Result<void> Netlink::set_master(int ifindex, int master_ifindex) {
  // IFLA_MASTER 0 is how the kernel is told to release a port from its master.
  return impl_->change(ifindex, master_ifindex != 0 ? "set master of " : "release ",
                       master_ifindex != 0 ? "" : " from its master", [&](rtnl_link* changes) {
                         rtnl_link_set_master(changes, master_ifindex);
                         return 0;
                       });
}

Result<void> Netlink::set_alias(int ifindex, std::string_view alias) {
  // An empty IFLA_IFALIAS ("\0") clears the alias: the kernel then reports none.
  const std::string text(alias);
  return impl_->change(ifindex, "set alias of ", "", [&](rtnl_link* changes) {
    rtnl_link_set_ifalias(changes, text.c_str());
    return 0;
  });
}

namespace {
struct QdiscPut {
  void operator()(rtnl_qdisc* q) const noexcept { rtnl_qdisc_put(q); }
};
}  // namespace

Result<void> Netlink::set_tbf(int ifindex, uint64_t bytes_per_second, uint32_t burst,
                              uint32_t latency_us) {
  std::unique_ptr<rtnl_qdisc, QdiscPut> qdisc(rtnl_qdisc_alloc());
  const std::string step = str("set the root qdisc of ", impl_->describe(ifindex), " to tbf rate ",
                               bytes_per_second, " bytes/s");
  if (qdisc == nullptr) return nl_fail(step, -NLE_NOMEM);
  if (bytes_per_second == 0 || bytes_per_second > INT32_MAX) return nl_fail(step, -NLE_RANGE);
  rtnl_tc* tc = TC_CAST(qdisc.get());
  rtnl_tc_set_ifindex(tc, ifindex);
  rtnl_tc_set_parent(tc, TC_H_ROOT);
  rtnl_tc_set_handle(tc, TC_HANDLE(1, 0));
  if (const int err = rtnl_tc_set_kind(tc, "tbf"); err < 0) return nl_fail(step, err);
  rtnl_qdisc_tbf_set_rate(qdisc.get(), static_cast<int>(bytes_per_second), static_cast<int>(burst),
                          0);
  // The queue limit from the latency needs the rate set first.
  if (const int err =
          rtnl_qdisc_tbf_set_limit_by_latency(qdisc.get(), static_cast<int>(latency_us));
      err < 0) {
    return nl_fail(step, err);
  }
  if (const int err = rtnl_qdisc_add(impl_->sock, qdisc.get(), NLM_F_CREATE | NLM_F_REPLACE);
      err < 0) {
    return nl_fail(step, err);
  }
  return {};
}

Result<void> Netlink::set_noqueue(int ifindex) {
  std::unique_ptr<rtnl_qdisc, QdiscPut> qdisc(rtnl_qdisc_alloc());
  const std::string step = str("set the root qdisc of ", impl_->describe(ifindex), " to noqueue");
  if (qdisc == nullptr) return nl_fail(step, -NLE_NOMEM);
  rtnl_tc* tc = TC_CAST(qdisc.get());
  rtnl_tc_set_ifindex(tc, ifindex);
  rtnl_tc_set_parent(tc, TC_H_ROOT);
  if (const int err = rtnl_tc_set_kind(tc, "noqueue"); err < 0) return nl_fail(step, err);
  if (const int err = rtnl_qdisc_add(impl_->sock, qdisc.get(), NLM_F_CREATE | NLM_F_REPLACE);
      err < 0) {
    return nl_fail(step, err);
  }
  return {};
}

namespace {

/// The addresses of `ifindex` only, filtered by the kernel: an RTM_GETADDR dump with
/// ifa_index set, on a socket with NETLINK_GET_STRICT_CHK (Linux 4.20 on). Without the
/// filter a dump returns every address of the host (each endpoint has an IPv6 link-local
/// one), so one look-up would cost O(endpoints). Null when the kernel cannot filter.
CachePtr filtered_address_dump(nl_sock* sock, int ifindex) {
  nl_cache* raw = nullptr;
  if (nl_cache_alloc_name("route/addr", &raw) < 0) return nullptr;
  CachePtr cache(raw);
  const int fd = nl_socket_get_fd(sock);
  int on = 1;
  if (::setsockopt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &on, sizeof on) != 0) return nullptr;
  ifaddrmsg request{};
  request.ifa_family = AF_UNSPEC;
  request.ifa_index = static_cast<uint32_t>(ifindex);
  int err = nl_send_simple(sock, RTM_GETADDR, NLM_F_DUMP, &request, sizeof request);
  if (err >= 0) err = nl_cache_pickup(sock, cache.get());
  // The rest of libnl sends dump requests with a short header, which strict checking
  // refuses: the option is on for this dump only.
  int off = 0;
  ::setsockopt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &off, sizeof off);
  if (err < 0) return nullptr;
  return cache;
}

}  // namespace

Result<std::vector<IfAddress>> Netlink::addresses(int ifindex) {
  CachePtr cache = filtered_address_dump(impl_->sock, ifindex);
  if (!cache) {
    nl_cache* raw = nullptr;
    if (const int err = rtnl_addr_alloc_cache(impl_->sock, &raw); err < 0) {
      return nl_fail(str("list addresses of ", impl_->describe(ifindex)), err);
    }
    cache.reset(raw);
  }
  std::vector<IfAddress> out;
  for (nl_object* obj = nl_cache_get_first(cache.get()); obj != nullptr;
       obj = nl_cache_get_next(obj)) {
    auto* addr = reinterpret_cast<rtnl_addr*>(obj);  // the cache holds only rtnl_addr
    if (rtnl_addr_get_ifindex(addr) != ifindex) continue;
    const int family = rtnl_addr_get_family(addr);
    if (family != AF_INET && family != AF_INET6) continue;
    const nl_addr* local = rtnl_addr_get_local(addr);
    if (local == nullptr || nl_addr_get_len(local) != address_length(family)) continue;
    IfAddress a;
    a.family = family;
    std::memcpy(a.bytes.data(), nl_addr_get_binary_addr(local), address_length(family));
    a.prefix = static_cast<uint8_t>(rtnl_addr_get_prefixlen(addr));
    // fe80::/10 is the kernel's own link-local address, not configuration.
    if (family == AF_INET6 && a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80) continue;
    out.push_back(a);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> Netlink::add_address(int ifindex, const IfAddress& address) {
  const int max_prefix = address.family == AF_INET ? 32 : 128;
  if ((address.family != AF_INET && address.family != AF_INET6) || address.prefix > max_prefix) {
    return fail("invalid-address", str("cannot add address with family ", address.family,
                                       " and prefix ", static_cast<int>(address.prefix)));
  }
  auto step = [&] {
    return str("add address ", address.to_string(), " to ", impl_->describe(ifindex));
  };
  auto [addr, err] = impl_->build(ifindex, address);
  if (addr == nullptr) return nl_fail(step(), err);
  if (address.family == AF_INET && address.prefix <= 30) {
    // What `ip addr add A/N brd +` sets: the host part all ones (not for /31 and /32).
    const uint32_t host_mask = address.prefix == 0 ? ~0u : (1u << (32 - address.prefix)) - 1;
    std::array<uint8_t, 4> brd{};
    for (size_t i = 0; i < brd.size(); ++i) {
      brd[i] = static_cast<uint8_t>(address.bytes[i] | (host_mask >> (8 * (3 - i))));
    }
    NlAddrPtr broadcast(nl_addr_build(AF_INET, brd.data(), brd.size()));
    if (broadcast == nullptr) return nl_fail(step(), -NLE_NOMEM);
    if (const int e = rtnl_addr_set_broadcast(addr.get(), broadcast.get()); e < 0) {
      return nl_fail(step(), e);
    }
  }
  err = rtnl_addr_add(impl_->sock, addr.get(), 0);
  if (err == -NLE_EXIST) {
    // IPv4 tells addresses apart by prefix too, IPv6 only by address: fd00::1/48 "exists"
    // when fd00::1/64 is there. Only the very same address counts as already done.
    auto present = addresses(ifindex);
    if (!present) return std::unexpected(std::move(present.error()));
    if (std::find(present->begin(), present->end(), address) != present->end()) return {};
    return fail("system", str(step(), ": the address is already there with another prefix length"));
  }
  if (err < 0) return nl_fail(step(), err);
  return {};
}

Result<void> Netlink::del_address(int ifindex, const IfAddress& address) {
  auto step = [&] {
    return str("delete address ", address.to_string(), " from ", impl_->describe(ifindex));
  };
  if (address.family != AF_INET && address.family != AF_INET6) {
    return fail("invalid-address", str("cannot delete address with family ", address.family));
  }
  auto [addr, err] = impl_->build(ifindex, address);
  if (addr == nullptr) return nl_fail(step(), err);
  err = rtnl_addr_delete(impl_->sock, addr.get(), 0);
  if (err == -NLE_NOADDR) return {};  // EADDRNOTAVAIL: it is not there, which is the goal
  if (err < 0) return nl_fail(step(), err);
  return {};
}

Result<void> Netlink::delete_link(int ifindex) {
  auto step = [&] { return str("delete ", impl_->describe(ifindex)); };
  if (ifindex <= 0) return nl_fail(step(), -NLE_OBJ_NOTFOUND);
  LinkPtr link(rtnl_link_alloc());
  if (link == nullptr) return nl_fail(step(), -NLE_NOMEM);
  rtnl_link_set_ifindex(link.get(), ifindex);
  if (const int err = rtnl_link_delete(impl_->sock, link.get()); err < 0) {
    return nl_fail(step(), err);
  }
  return {};
}

}  // namespace vp::net
