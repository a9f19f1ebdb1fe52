#include "control/endpoint.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "control/grammar.hpp"
#include "control/keys.hpp"
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

namespace {

struct RateUnit {
  std::string_view name;
  uint64_t scale;
  bool packets;
};

constexpr RateUnit kRateUnits[] = {
    {"bit", 1, false},          {"kbit", 1'000, false},
    {"mbit", 1'000'000, false}, {"gbit", 1'000'000'000, false},
    {"bps", 8, false},          {"kbps", 8'000, false},
    {"mbps", 8'000'000, false}, {"gbps", 8'000'000'000, false},
    {"pps", 1, true},           {"kpps", 1'000, true},
    {"mpps", 1'000'000, true},
};

// The one rate parser: a whole number and a unit, checked against the range of its kind.
Result<Rate> parse_any_rate(std::string_view key, std::string_view text, bool packets_allowed) {
  auto bad = [&](std::string_view why) -> Result<Rate> {
    return fail("bad-value",
                str(key, "=", text, " ", why,
                    "; write a whole number and a unit: bit, kbit, mbit, gbit (bits per "
                    "second) or bps, kbps, mbps, gbps (bytes per second)",
                    packets_allowed ? " or pps, kpps, mpps (packets per second)" : "", ", e.g. ",
                    key, packets_allowed ? "=100mbit or " : "=100mbit",
                    packets_allowed ? str(key, "=20kpps") : ""));
  };
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return bad("does not start with a number");
  if (digits > 12) return bad("is too large");
  uint64_t n = 0;
  for (size_t i = 0; i < digits; ++i) n = n * 10 + static_cast<uint64_t>(text[i] - '0');
  const std::string_view unit = text.substr(digits);
  for (const RateUnit& u : kRateUnits) {
    if (unit != u.name) continue;
    if (u.packets && !packets_allowed) {
      return fail("bad-value",
                  str(key, "=", text,
                      ": the host→guest limit is a tbf qdisc on the TAP, which counts bytes, "
                      "not packets; write a bit rate (e.g. ",
                      key, "=100mbit), or limit packets guest→host with tx-rate=", text));
    }
    const uint64_t min = u.packets ? kMinRatePackets : kMinRateBits;
    const uint64_t max = u.packets ? kMaxRatePackets : kMaxRateBits;
    // n * scale may not fit in 64 bits: compare before multiplying.
    if (n > max / u.scale || n * u.scale < min) {
      return fail("bad-value",
                  str(key, "=", text, " is outside ",
                      u.packets ? rate_text(Rate{.packets = min}) : rate_text(min), "-",
                      u.packets ? rate_text(Rate{.packets = max}) : rate_text(max)));
    }
    return u.packets ? Rate{.packets = n * u.scale} : Rate{.bits = n * u.scale};
  }
  return bad(unit.empty() ? "has no unit" : "has an unknown unit");
}

}  // namespace

Result<uint64_t> parse_rate(std::string_view key, std::string_view text) {
  auto r = parse_any_rate(key, text, false);
  if (!r) return std::unexpected(r.error());
  return r->bits;
}

Result<Rate> parse_tx_rate(std::string_view key, std::string_view text) {
  return parse_any_rate(key, text, true);
}

std::string rate_text(uint64_t bits) {
  for (auto [unit, scale] : {std::pair{"gbit", 1'000'000'000ull}, std::pair{"mbit", 1'000'000ull},
                             std::pair{"kbit", 1'000ull}}) {
    if (bits >= scale && bits % scale == 0) return str(bits / scale, unit);
  }
  return str(bits, "bit");
}

std::string rate_text(const Rate& rate) {
  if (rate.bits != 0) return rate_text(rate.bits);
  if (rate.packets == 0) return "";
  for (auto [unit, scale] : {std::pair{"mpps", 1'000'000ull}, std::pair{"kpps", 1'000ull}}) {
    if (rate.packets >= scale && rate.packets % scale == 0) return str(rate.packets / scale, unit);
  }
  return str(rate.packets, "pps");
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
  if (c.rx_rate != 0 && (c.rx_rate < kMinRateBits || c.rx_rate > kMaxRateBits)) {
    return fail("bad-value", str(c.name, ": rx-rate ", c.rx_rate, " bit/s is outside ",
                                 rate_text(kMinRateBits), "-", rate_text(kMaxRateBits)));
  }
  if (c.tx_rate.bits != 0 && (c.tx_rate.bits < kMinRateBits || c.tx_rate.bits > kMaxRateBits)) {
    return fail("bad-value", str(c.name, ": tx-rate ", c.tx_rate.bits, " bit/s is outside ",
                                 rate_text(kMinRateBits), "-", rate_text(kMaxRateBits)));
  }
  if (c.tx_rate.packets != 0 &&
      (c.tx_rate.packets < kMinRatePackets || c.tx_rate.packets > kMaxRatePackets)) {
    return fail("bad-value", str(c.name, ": tx-rate ", c.tx_rate.packets, " packets/s is outside ",
                                 kMinRatePackets, "-", kMaxRatePackets));
  }
  if (!c.tx_rate.unset() && c.transport != Transport::kVhostUser) {
    return fail("conflicting-settings",
                str(c.name, ": tx-rate= is a token bucket in vpd's vhost-user transmit path, and ",
                    c.transport == Transport::kTap
                        ? "with transport=tap the VMM writes to the TAP itself, so vpd cannot "
                          "hold the guest back"
                        : "a stream endpoint's frames do not pass through it",
                    "; drop tx-rate= (rx-rate= still limits host→guest) or use "
                    "transport=vhost-user"));
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
  json j{
      {"name", c.name},
      {"toggles", net::toggle_names(c.toggles)},
      {"up", c.up},
  };
  for (const KeyRow& row : endpoint_keys()) {
    if (row.get) j[std::string(row.json_field)] = row.get(c);
  }
  return j;
}

Result<EndpointConfig> endpoint_from_json(const json& j) {
  if (!j.is_object()) return fail("bad-request", "an endpoint must be a JSON object");
  auto field = [&](const char* key) -> const json* {
    auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  };
  const json* name = field("name");
  const json* toggles = field("toggles");
  for (const char* key : {"name", "toggles"}) {
    if (const json* f = field(key); !f || !f->is_string()) {
      return fail("bad-request", str("endpoint field '", key, "' is missing or not a string"));
    }
  }
  const json* up = field("up");
  if (!up || !up->is_boolean()) {
    return fail("bad-request", "endpoint field 'up' is missing or not true/false");
  }
  // Reuse the one grammar: turn the fields back into tokens and parse them.
  std::vector<std::string> tokens;
  for (const KeyRow& row : endpoint_keys()) {
    if (row.json_kind == JsonKind::kNone) continue;
    if (auto ok = json_to_tokens(row, field(std::string(row.json_field).c_str()), tokens); !ok) {
      return std::unexpected(ok.error());
    }
  }
  if (up->get<bool>()) tokens.emplace_back("up");
  // Toggles are saved as the list of those on; everything else is off.
  uint32_t on = 0;
  for (const auto& t : split_commas(toggles->get_ref<const std::string&>())) {
    const uint32_t bit = net::toggle_by_name(t);
    if (!bit) return fail("bad-request", str("unknown offload toggle '", t, "'"));
    on |= bit;
  }
  auto change = parse_change(tokens);
  if (!change) return std::unexpected(change.error());
  EndpointConfig base;
  base.name = name->get<std::string>();
  auto config = apply_change(base, *change);
  if (!config) return config;
  config->toggles = on;
  return config;
}

std::vector<std::string> to_tokens(const EndpointConfig& c) {
  // Each key as the state file keeps it, left out at its default unless always_saved.
  static const EndpointConfig kDefault;
  std::vector<std::string> t;
  for (const KeyRow& row : endpoint_keys()) {
    if (!row.get) continue;
    const json value = row.get(c);
    if (!row.always_saved && value == row.get(kDefault)) continue;
    (void)json_to_tokens(row, &value, t);  // get() gives the shape json_kind says
  }
  const uint32_t off = net::toggle::kAll & ~c.toggles;
  for (const auto& name : split_commas(net::toggle_names(off))) t.push_back("-" + name);
  t.push_back(c.up ? "up" : "down");
  return t;
}

}  // namespace vp::control
