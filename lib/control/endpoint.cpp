#include "control/endpoint.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "control/grammar.hpp"
#include "net/ifname.hpp"
#include "sys/str.hpp"

namespace vp::control {

using nlohmann::json;

std::string_view transport_name(Transport t) {
  switch (t) {
    case Transport::kVhostUser:
      return "vhost-user";
    case Transport::kStream:
      return "stream";
    case Transport::kTap:
      return "tap";
  }
  return "?";
}

std::optional<Transport> transport_by_name(std::string_view name) {
  for (Transport t : {Transport::kVhostUser, Transport::kStream, Transport::kTap}) {
    if (name == transport_name(t)) return t;
  }
  return std::nullopt;
}

std::string mode_text(uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0%03o", mode & 0777);
  return buf;
}

std::string peerfeats_text(std::optional<uint64_t> peerfeats) {
  if (!peerfeats) return "default";
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(*peerfeats));
  return buf;
}

net::Mac guest_mac_of(const EndpointConfig& c, std::string_view machine_id) {
  return c.guest_mac ? *c.guest_mac : net::stable_mac(machine_id, c.name + "/guest");
}

bool peer_allowed(const std::vector<std::string>& allow, uint32_t uid, uint32_t gid) {
  if (allow.empty()) return true;
  const std::string u = std::to_string(uid);
  const std::string ug = str(uid, ":", gid);
  return std::any_of(allow.begin(), allow.end(),
                     [&](const std::string& a) { return a == u || a == ug; });
}

Result<void> validate(const EndpointConfig& c) {
  if (auto ok = net::validate_ifname(c.name); !ok) return ok;
  if (c.transport == Transport::kStream && c.peerfeats.value_or(0) != 0) {
    return fail("bad-peerfeats",
                str(c.name,
                    ": a stream endpoint carries frames without a virtio-net header, so "
                    "no offload can be negotiated; set peerfeats=0 or leave it out"));
  }
  if (c.transport == Transport::kTap && (!c.peer.empty() || !c.bind.empty())) {
    return fail("conflicting-settings",
                str(c.name, ": transport=tap has no socket (the VMM opens the TAP ", c.name,
                    " by name); drop peer= and bind=, or choose another transport"));
  }
  if (!c.peer.empty() && c.peer == c.bind) {
    return fail("conflicting-settings", str(c.name, ": peer= and bind= are the same path ", c.peer,
                                            "; vpd cannot both listen on and dial one socket"));
  }
  if (c.mtu < kMinMtu || c.mtu > kMaxMtu) {
    return fail("bad-value", str(c.name, ": mtu=", c.mtu, " is outside ", kMinMtu, "-", kMaxMtu));
  }
  if (c.queues < 1 || c.queues > kMaxQueuePairs) {
    return fail("bad-value", str(c.name, ": queues=", c.queues, " is outside 1-", kMaxQueuePairs));
  }
  if (c.transport == Transport::kStream && c.queues != 1) {
    return fail("conflicting-settings",
                str(c.name, ": a stream endpoint carries one frame stream; queues must be 1"));
  }
  if (c.priority < 0 || c.priority > kMaxPriority) {
    return fail("bad-value",
                str(c.name, ": priority=", c.priority, " is outside 0-", kMaxPriority));
  }
  if (c.mac.is_zero() || c.mac.is_multicast()) {
    return fail("invalid-mac", str(c.name, ": mac ", c.mac.to_string(), " is not unicast"));
  }
  if (c.guest_mac && (c.guest_mac->is_zero() || c.guest_mac->is_multicast())) {
    return fail("invalid-mac",
                str(c.name, ": guest-mac ", c.guest_mac->to_string(), " is not unicast"));
  }
  if (c.guest_mac && *c.guest_mac == c.mac) {
    return fail("duplicate-mac", str(c.name, ": guest-mac and mac are both ", c.mac.to_string(),
                                     "; the guest and the host side need their own addresses"));
  }
  if (c.transport == Transport::kTap && (c.lock_mac || !c.allow.empty())) {
    return fail("conflicting-settings",
                str(c.name,
                    ": with transport=tap the VMM opens the TAP itself and vpd is not in "
                    "the data path, so lock-mac and allow= cannot apply; use owner=/group= "
                    "to say who may open it"));
  }
  return {};
}

json to_json(const EndpointConfig& c) {
  json addresses = json::array();
  for (const auto& a : c.addresses) addresses.push_back(a.to_string());
  return json{
      {"name", c.name},
      {"transport", transport_name(c.transport)},
      {"peer", c.peer},
      {"bind", c.bind},
      {"mac", c.mac.to_string()},
      {"peerfeats", c.peerfeats ? json(peerfeats_text(c.peerfeats)) : json(nullptr)},
      {"legacy", c.legacy},
      {"priority", c.priority},
      {"mtu", c.mtu},
      {"bridge", c.bridge},
      {"addresses", addresses},
      {"toggles", net::toggle_names(c.toggles)},
      {"up", c.up},
      {"queues", c.queues},
      {"mode", mode_text(c.socket_mode)},
      {"owner", c.owner},
      {"group", c.group},
      {"allow", c.allow},
      {"guest_mac", c.guest_mac ? json(c.guest_mac->to_string()) : json(nullptr)},
      {"lock_mac", c.lock_mac},
  };
}

Result<EndpointConfig> endpoint_from_json(const json& j) {
  if (!j.is_object()) return fail("bad-request", "an endpoint must be a JSON object");
  // Reuse the one grammar: turn the fields back into tokens and parse them.
  auto text = [&](const char* key) -> Result<std::string> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) {
      return fail("bad-request", str("endpoint field '", key, "' is missing or not a string"));
    }
    return it->get<std::string>();
  };
  auto number = [&](const char* key) -> Result<int64_t> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) {
      return fail("bad-request", str("endpoint field '", key, "' is missing or not a number"));
    }
    return it->get<int64_t>();
  };
  auto boolean = [&](const char* key) -> Result<bool> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_boolean()) {
      return fail("bad-request", str("endpoint field '", key, "' is missing or not true/false"));
    }
    return it->get<bool>();
  };

  std::vector<std::string> tokens;
  auto name = text("name");
  auto transport = text("transport");
  auto peer = text("peer");
  auto bind = text("bind");
  auto mac = text("mac");
  auto legacy = boolean("legacy");
  auto priority = number("priority");
  auto mtu = number("mtu");
  auto bridge = text("bridge");
  auto toggles = text("toggles");
  auto up = boolean("up");
  for (const auto* r : {&name, &transport, &peer, &bind, &mac, &bridge, &toggles}) {
    if (!*r) return std::unexpected(r->error());
  }
  for (const auto* r : {&legacy, &up}) {
    if (!*r) return std::unexpected(r->error());
  }
  for (const auto* r : {&priority, &mtu}) {
    if (!*r) return std::unexpected(r->error());
  }
  tokens.push_back("transport=" + *transport);
  if (!peer->empty()) tokens.push_back("peer=" + *peer);
  if (!bind->empty()) tokens.push_back("bind=" + *bind);
  tokens.push_back("mac=" + *mac);
  tokens.push_back("priority=" + std::to_string(*priority));
  tokens.push_back("mtu=" + std::to_string(*mtu));
  if (!bridge->empty()) tokens.push_back("bridge=" + *bridge);
  if (*legacy) tokens.push_back("legacy");
  if (*up) tokens.push_back("up");
  // Fields added after the first release are optional: older state files lack them.
  if (auto it = j.find("queues"); it != j.end()) {
    if (!it->is_number_integer())
      return fail("bad-request", "endpoint field 'queues' is not a number");
    tokens.push_back("queues=" + std::to_string(it->get<int64_t>()));
  }
  for (const char* key : {"mode", "owner", "group"}) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    if (!it->is_string())
      return fail("bad-request", str("endpoint field '", key, "' is not a string"));
    if (!it->get<std::string>().empty()) tokens.push_back(str(key, "=", it->get<std::string>()));
  }
  if (auto it = j.find("allow"); it != j.end()) {
    if (!it->is_array()) return fail("bad-request", "endpoint field 'allow' is not a list");
    for (const auto& a : *it) {
      if (!a.is_string()) return fail("bad-request", "an allow= entry is not a string");
      tokens.push_back("allow=" + a.get<std::string>());
    }
  }
  if (auto it = j.find("guest_mac"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return fail("bad-request", "endpoint field 'guest_mac' is not a string");
    tokens.push_back("guest-mac=" + it->get<std::string>());
  }
  if (auto it = j.find("lock_mac"); it != j.end()) {
    if (!it->is_boolean())
      return fail("bad-request", "endpoint field 'lock_mac' is not true/false");
    if (it->get<bool>()) tokens.push_back("lock-mac");
  }
  if (auto it = j.find("peerfeats"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return fail("bad-request", "endpoint field 'peerfeats' is not a string");
    tokens.push_back("peerfeats=" + it->get<std::string>());
  }
  auto addresses = j.find("addresses");
  if (addresses == j.end() || !addresses->is_array()) {
    return fail("bad-request", "endpoint field 'addresses' is missing or not a list");
  }
  for (const auto& a : *addresses) {
    if (!a.is_string()) return fail("bad-request", "an address is not a string");
    tokens.push_back("address=" + a.get<std::string>());
  }
  // Toggles are saved as the list of those on; everything else is off.
  uint32_t on = 0;
  for (const auto& t : split_commas(*toggles)) {
    const uint32_t bit = net::toggle_by_name(t);
    if (!bit) return fail("bad-request", str("unknown offload toggle '", t, "'"));
    on |= bit;
  }
  auto change = parse_change(tokens);
  if (!change) return std::unexpected(change.error());
  EndpointConfig base;
  base.name = *name;
  auto config = apply_change(base, *change);
  if (!config) return config;
  config->toggles = on;
  return config;
}

std::vector<std::string> to_tokens(const EndpointConfig& c) {
  std::vector<std::string> t;
  if (c.transport != Transport::kVhostUser)
    t.push_back(str("transport=", transport_name(c.transport)));
  if (!c.peer.empty()) t.push_back("peer=" + c.peer);
  if (!c.bind.empty()) t.push_back("bind=" + c.bind);
  t.push_back("mac=" + c.mac.to_string());
  if (c.peerfeats) t.push_back("peerfeats=" + peerfeats_text(c.peerfeats));
  if (c.legacy) t.push_back("legacy");
  if (c.priority) t.push_back(str("priority=", c.priority));
  t.push_back(str("mtu=", c.mtu));
  if (!c.bridge.empty()) t.push_back("bridge=" + c.bridge);
  for (const auto& a : c.addresses) t.push_back("address=" + a.to_string());
  if (c.queues != 1) t.push_back(str("queues=", c.queues));
  if (c.socket_mode != kDefaultSocketMode) t.push_back("mode=" + mode_text(c.socket_mode));
  if (!c.owner.empty()) t.push_back("owner=" + c.owner);
  if (!c.group.empty()) t.push_back("group=" + c.group);
  for (const auto& a : c.allow) t.push_back("allow=" + a);
  if (c.guest_mac) t.push_back("guest-mac=" + c.guest_mac->to_string());
  if (c.lock_mac) t.push_back("lock-mac");
  const uint32_t off = net::toggle::kAll & ~c.toggles;
  for (const auto& name : split_commas(net::toggle_names(off))) t.push_back("-" + name);
  t.push_back(c.up ? "up" : "down");
  return t;
}

}  // namespace vp::control
