#include "daemon/registry.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <set>
#include <tuple>

#include "net/ethtool.hpp"
#include "net/ifname.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"
#include "vp/version.hpp"

namespace vp::daemon {

using control::EndpointConfig;
using nlohmann::json;

namespace {

std::string join(const std::vector<std::string>& words, std::string_view sep) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += sep;
    out += w;
  }
  return out;
}

}  // namespace

Registry::Registry(net::Netlink netlink, Paths paths, std::string machine_id, Dataplane& dataplane)
    : netlink_(std::move(netlink)),
      dataplane_(dataplane),
      paths_(std::move(paths)),
      machine_id_(std::move(machine_id)) {}

Registry::~Registry() {
  // Workers let go of every endpoint before the TAP handles here close.
  for (const auto& [name, e] : endpoints_) dataplane_.detach(name);
}
/// The uid and gid a bind socket (or a tap-transport TAP) is handed to; -1 keeps root's.

static Result<std::pair<uid_t, gid_t>> socket_ids(const EndpointConfig& c) {
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
    } else if (const passwd* pw = ::getpwnam(c.owner.c_str())) {
      uid = pw->pw_uid;
    } else {
      return fail("bad-value", str("owner=", c.owner, " is not a user on this host"));
    }
  }
  if (!c.group.empty()) {
    if (auto n = number(c.group)) {
      gid = *n;
    } else if (const group* gr = ::getgrnam(c.group.c_str())) {
      gid = gr->gr_gid;
    } else {
      return fail("bad-value", str("group=", c.group, " is not a group on this host"));
    }
  } else if (const group* vpd = ::getgrnam("vpd")) {
    gid = vpd->gr_gid;  // by default the vpd group may connect, like the control socket
  }
  return std::pair{uid, gid};
}

Result<void> Registry::sync_dataplane(Endpoint& e, const EndpointConfig* before,
                                      const EndpointConfig& c) {
  // transport=tap: the VMM opens the TAP itself; vpd has no data path to run.
  if (c.transport == control::Transport::kTap || e.tap.fd() < 0) {
    dataplane_.detach(c.name);
    return {};
  }
  auto guest_sees = [](const EndpointConfig& x) {
    return std::tie(x.transport, x.peer, x.bind, x.peerfeats, x.legacy, x.mtu, x.toggles, x.queues,
                    x.socket_mode, x.owner, x.group, x.allow, x.guest_mac, x.lock_mac);
  };
  if (before && dataplane_.attached(c.name) && guest_sees(*before) == guest_sees(c)) {
    if (before->priority != c.priority) dataplane_.set_priority(c.name, c.priority);
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
    auto ids = socket_ids(c);
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

size_t Registry::troubled() const {
  return std::count_if(endpoints_.begin(), endpoints_.end(),
                       [](const auto& kv) { return !kv.second.problems.empty(); });
}

void Registry::normalize(EndpointConfig& c) const {
  const std::string default_bind = str(paths_.runtime_dir, "/", c.name, ".sock");
  if (c.transport == control::Transport::kTap) {
    if (c.bind == default_bind) c.bind.clear();
  } else if (c.peer.empty() && c.bind.empty()) {
    c.bind = default_bind;
  }
}

Result<void> Registry::check(const EndpointConfig& c, const Endpoint* self) {
  for (const auto& [name, other] : endpoints_) {
    if (&other == self) continue;
    if (other.config.mac == c.mac) {
      return fail("duplicate-mac", str("mac ", c.mac.to_string(), " is already used by ", name,
                                       "; every endpoint needs its own address"));
    }
    for (const std::string* path : {&c.bind, &c.peer}) {
      if (path->empty()) continue;
      if (*path == other.config.bind || *path == other.config.peer) {
        return fail("duplicate-path",
                    str(*path, " is already a socket of ", name, "; give each endpoint its own"));
      }
    }
  }
  if (auto ids = socket_ids(c); !ids) return std::unexpected(ids.error());
  if (!c.bridge.empty()) {
    auto bridge = netlink_.find_link(c.bridge);
    if (!bridge) return std::unexpected(bridge.error());
    if (!*bridge) {
      return fail("no-such-bridge",
                  str("bridge ", c.bridge, " does not exist; create it first (e.g. `ip link add ",
                      c.bridge, " type bridge`) or leave bridge= out"));
    }
    if ((*bridge)->kind != "bridge") {
      return fail("no-such-bridge",
                  str(c.bridge, " is a ", (*bridge)->kind.empty() ? "plain" : (*bridge)->kind,
                      " interface, not a bridge"));
    }
  }
  if (!self || self->tap.fd() < 0) {
    auto link = netlink_.find_link(c.name);
    if (!link) return std::unexpected(link.error());
    if (*link && !((*link)->kind == "tun" && (*link)->alias == kAliasMarker) &&
        !(self && self->ifindex == (*link)->ifindex)) {
      return fail("name-taken", str("an interface named ", c.name,
                                    " already exists and is not a vpd endpoint; vpd never takes "
                                    "over other interfaces, so pick another name"));
    }
  }
  return {};
}

Result<void> Registry::ensure_tap(Endpoint& e) {
  if (e.tap.fd() >= 0) return {};
  const std::string& name = e.config.name;
  auto link = netlink_.find_link(name);
  if (!link) return std::unexpected(link.error());
  if (*link && !((*link)->kind == "tun" && (*link)->alias == kAliasMarker)) {
    return fail("name-taken", str("an interface named ", name,
                                  " exists and is not a vpd endpoint; vpd will not take it over"));
  }
  const bool created = !*link;
  auto tap = net::Tap::open(name);
  if (!tap) return std::unexpected(tap.error());
  auto undo = [&](Error err) -> Result<void> {
    if (created) {
      (void)tap->set_persist(false);
    }
    return std::unexpected(std::move(err));
  };
  if (auto ok = tap->set_persist(true); !ok) return undo(ok.error());
  // No guest yet: a bridge must not forward into this port.
  if (auto ok = tap->set_carrier(false); !ok) return undo(ok.error());
  auto info = netlink_.find_link(name);
  if (!info || !*info) {
    return undo(info ? Error{"system", str(name, " vanished after TUNSETIFF")} : info.error());
  }
  if ((*info)->alias != kAliasMarker) {
    if (auto ok = netlink_.set_alias((*info)->ifindex, kAliasMarker); !ok) return undo(ok.error());
  }
  e.ifindex = (*info)->ifindex;
  e.tap = std::move(*tap);
  e.vnet_hdr_len = 0;
  if (created) {
    log::info(name, ": created TAP device (ifindex ", e.ifindex, ")");
  } else {
    log::info(name, ": re-adopted existing TAP device (ifindex ", e.ifindex, ")");
  }
  return {};
}

Result<void> Registry::provision_tap(Endpoint& e, const EndpointConfig& c) {
  const std::string& name = c.name;
  // No data path in this mode. vpd's own queue (left by another transport) must go too: on
  // a single-queue TAP it would keep the VMM out (EBUSY), on a multiqueue one the kernel
  // would steer frames to it that nobody reads. With no queue attached the kernel keeps the
  // carrier off; the VMM's attach turns it on.
  dataplane_.detach(name);
  e.tap.close();
  auto link = netlink_.find_link(name);
  if (!link) return std::unexpected(link.error());
  if (*link && !((*link)->kind == "tun" && (*link)->alias == kAliasMarker)) {
    return fail("name-taken", str("an interface named ", name,
                                  " exists and is not a vpd endpoint; vpd will not take it over"));
  }
  if (*link && (*link)->carrier) {
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
  const bool multi_queue = c.queues > 1;
  auto tap = net::Tap::open(name, multi_queue);
  if (!tap) return std::unexpected(tap.error());
  auto undo = [&](Error err) -> Result<void> {
    if (created) (void)tap->set_persist(false);
    return std::unexpected(std::move(err));
  };
  if (tap->multi_queue() != multi_queue) {
    // QEMU asks for IFF_MULTI_QUEUE exactly when queues>1, and the kernel refuses a mismatch.
    return undo(Error{
        "conflicting-settings",
        str(name, ": queues=", c.queues, " needs a ", multi_queue ? "multiqueue" : "single-queue",
            " TAP, and ", name, " was created ", tap->multi_queue() ? "multiqueue" : "single-queue",
            " (destroy and create it again, with the transport and queues wanted)")});
  }
  auto ids = socket_ids(c);
  if (!ids) return undo(ids.error());
  // The kernel lets a process attach only when it matches both the owner and the group
  // that are set, so owner= alone must not bring in the default group (vpd).
  if (!c.owner.empty() && c.group.empty()) ids->second = static_cast<gid_t>(-1);
  if (auto ok = tap->set_persist(true); !ok) return undo(ok.error());
  if (auto ok = tap->set_owner(ids->first, ids->second); !ok) return undo(ok.error());
  // peerfeats ∩ toggles give the offloads the TAP starts with; a VMM sets its own (what the
  // guest negotiated) when it opens the TAP, so here they are only advisory.
  if (auto applied = tap->set_offload(net::tun_offloads_for(c.features()))) {
    e.tun_offloads = *applied;
  } else {
    return undo(applied.error());
  }
  auto info = netlink_.find_link(name);
  if (!info || !*info) {
    return undo(info ? Error{"system", str(name, " vanished after TUNSETIFF")} : info.error());
  }
  if ((*info)->alias != kAliasMarker) {
    if (auto ok = netlink_.set_alias((*info)->ifindex, kAliasMarker); !ok) return undo(ok.error());
  }
  e.ifindex = (*info)->ifindex;
  e.vnet_hdr_len = 0;
  log::info(name, created ? ": created TAP device (ifindex " : ": provisioned TAP device (ifindex ",
            e.ifindex, ") for a VMM to open by name", multi_queue ? ", multiqueue" : "");
  return {};  // `tap` closes here: vpd keeps no queue of a transport=tap TAP
}

Result<void> Registry::realise(Endpoint& e, const EndpointConfig* before,
                               const EndpointConfig& want, std::vector<std::string>* problems) {
  // Strict mode stops at the first failure (the caller undoes); best-effort mode (restore)
  // records each failure and goes on, so one missing bridge does not cost the addresses.
  std::optional<Error> failed;
  auto check = [&](Result<void> r) -> bool {
    if (r) return true;
    if (problems) {
      problems->push_back(r.error().message);
      return true;
    }
    failed = r.error();
    return false;
  };
  const bool provisioned = want.transport == control::Transport::kTap;
  if (provisioned) {
    if (!check(provision_tap(e, want))) return std::unexpected(*failed);
    if (e.ifindex == 0) return {};  // best effort: nothing more can be done without the TAP
  } else {
    if (!check(ensure_tap(e))) return std::unexpected(*failed);
    if (e.tap.fd() < 0) return {};  // best effort: nothing more can be done without the TAP
  }
  const std::string& name = want.name;
  // While a guest has negotiated, the worker decides the header length and offloads; with
  // transport=tap the VMM does, through its own queues.
  const bool guest_decides = provisioned || dataplane_.session_active(name);
  if (!guest_decides && e.vnet_hdr_len != want.vnet_hdr_len()) {
    if (!check(e.tap.set_vnet_hdr_size(want.vnet_hdr_len()))) return std::unexpected(*failed);
    e.vnet_hdr_len = want.vnet_hdr_len();
  }
  // Until a guest attaches, the TAP offloads follow peerfeats ∩ toggles.
  const unsigned offloads = net::tun_offloads_for(want.features());
  auto applied = guest_decides ? Result<unsigned>(e.tun_offloads) : e.tap.set_offload(offloads);
  if (!applied) {
    if (!check(std::unexpected(applied.error()))) return std::unexpected(*failed);
  } else {
    if (*applied != offloads && e.tun_offloads != *applied) {
      log::notice(name, ": the kernel refused TAP offloads ",
                  net::tun_offload_names(offloads & ~*applied), "; using ",
                  net::tun_offload_names(*applied));
    }
    e.tun_offloads = *applied;
  }

  auto link = netlink_.find_link(e.ifindex);
  if (!link) {
    if (!check(std::unexpected(link.error()))) return std::unexpected(*failed);
    return {};
  }
  if (!*link) {
    if (!check(fail("system", str(name, " disappeared from the kernel")))) {
      return std::unexpected(*failed);
    }
    return {};
  }
  const net::LinkInfo& now = **link;
  if (now.mac != want.mac && !check(netlink_.set_mac(e.ifindex, want.mac))) {
    return std::unexpected(*failed);
  }
  if (now.mtu != want.mtu && !check(netlink_.set_mtu(e.ifindex, want.mtu))) {
    return std::unexpected(*failed);
  }
  int master = 0;
  bool master_known = true;
  if (!want.bridge.empty()) {
    auto bridge = netlink_.find_link(want.bridge);
    if (!bridge || !*bridge || (*bridge)->kind != "bridge") {
      master_known = false;
      if (!check(bridge ? fail("no-such-bridge", str("bridge ", want.bridge, " does not exist"))
                        : Result<void>(std::unexpected(bridge.error())))) {
        return std::unexpected(*failed);
      }
    } else {
      master = (*bridge)->ifindex;
    }
  }
  if (master_known && now.master_ifindex != master &&
      !check(netlink_.set_master(e.ifindex, master))) {
    return std::unexpected(*failed);
  }
  // Down before the addresses: the kernel flushes IPv6 addresses when a link goes down
  // (keep_addr_on_down=0), and vpd keeps every address it was given.
  if (now.up && !want.up && !check(netlink_.set_up(e.ifindex, false))) {
    return std::unexpected(*failed);
  }
  auto present = netlink_.addresses(e.ifindex);
  if (!present) {
    if (!check(std::unexpected(present.error()))) return std::unexpected(*failed);
  } else {
    auto has = [](const std::vector<net::IfAddress>& list, const net::IfAddress& a) {
      return std::find(list.begin(), list.end(), a) != list.end();
    };
    if (before) {
      for (const auto& a : before->addresses) {
        if (has(want.addresses, a) || !has(*present, a)) continue;
        if (!check(netlink_.del_address(e.ifindex, a))) return std::unexpected(*failed);
      }
    }
    for (const auto& a : want.addresses) {
      if (has(*present, a)) continue;
      if (!check(netlink_.add_address(e.ifindex, a))) return std::unexpected(*failed);
    }
  }
  if (!now.up && want.up && !check(netlink_.set_up(e.ifindex, true))) {
    return std::unexpected(*failed);
  }
  if (!check(sync_dataplane(e, before, want))) return std::unexpected(*failed);
  return {};
}

Result<void> Registry::remove_tap(Endpoint& e) {
  dataplane_.detach(e.config.name);
  if (e.tap.fd() >= 0) {
    (void)e.tap.set_persist(false);
  }
  // Delete only a TAP that carries vpd's mark, found by ifindex or, when the endpoint never
  // got one (restore failed), by name.
  auto link = e.ifindex > 0 ? netlink_.find_link(e.ifindex) : netlink_.find_link(e.config.name);
  if (link && *link && (*link)->kind == "tun" && (*link)->alias == kAliasMarker) {
    if (auto ok = netlink_.delete_link((*link)->ifindex); !ok) return ok;
  }
  e.tap.close();
  e.ifindex = 0;
  return {};
}

void Registry::put_back(int ifindex, const net::LinkInfo& was,
                        const std::vector<net::IfAddress>& addresses) {
  auto now = netlink_.find_link(ifindex);
  if (!now || !*now) return;
  if ((*now)->up != was.up) (void)netlink_.set_up(ifindex, was.up);
  if ((*now)->mac != was.mac) (void)netlink_.set_mac(ifindex, was.mac);
  if ((*now)->mtu != was.mtu) (void)netlink_.set_mtu(ifindex, was.mtu);
  if ((*now)->master_ifindex != was.master_ifindex) {
    (void)netlink_.set_master(ifindex, was.master_ifindex);
  }
  if (auto present = netlink_.addresses(ifindex)) {
    for (const auto& a : *present) {
      if (std::find(addresses.begin(), addresses.end(), a) == addresses.end()) {
        (void)netlink_.del_address(ifindex, a);
      }
    }
  }
}

Result<void> Registry::save() {
  control::State state;
  for (const auto& [name, e] : endpoints_) state.endpoints.push_back({e.config, e.declared});
  if (auto ok = control::save_state(paths_.state_file, state); !ok) {
    return fail("state-write-failed",
                str("vpd could not save its state (", ok.error().message,
                    "), so the change was undone; check that the state directory is writable"));
  }
  return {};
}

void Registry::restore(const control::State& state) {
  for (const auto& saved : state.endpoints) {
    Endpoint e;
    e.config = saved.config;
    e.declared = saved.declared;
    (void)realise(e, nullptr, e.config, &e.problems);
    for (const auto& p : e.problems) log::error(e.config.name, ": not restored as saved: ", p);
    if (e.problems.empty()) log::info(e.config.name, ": restored");
    endpoints_.emplace(e.config.name, std::move(e));
  }
}

std::vector<Error> Registry::apply_declarations(const std::vector<control::ConfigEntry>& entries) {
  std::vector<Error> errors;
  std::vector<std::string> reserved;
  for (const auto& entry : entries) {
    if (!entry.name.empty()) reserved.push_back(entry.name);
  }
  for (const auto& [name, e] : endpoints_) {
    if (e.declared.empty()) reserved.push_back(name);
  }
  std::set<std::string> seen;
  for (const auto& entry : entries) {
    const Caller caller{entry.origin};
    std::string name = entry.name;
    const std::string spec = entry.spec();
    if (name.empty()) {
      // An unnamed declaration keeps the endpoint it was applied to before: the one with
      // the same text, else the declared one with the same socket path (the guest).
      for (const auto& [n, e] : endpoints_) {
        if (e.declared == spec && !seen.contains(n)) name = n;
      }
      for (const auto& [n, e] : endpoints_) {
        if (!name.empty()) break;
        if (e.declared.empty() || seen.contains(n)) continue;
        for (const auto& path : {entry.change.peer, entry.change.bind}) {
          if (path && !path->empty() && (*path == e.config.peer || *path == e.config.bind)) {
            name = n;
          }
        }
      }
    }
    if (name.empty()) {
      auto free = next_free_name(entry.change.prefix.value_or("vp"), reserved);
      if (!free) {
        errors.push_back(free.error());
        continue;
      }
      name = *free;
      reserved.push_back(name);
    }
    seen.insert(name);
    control::Change change = entry.change;
    change.prefix.reset();  // the name is chosen; create() must not pick another
    auto it = endpoints_.find(name);
    Result<json> done;
    if (it == endpoints_.end()) {
      done = create(name, change, spec, caller);
    } else if (it->second.declared == spec) {
      continue;  // unchanged since it was applied: keep run-time changes
    } else {
      done = set(name, change, &spec, caller);
    }
    if (!done) {
      Error e{done.error().code, str(entry.origin, ": ", done.error().message)};
      log::error(e.message);
      errors.push_back(std::move(e));
    }
  }
  for (auto& [name, e] : endpoints_) {
    if (e.declared.empty() || seen.contains(name)) continue;
    log::notice(name, ": no longer declared; kept as a run-time endpoint (`vpctl ", name,
                " destroy` removes it)");
    e.declared.clear();
    (void)save();
  }
  return errors;
}

Result<std::string> Registry::next_free_name(const std::string& prefix,
                                             const std::vector<std::string>& reserved) {
  if (auto ok = net::validate_prefix(prefix); !ok) return std::unexpected(ok.error());
  for (int i = 0; i < 100000; ++i) {
    std::string name = str(prefix, i);
    if (name.size() > net::kMaxIfnameLength) break;
    if (endpoints_.contains(name)) continue;
    if (std::find(reserved.begin(), reserved.end(), name) != reserved.end()) continue;
    auto link = netlink_.find_link(name);
    if (!link) return std::unexpected(link.error());
    if (*link) continue;
    return name;
  }
  return fail("name-too-long", str("no free name with prefix '", prefix, "' is left"));
}

Result<json> Registry::create(std::string name, const control::Change& change, std::string declared,
                              const Caller& caller) {
  if (name.empty()) {
    auto free = next_free_name(change.prefix.value_or("vp"));
    if (!free) return std::unexpected(free.error());
    name = *free;
  } else if (change.prefix) {
    return fail("conflicting-settings",
                "name=PREFIX picks a name for `vpctl create`; it cannot rename an endpoint");
  }
  if (auto ok = net::validate_ifname(name); !ok) return std::unexpected(ok.error());
  if (control::is_keyword(name)) {
    return fail("invalid-name", str("'", name, "' is a vpctl word and cannot name an endpoint"));
  }
  if (endpoints_.contains(name)) {
    return fail("endpoint-exists",
                str(name, " already exists; change it with `vpctl ", name, " key=value`"));
  }
  EndpointConfig base;
  base.name = name;
  base.mac = net::stable_mac(machine_id_, name);
  auto config = control::apply_change(base, change);
  if (!config) return std::unexpected(config.error());
  normalize(*config);
  if (auto ok = control::validate(*config); !ok) return std::unexpected(ok.error());
  if (auto ok = check(*config, nullptr); !ok) return std::unexpected(ok.error());

  Endpoint e;
  e.config = *config;
  e.declared = std::move(declared);
  // A TAP left by an earlier vpd (marked, but in no state) is adopted; if the create is
  // refused, it must stay as it was found, not be deleted.
  std::optional<net::LinkInfo> found;
  std::vector<net::IfAddress> found_addresses;
  if (auto link = netlink_.find_link(name); link && *link) {
    found = **link;
    if (auto a = netlink_.addresses(found->ifindex)) found_addresses = std::move(*a);
  }
  if (auto ok = realise(e, nullptr, *config); !ok) {
    if (found) {
      dataplane_.detach(name);
      put_back(found->ifindex, *found, found_addresses);
      e.tap.close();
    } else {
      (void)remove_tap(e);
    }
    return std::unexpected(ok.error());
  }
  auto [it, inserted] = endpoints_.emplace(name, std::move(e));
  if (auto ok = save(); !ok) {
    (void)remove_tap(it->second);
    endpoints_.erase(it);
    return std::unexpected(ok.error());
  }
  log::notice(name, ": created with ", join(control::to_tokens(*config), " "), " (by ", caller.who,
              ")");
  return describe(it->second);
}

Result<json> Registry::set(const std::string& name, const control::Change& change,
                           const std::string* declared, const Caller& caller) {
  auto it = endpoints_.find(name);
  if (it == endpoints_.end()) {
    return fail("no-such-endpoint", str("there is no endpoint ", name, "; create it with `vpctl ",
                                        name, " create`, or see `vpctl list`"));
  }
  Endpoint& e = it->second;
  if (change.prefix) {
    return fail("conflicting-settings",
                "name=PREFIX picks a name for `vpctl create`; it cannot rename an endpoint");
  }
  const EndpointConfig before = e.config;
  auto config = control::apply_change(before, change);
  if (!config) return std::unexpected(config.error());
  normalize(*config);
  if (auto ok = control::validate(*config); !ok) return std::unexpected(ok.error());
  if (auto ok = check(*config, &e); !ok) return std::unexpected(ok.error());

  if (auto ok = realise(e, &before, *config); !ok) {
    // Put the kernel back as it was; the endpoint keeps its old configuration.
    if (auto back = realise(e, &*config, before); !back) {
      log::error(name, ": could not undo a refused change: ", back.error().message);
    }
    return std::unexpected(ok.error());
  }
  const std::string old_declared = e.declared;
  e.config = *config;
  if (declared) e.declared = *declared;
  if (auto ok = save(); !ok) {
    e.config = before;
    e.declared = old_declared;
    (void)realise(e, &*config, before);
    return std::unexpected(ok.error());
  }
  e.problems.clear();
  log::notice(name, ": set ", join(control::to_tokens(*config), " "), " (by ", caller.who, ")");
  return describe(e);
}

Result<void> Registry::destroy(const std::string& name, const Caller& caller) {
  auto it = endpoints_.find(name);
  if (it == endpoints_.end()) {
    return fail("no-such-endpoint", str("there is no endpoint ", name, "; see `vpctl list`"));
  }
  Endpoint e = std::move(it->second);
  endpoints_.erase(it);
  if (auto ok = save(); !ok) {
    endpoints_.emplace(name, std::move(e));
    return std::unexpected(ok.error());
  }
  if (auto ok = remove_tap(e); !ok) {
    log::error(name, ": removed from vpd, but the kernel kept the TAP: ", ok.error().message);
  }
  // The bind socket goes with the endpoint (the listener closed with the detach).
  struct stat st {};
  if (!e.config.bind.empty() && ::lstat(e.config.bind.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    ::unlink(e.config.bind.c_str());
  }
  log::notice(name, ": destroyed (by ", caller.who, ")");
  return {};
}

json Registry::describe(const Endpoint& e) {
  json j = control::to_json(e.config);
  const uint64_t features = e.config.features();
  json status{
      {"ifindex", e.ifindex},
      {"features", net::feature_names(features)},
      {"features_hex", control::peerfeats_text(features)},
      {"tun_offloads", net::tun_offload_names(e.tun_offloads)},
      {"vnet_hdr_len", e.config.vnet_hdr_len()},
      {"guest", "not attached"},
      {"guest_mac", control::guest_mac_of(e.config, machine_id_).to_string()},
      {"declared", e.declared},
  };
  json problems = e.problems;
  auto link = e.ifindex > 0 ? netlink_.find_link(e.ifindex)
                            : Result<std::optional<net::LinkInfo>>(std::nullopt);
  if (link && *link) {
    status["link"] = (*link)->up ? "up" : "down";
    status["carrier"] = (*link)->carrier;
    std::string master;
    if ((*link)->master_ifindex) {
      auto m = netlink_.find_link((*link)->master_ifindex);
      if (m && *m) master = (*m)->name;
    }
    status["master"] = master;
    status["kernel_mac"] = (*link)->mac.to_string();
    status["kernel_mtu"] = (*link)->mtu;
  } else {
    status["link"] = "absent";
    status["carrier"] = false;
    status["master"] = "";
    if (link && e.problems.empty()) problems.push_back("the TAP device does not exist");
  }
  if (e.config.transport == control::Transport::kTap) {
    // The VMM owns the data path and sets the TAP's offloads itself: show what the kernel
    // has now. Carrier is the kernel's: on while a VMM has a queue of the TAP open.
    if (auto active = net::tun_offloads_active(e.config.name)) {
      status["tun_offloads"] = net::tun_offload_names(*active);
    }
    status["guest"] = status.value("carrier", false)
                          ? str("attached (a VMM has ", e.config.name, " open)")
                          : str("not attached (a VMM opens ", e.config.name, " by name)");
    status["peerfeats_note"] =
        "advisory: vpd gives the TAP these offloads when it provisions it, and the VMM sets "
        "its own (what the guest negotiated) when it opens it; tun offloads shows what the "
        "kernel has now";
  }
  if (auto v = dataplane_.view(e.config.name)) {
    status["guest"] = v->state == SessionState::kConnected
                          ? std::string("connected")
                          : str(session_state_name(v->state), " on ", v->socket);
    json counters = json::object();
    for (const auto& f : dataplane::kNetCounterFields)
      counters[std::string(f.name)] = v->counters.*f.member;
    status["counters"] = counters;
    status["refused_peers"] = v->refused_peers;
    if (v->state == SessionState::kConnected) {
      status["session"] = {
          {"features", net::feature_names(v->features)},
          {"features_hex", control::peerfeats_text(v->features)},
          {"ring", v->features ? (v->packed ? "packed" : "split") : "-"},
          {"queues_running", v->queues_running},
          {"queues", v->queues},
          {"sessions", v->sessions},
          {"refused_messages", v->refused_messages},
          {"broken_queues", v->broken_queues},
      };
      if (v->features) {
        status["tun_offloads"] = net::tun_offload_names(v->tun_offloads);
        status["vnet_hdr_len"] = v->hdr_len;
      }
    }
  }
  status["problems"] = problems;
  j["status"] = status;
  return j;
}

Result<json> Registry::show(const std::string& name) {
  auto it = endpoints_.find(name);
  if (it == endpoints_.end()) {
    return fail("no-such-endpoint", str("there is no endpoint ", name, "; see `vpctl list`"));
  }
  return describe(it->second);
}

json Registry::list() {
  json out = json::array();
  for (const auto& [name, e] : endpoints_) out.push_back(describe(e));
  return out;
}

control::Response Registry::handle(const control::Request& r, const Caller& caller) {
  control::Response response;
  auto finish = [&](Result<json> result) {
    if (!result) return control::error_response(result.error());
    response.result = std::move(*result);
    return response;
  };
  if (r.op == control::op::kHello) {
    return finish(json{{"daemon", "vpd"},
                       {"version", kVersion},
                       {"protocol", kProtocolVersion},
                       {"endpoints", endpoints_.size()}});
  }
  if (r.op == control::op::kList) return finish(list());
  if (r.op != control::op::kCreate && r.endpoint.empty()) {
    return control::error_response({"bad-request", str("op ", r.op, " needs an endpoint")});
  }
  if (!r.endpoint.empty()) {
    if (auto ok = net::validate_ifname(r.endpoint); !ok) return control::error_response(ok.error());
  }
  if (r.op == control::op::kShow) return finish(show(r.endpoint));
  if (r.op == control::op::kDestroy) {
    if (!r.args.empty()) {
      return control::error_response(
          {"conflicting-settings", "destroy cannot be combined with other settings"});
    }
    if (auto ok = destroy(r.endpoint, caller); !ok) return control::error_response(ok.error());
    return finish(json{{"destroyed", r.endpoint}});
  }
  auto change = control::parse_change(r.args);
  if (!change) return control::error_response(change.error());
  response.warnings = change->warnings;
  if (change->destroy) {
    if (r.op == control::op::kCreate) {
      return control::error_response(
          {"conflicting-settings", "destroy cannot be combined with create"});
    }
    if (auto ok = destroy(r.endpoint, caller); !ok) return control::error_response(ok.error());
    return finish(json{{"destroyed", r.endpoint}});
  }
  if (r.op == control::op::kCreate || change->create) {
    return finish(create(r.endpoint, *change, "", caller));
  }
  return finish(set(r.endpoint, *change, nullptr, caller));
}

}  // namespace vp::daemon
