// Registry::realise: making the kernel match an endpoint, as lists of named steps, and
// the hand-off of its guest side to the data plane.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "control/keys.hpp"
#include "daemon/registry.hpp"
#include "daemon/tap_provision.hpp"
#include "net/offloads.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

using control::EndpointConfig;

/// What the TAP steps found, for planning the link steps.
struct Registry::LinkState {
  net::LinkInfo now;
  std::optional<std::vector<net::IfAddress>> present;  // unknown when they could not be read
};

Result<void> Registry::realise(Endpoint& e, const EndpointConfig* before,
                               const EndpointConfig& want, std::vector<std::string>* problems) {
  StepRunner runner(want.name, problems ? OnFailure::kRecordAndGoOn : OnFailure::kStop);
  LinkState link;
  // Each list is planned once the one before has run: the link steps need the link, and
  // which addresses to add or remove depends on what the kernel has after the link steps.
  if (runner.run(tap_steps(e, before, want, link)) &&
      runner.run(link_steps(e, before, want, link))) {
    runner.run(address_steps(e, before, want, link));
  }
  if (problems)
    problems->insert(problems->end(), runner.problems().begin(), runner.problems().end());
  if (runner.stopped_by()) return std::unexpected(*runner.stopped_by());
  return {};
}

std::vector<Step> Registry::tap_steps(Endpoint& e, const EndpointConfig* before,
                                      const EndpointConfig& want, LinkState& link) {
  const std::string& name = want.name;
  const bool provisioned = want.transport == control::Transport::kTap;
  // While a guest has negotiated, the worker decides the header length and offloads; with
  // transport=tap the VMM does, through its own queues.
  auto guest_decides = [this, provisioned, &name] {
    return provisioned || dataplane_.session_active(name);
  };
  std::vector<Step> steps;
  steps.push_back({"tap", true, [this, &e, before, &want, provisioned]() -> Result<void> {
                     // A TAP's queue mode is fixed when it is created: vpd's own queue
                     // needs a multiqueue TAP, a VMM's (transport=tap) one exactly when
                     // queues > 1. A change that needs the other mode, while nobody has
                     // the TAP open (no guest session, no carrier), re-creates it under
                     // the same name; the later steps give it back its MAC, MTU, bridge,
                     // addresses and up/down.
                     if (before != nullptr && e.ifindex > 0) {
                       const bool had_mq =
                           before->transport != control::Transport::kTap || before->queues > 1;
                       const bool want_mq = !provisioned || want.queues > 1;
                       if (had_mq != want_mq && !dataplane_.session_active(want.name)) {
                         auto found = netlink_.find_link(e.ifindex);
                         if (!found) return std::unexpected(found.error());
                         if (*found && !(*found)->carrier) {
                           log::info(want.name, ": re-creating the TAP ",
                                     want_mq ? "multiqueue" : "single-queue",
                                     " for transport=", control::transport_name(want.transport));
                           if (auto ok = remove_tap(e); !ok) return ok;
                         }
                       }
                     }
                     if (!provisioned) {
                       return adopt_or_create_tap(netlink_, accounts_, e, want, TapUse::kVpdQueue);
                     }
                     dataplane_.detach(want.name);  // no data path: the VMM has the TAP
                     return adopt_or_create_tap(netlink_, accounts_, e, want, TapUse::kForVmm);
                   }});
  steps.push_back({"vnet-header", false, [&e, &want, guest_decides]() -> Result<void> {
                     if (guest_decides() || e.vnet_hdr_len == want.vnet_hdr_len()) return {};
                     if (auto ok = e.tap.set_vnet_hdr_size(want.vnet_hdr_len()); !ok) return ok;
                     e.vnet_hdr_len = want.vnet_hdr_len();
                     return {};
                   }});
  // Until a guest attaches, the TAP offloads follow peerfeats ∩ toggles.
  steps.push_back({"offloads", false, [&e, &want, guest_decides]() -> Result<void> {
                     if (guest_decides()) return {};
                     const unsigned offloads = net::tun_offloads_for(want.features());
                     auto applied = e.tap.set_offload(offloads);
                     if (!applied) return std::unexpected(applied.error());
                     if (*applied != offloads && e.tun_offloads != *applied) {
                       log::notice(want.name, ": the kernel refused TAP offloads ",
                                   net::tun_offload_names(offloads & ~*applied), "; using ",
                                   net::tun_offload_names(*applied));
                     }
                     e.tun_offloads = *applied;
                     return {};
                   }});
  steps.push_back({"link", true, [this, &e, &link, &name]() -> Result<void> {
                     auto found = netlink_.find_link(e.ifindex);
                     if (!found) return std::unexpected(found.error());
                     if (!*found) return fail("system", str(name, " disappeared from the kernel"));
                     link.now = **found;
                     return {};
                   }});
  return steps;
}

std::vector<Step> Registry::link_steps(Endpoint& e, const EndpointConfig* before,
                                       const EndpointConfig& want, LinkState& link) {
  const int ifindex = e.ifindex;
  const net::LinkInfo& now = link.now;
  std::vector<Step> steps;
  steps.push_back({"mac", false, [this, ifindex, &now, &want]() -> Result<void> {
                     if (now.mac == want.mac) return {};
                     return netlink_.set_mac(ifindex, want.mac);
                   }});
  steps.push_back({"mtu", false, [this, ifindex, &now, &want]() -> Result<void> {
                     if (now.mtu == want.mtu) return {};
                     return netlink_.set_mtu(ifindex, want.mtu);
                   }});
  // rx-rate=: vpd owns the TAP's root qdisc only while it is set. Set, it is (re)applied on
  // restore and when it changed (replacing a tbf drops what it queued, so not on every
  // change); cleared, the TAP gets back the noqueue root vpd gives it at creation.
  steps.push_back({"rx-rate", false, [this, ifindex, before, &want]() -> Result<void> {
                     const uint64_t was = before ? before->rx_rate : 0;
                     if (want.rx_rate != 0 && (before == nullptr || was != want.rx_rate)) {
                       const uint64_t bytes = want.rx_rate / 8;
                       // A bucket of 10 ms at the rate, and never less than four full
                       // frames: tbf drops a frame larger than its bucket (a GSO frame it
                       // splits into segments of the MTU first).
                       const uint64_t frame = uint64_t{want.mtu} + 18;
                       const auto burst = static_cast<uint32_t>(
                           std::clamp<uint64_t>(bytes / 100, 4 * frame, 64u << 20));
                       return netlink_.set_tbf(ifindex, bytes, burst, 50'000);
                     }
                     if (want.rx_rate == 0 && was != 0) return netlink_.set_noqueue(ifindex);
                     return {};
                   }});
  steps.push_back({"bridge", false, [this, ifindex, &now, &want]() -> Result<void> {
                     int master = 0;
                     if (!want.bridge.empty()) {
                       auto bridge = netlink_.find_link(want.bridge);
                       if (!bridge) return std::unexpected(bridge.error());
                       if (!*bridge || (*bridge)->kind != "bridge") {
                         return fail("no-such-bridge",
                                     str("bridge ", want.bridge, " does not exist"));
                       }
                       master = (*bridge)->ifindex;
                     } else if (now.master_ifindex != 0) {
                       // vpd manages bridge membership only: a master of another kind
                       // (Open vSwitch's ovs-system, a bond, a VRF) was someone else's
                       // choice, and stays.
                       auto current = netlink_.find_link(now.master_ifindex);
                       if (!current) return std::unexpected(current.error());
                       if (*current && (*current)->kind != "bridge") return {};
                     }
                     if (now.master_ifindex == master) return {};
                     return netlink_.set_master(ifindex, master);
                   }});
  // Down before the addresses: the kernel flushes IPv6 addresses when a link goes down
  // (keep_addr_on_down=0), and vpd keeps every address it was given.
  steps.push_back({"down", false, [this, ifindex, &now, &want]() -> Result<void> {
                     if (!now.up || want.up) return {};
                     return netlink_.set_up(ifindex, false);
                   }});
  // Read after the down step, which may have flushed some.
  steps.push_back({"read-addresses", false, [this, ifindex, &link]() -> Result<void> {
                     auto present = netlink_.addresses(ifindex);
                     if (!present) return std::unexpected(present.error());
                     link.present = std::move(*present);
                     return {};
                   }});
  return steps;
}

std::vector<Step> Registry::address_steps(Endpoint& e, const EndpointConfig* before,
                                          const EndpointConfig& want, const LinkState& link) {
  const int ifindex = e.ifindex;
  const net::LinkInfo& now = link.now;
  std::vector<Step> steps;
  if (link.present) {
    // One step per address, so that on restore one refused address does not cost the rest.
    auto has = [](const std::vector<net::IfAddress>& list, const net::IfAddress& a) {
      return std::find(list.begin(), list.end(), a) != list.end();
    };
    // Only addresses vpd itself put there are removed.
    for (const auto& a : before ? before->addresses : std::vector<net::IfAddress>{}) {
      if (has(want.addresses, a) || !has(*link.present, a)) continue;
      steps.push_back({str("remove-address ", a.to_string()), false,
                       [this, ifindex, a] { return netlink_.del_address(ifindex, a); }});
    }
    for (const auto& a : want.addresses) {
      if (has(*link.present, a)) continue;
      steps.push_back({str("address ", a.to_string()), false,
                       [this, ifindex, a] { return netlink_.add_address(ifindex, a); }});
    }
  }
  steps.push_back({"up", false, [this, ifindex, &now, &want]() -> Result<void> {
                     if (now.up || !want.up) return {};
                     return netlink_.set_up(ifindex, true);
                   }});
  steps.push_back(
      {"dataplane", false, [this, &e, before, &want] { return sync_dataplane(e, before, want); }});
  return steps;
}

Result<void> Registry::sync_dataplane(Endpoint& e, const EndpointConfig* before,
                                      const EndpointConfig& c) {
  // transport=tap: the VMM opens the TAP itself; vpd has no data path to run.
  if (c.transport == control::Transport::kTap || e.tap.fd() < 0) {
    dataplane_.detach(c.name);
    return {};
  }
  // A change the guest does not see (priority, bridge, addresses...) leaves the session be.
  if (before && dataplane_.attached(c.name) && !control::guest_sees_change(*before, c)) {
    if (before->priority != c.priority) dataplane_.set_priority(c.name, c.priority);
    if (before->tx_rate != c.tx_rate) dataplane_.set_tx_rate(c.name, c.tx_rate);
    return {};
  }
  if (c.queues > 1 && !e.tap.multi_queue()) {
    return fail("bad-value",
                str(c.name, ": queues=", c.queues, " needs a multiqueue TAP, and ", c.name,
                    " was created single-queue (destroy and create it again, or use queues=1)"));
  }
  // The old attachment lets go of its socket first; the guest reconnects to the new one.
  dataplane_.detach(c.name);
  Fd listener;
  if (!c.bind.empty()) {
    auto ids = socket_ids(c, accounts_);
    if (!ids) return std::unexpected(ids.error());
    auto fd = listen_unix(c.bind, c.socket_mode, ids->second);
    if (!fd) {
      return fail(fd.error().code == "address-in-use" ? "duplicate-path" : "bad-value",
                  str(c.name, ": cannot listen on bind=", c.bind, ": ", fd.error().message));
    }
    if (ids->first != static_cast<uid_t>(-1) &&
        ::chown(c.bind.c_str(), ids->first, static_cast<gid_t>(-1)) != 0) {
      const int chown_errno = errno;
      ::unlink(c.bind.c_str());  // not left behind at mode 0000
      return sys_fail(str(c.name, ": chown ", c.bind), chown_errno);
    }
    listener = std::move(*fd);
  }
  // One TAP queue per queue pair: pair 0 gets a handle on the endpoint's own queue, the
  // others fresh queues of the multiqueue TAP. They are opened here, on the control thread,
  // so that a failure is the request's answer and the worker never creates a TAP by name.
  std::vector<net::Tap> taps;
  auto tap = e.tap.duplicate();
  if (!tap) return std::unexpected(tap.error());
  taps.push_back(std::move(*tap));
  while (taps.size() < c.queues) {
    auto queue = net::Tap::open(c.name);
    if (!queue) {
      return fail(queue.error().code, str(c.name, ": cannot open TAP queue ", taps.size() + 1,
                                          " of ", c.queues, ": ", queue.error().message));
    }
    if (!queue->multi_queue()) {
      return fail("system", str(c.name, ": TAP queue ", taps.size() + 1, " of ", c.queues,
                                " opened single-queue"));
    }
    taps.push_back(std::move(*queue));
  }
  dataplane_.attach(c, std::move(taps), std::move(listener));
  return {};
}

}  // namespace vp::daemon
