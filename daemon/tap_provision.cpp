#include "daemon/tap_provision.hpp"

#include <algorithm>
#include <charconv>
#include <optional>

#include "net/offloads.hpp"
#include "net/tap.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"

namespace vp::daemon {

using control::EndpointConfig;

namespace {

// transport=tap: what a TAP gets before vpd lets go of it (after TUNSETIFF, before the
// mark). A mismatch of multiqueue is refused: QEMU asks for IFF_MULTI_QUEUE exactly when
// queues>1, and the kernel refuses a mismatch.
Result<void> prepare_for_vmm(net::Tap& tap, Accounts& accounts, Endpoint& e,
                             const EndpointConfig& c) {
  const bool multi_queue = c.queues > 1;
  if (tap.multi_queue() != multi_queue) {
    return fail("conflicting-settings",
                str(c.name, ": queues=", c.queues, " needs a ",
                    multi_queue ? "multiqueue" : "single-queue", " TAP, and ", c.name,
                    " was created ", tap.multi_queue() ? "multiqueue" : "single-queue",
                    " (destroy and create it again, with the transport and queues wanted)"));
  }
  auto ids = socket_ids(c, accounts);
  if (!ids) return std::unexpected(ids.error());
  // The kernel lets a process attach only when it matches both the owner and the group
  // that are set, so owner= alone must not bring in the default group (vpd).
  if (!c.owner.empty() && c.group.empty()) ids->second = static_cast<gid_t>(-1);
  if (auto ok = tap.set_persist(true); !ok) return ok;
  if (auto ok = tap.set_owner(ids->first, ids->second); !ok) return ok;
  // peerfeats ∩ toggles give the offloads the TAP starts with; a VMM sets its own (what the
  // guest negotiated) when it opens the TAP, so here they are only advisory.
  auto applied = tap.set_offload(net::tun_offloads_for(c.features()));
  if (!applied) return std::unexpected(applied.error());
  e.tun_offloads = *applied;
  return {};
}

}  // namespace

bool is_vpd_tap(const net::LinkInfo& link) {
  return link.kind == "tun" && link.alias == kAliasMarker;
}

Result<std::pair<uid_t, gid_t>> socket_ids(const EndpointConfig& c, Accounts& accounts) {
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  auto number = [](const std::string& s) -> std::optional<uint32_t> {
    uint32_t n = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
    return n;
  };
  if (!c.owner.empty()) {
    if (auto n = number(c.owner)) {
      uid = *n;
    } else if (auto id = accounts.user(c.owner)) {
      uid = *id;
    } else {
      return fail("bad-value", str("owner=", c.owner, " is not a user on this host"));
    }
  }
  if (!c.group.empty()) {
    if (auto n = number(c.group)) {
      gid = *n;
    } else if (auto id = accounts.group(c.group)) {
      gid = *id;
    } else {
      return fail("bad-value", str("group=", c.group, " is not a group on this host"));
    }
  } else if (auto vpd = accounts.group("vpd")) {
    gid = *vpd;  // by default the vpd group may connect, like the control socket
  }
  return std::pair{uid, gid};
}

Result<void> adopt_or_create_tap(net::Netlink& netlink, Accounts& accounts, Endpoint& e,
                                 const EndpointConfig& c, TapUse use) {
  const std::string& name = c.name;
  const bool for_vmm = use == TapUse::kForVmm;
  // No data path for a VMM's TAP. vpd's own queue (left by another transport) must go: on a
  // single-queue TAP it would keep the VMM out (EBUSY), on a multiqueue one the kernel would
  // steer frames to it that nobody reads. With no queue attached the kernel keeps the
  // carrier off; the VMM's attach turns it on.
  if (for_vmm) e.tap.close();
  if (!for_vmm && e.tap.fd() >= 0) return {};
  auto link = netlink.find_link(name);
  if (!link) return std::unexpected(link.error());
  if (*link && !is_vpd_tap(**link)) {
    return fail("name-taken", str("an interface named ", name,
                                  " exists and is not a vpd endpoint; vpd will not take it over"));
  }
  if (for_vmm && *link && (*link)->carrier) {
    // The VMM holds it (carrier follows attachment here): opening a queue now would fail
    // (single queue) or take its frames (multiqueue). Owner and group were set at creation.
    if (e.config.owner != c.owner || e.config.group != c.group) {
      log::notice(name, ": a VMM holds the TAP; the new owner/group apply from the next time ",
                  "vpd provisions it (after the VMM let go and vpd restarted or `vpctl ", name,
                  "` changed it again)");
    }
    e.ifindex = (*link)->ifindex;
    return {};
  }
  const bool created = !*link;
  auto tap = net::Tap::open(name, for_vmm ? c.queues > 1 : true);
  if (!tap) return std::unexpected(tap.error());
  auto undo = [&](Error err) -> Result<void> {
    if (created) (void)tap->set_persist(false);
    return std::unexpected(std::move(err));
  };
  if (for_vmm) {
    if (auto ok = prepare_for_vmm(*tap, accounts, e, c); !ok) return undo(ok.error());
  } else {
    if (auto ok = tap->set_persist(true); !ok) return undo(ok.error());
    // No guest yet: a bridge must not forward into this port.
    if (auto ok = tap->set_carrier(false); !ok) return undo(ok.error());
  }
  auto info = netlink.find_link(name);
  if (!info || !*info) {
    return undo(info ? Error{"system", str(name, " vanished after TUNSETIFF")} : info.error());
  }
  if ((*info)->alias != kAliasMarker) {
    if (auto ok = netlink.set_alias((*info)->ifindex, kAliasMarker); !ok) return undo(ok.error());
  }
  if (created) {
    // A multiqueue TAP has 256 transmit queues, and bringing it up would give each a
    // pfifo_fast qdisc (about 3 MB of kernel memory and 10 ms per TAP). tun never pushes
    // back on its qdisc (a full queue drops in tun_net_xmit), so that qdisc never holds a
    // frame: noqueue sends straight to tun with the same drops. Only a TAP vpd just
    // created gets it; an adopted one keeps the qdisc it has (the operator's, maybe).
    if (auto ok = netlink.set_noqueue((*info)->ifindex); !ok) {
      log::info(name, ": kept the default qdisc: ", ok.error().message);
    }
  }
  e.ifindex = (*info)->ifindex;
  e.vnet_hdr_len = 0;
  if (for_vmm) {
    log::info(name,
              created ? ": created TAP device (ifindex " : ": provisioned TAP device (ifindex ",
              e.ifindex, ") for a VMM to open by name", c.queues > 1 ? ", multiqueue" : "");
    return {};  // `tap` closes here: vpd keeps no queue of a transport=tap TAP
  }
  e.tap = std::move(*tap);
  log::info(
      name,
      created ? ": created TAP device (ifindex " : ": re-adopted existing TAP device (ifindex ",
      e.ifindex, ")");
  return {};
}

Result<void> delete_vpd_tap(net::Netlink& netlink, Endpoint& e) {
  if (e.tap.fd() >= 0) {
    (void)e.tap.set_persist(false);
  }
  auto link = e.ifindex > 0 ? netlink.find_link(e.ifindex) : netlink.find_link(e.config.name);
  if (link && *link && is_vpd_tap(**link)) {
    if (auto ok = netlink.delete_link((*link)->ifindex); !ok) return ok;
  }
  e.tap.close();
  e.ifindex = 0;
  return {};
}

void put_back(net::Netlink& netlink, int ifindex, const net::LinkInfo& was,
              const std::vector<net::IfAddress>& addresses) {
  auto now = netlink.find_link(ifindex);
  if (!now || !*now) return;
  if ((*now)->up != was.up) (void)netlink.set_up(ifindex, was.up);
  if ((*now)->mac != was.mac) (void)netlink.set_mac(ifindex, was.mac);
  if ((*now)->mtu != was.mtu) (void)netlink.set_mtu(ifindex, was.mtu);
  if ((*now)->master_ifindex != was.master_ifindex) {
    (void)netlink.set_master(ifindex, was.master_ifindex);
  }
  if (auto present = netlink.addresses(ifindex)) {
    for (const auto& a : *present) {
      if (std::find(addresses.begin(), addresses.end(), a) == addresses.end()) {
        (void)netlink.del_address(ifindex, a);
      }
    }
  }
}

}  // namespace vp::daemon
