#include "control/keys.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <nlohmann/json.hpp>

#include "control/grammar.hpp"
#include "net/ifname.hpp"
#include "net/offloads.hpp"
#include "sys/str.hpp"

namespace vp::control {

using nlohmann::json;

namespace {

template <class T>
Result<T> parse_number(std::string_view key, std::string_view value, T min, T max) {
  T n{};
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (value.empty() || ec != std::errc{} || end != value.data() + value.size() || n < min ||
      n > max) {
    return fail("bad-value",
                str(key, "=", value, " must be a whole number from ", min, " to ", max));
  }
  return n;
}

Result<void> need_value(std::string_view key, std::string_view value) {
  if (value.empty()) {
    return fail("bad-value", str(key, "= needs a value; to remove the setting write -", key));
  }
  return {};
}

Result<void> check_path(std::string_view key, std::string_view value) {
  if (auto ok = need_value(key, value); !ok) return ok;
  if (value.front() != '/') {
    return fail("bad-value", str(key, "=", value, " must be an absolute path (starting with /)"));
  }
  if (value.size() >= 108) {  // sizeof(sockaddr_un::sun_path)
    return fail("bad-value", str(key, "=", value, " is ", value.size(),
                                 " bytes; a Unix socket path must be shorter than 108"));
  }
  return {};
}

// allow=UID or UID:GID, numbers only: what SO_PEERCRED reports.
Result<std::string> parse_allow(std::string_view value) {
  const size_t colon = value.find(':');
  auto number = [](std::string_view v) {
    uint32_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    return !v.empty() && ec == std::errc{} && end == v.data() + v.size();
  };
  if (!number(value.substr(0, colon)) ||
      (colon != std::string_view::npos && !number(value.substr(colon + 1)))) {
    return fail("bad-value", str("allow=", value,
                                 " must be a user id, or user id:group id, as numbers "
                                 "(e.g. allow=64055 or allow=64055:994)"));
  }
  return std::string(value);
}

// owner= and group=: a name or a number, as getpwnam()/getgrnam() take it.
Result<std::string> parse_account(std::string_view key, std::string_view value) {
  if (auto ok = need_value(key, value); !ok) return std::unexpected(ok.error());
  if (value.find_first_of(" \t:/") != std::string_view::npos) {
    return fail("bad-value", str(key, "=", value, " must be a user or group name or number"));
  }
  return std::string(value);
}

Result<net::Mac> parse_mac_value(std::string_view value) { return net::parse_mac(value); }

Result<net::IfAddress> add_address(Change& c, std::string_view value) {
  auto a = net::parse_address(value);
  if (!a) return std::unexpected(a.error());
  c.add_addresses.push_back(a->address);
  if (a->prefix_defaulted) {
    c.warnings.push_back(
        str("address=", value, " has no prefix length; using ", a->address.to_string()));
  }
  return a->address;
}

json text_or_null(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

// One address per entry: removal ignores the prefix length, and a new prefix length
// replaces the old one.
void apply_addresses(EndpointConfig& config, const Change& c) {
  auto& addresses = config.addresses;
  auto drop = [&](const net::IfAddress& a) {
    std::erase_if(addresses, [&](const net::IfAddress& old) {
      return old.family == a.family && old.bytes == a.bytes;
    });
  };
  for (const auto& a : c.del_addresses) drop(a);
  for (const auto& a : c.add_addresses) {
    drop(a);
    addresses.push_back(a);
  }
  std::sort(addresses.begin(), addresses.end());
}

void apply_allow(EndpointConfig& config, const Change& c) {
  if (c.clear_allow) config.allow.clear();
  for (const auto& a : c.del_allow) std::erase(config.allow, a);
  for (const auto& a : c.add_allow) config.allow.push_back(a);
  std::sort(config.allow.begin(), config.allow.end());
  config.allow.erase(std::unique(config.allow.begin(), config.allow.end()), config.allow.end());
}

// The table. A new key is one row here plus its field in Change and EndpointConfig; the
// grammar, the files, the JSON view, the data plane's re-attach rule, vpctl's help and the
// shell completion all read it. Rows are in the order to_tokens() writes them.
const std::array kKeys{
    KeyRow{
        .name = "transport",
        .value = "vhost-user|stream|tap",
        .example = "transport=stream",
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto t = transport_by_name(v);
          if (!t) {
            return fail("bad-value",
                        str("transport=", v, " is not one of vhost-user, stream, tap"));
          }
          c.transport = *t;
          return {};
        },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.transport) e.transport = *c.transport;
            },
        .json_field = "transport",
        .json_kind = JsonKind::kText,
        .json_required = true,
        .get = [](const EndpointConfig& e) { return json(transport_name(e.transport)); },
    },
    KeyRow{
        .name = "peer",
        .value = "PATH",
        .example = "peer=/run/qemu/g1/p2p.sock",
        .clearable = true,
        .guest_sees = true,
        .starts_endpoint = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          if (auto ok = check_path("peer", v); !ok) return ok;
          c.peer = std::string(v);
          return {};
        },
        .clear = [](Change& c) { c.peer = ""; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.peer) e.peer = *c.peer;
            },
        .json_field = "peer",
        .json_kind = JsonKind::kText,
        .json_required = true,
        .get = [](const EndpointConfig& e) { return json(e.peer); },
    },
    KeyRow{
        .name = "bind",
        .value = "PATH",
        .example = "bind=/run/vpd/vp9.sock",
        .clearable = true,
        .guest_sees = true,
        .starts_endpoint = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          if (auto ok = check_path("bind", v); !ok) return ok;
          c.bind = std::string(v);
          return {};
        },
        .clear = [](Change& c) { c.bind = ""; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.bind) e.bind = *c.bind;
            },
        .json_field = "bind",
        .json_kind = JsonKind::kText,
        .json_required = true,
        .get = [](const EndpointConfig& e) { return json(e.bind); },
    },
    KeyRow{
        .name = "mac",
        .value = "MAC",
        .example = "mac=02:aa:bb:cc:dd:ee",
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto mac = parse_mac_value(v);
          if (!mac) return std::unexpected(mac.error());
          if (!mac->is_locally_administered()) {
            c.warnings.push_back(
                str("mac=", v,
                    " does not have the locally administered bit (0x02 of the first byte) set; "
                    "it may collide with a real device's address"));
          }
          c.mac = *mac;
          return {};
        },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.mac) e.mac = *c.mac;
            },
        .json_field = "mac",
        .json_kind = JsonKind::kText,
        .json_required = true,
        .always_saved = true,
        .get = [](const EndpointConfig& e) { return json(e.mac.to_string()); },
    },
    KeyRow{
        .name = "peerfeats",
        .value = "MASK",
        .example = "peerfeats=0x19c3",
        .clearable = true,
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto p = net::parse_peerfeats(v);
          if (!p) return std::unexpected(p.error());
          c.peerfeats_given = true;
          c.peerfeats = *p;
          return {};
        },
        .clear =
            [](Change& c) {
              c.peerfeats_given = true;
              c.peerfeats.reset();
            },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.peerfeats_given) e.peerfeats = c.peerfeats;
            },
        .json_field = "peerfeats",
        .json_kind = JsonKind::kNullableText,
        .get =
            [](const EndpointConfig& e) {
              return e.peerfeats ? json(peerfeats_text(e.peerfeats)) : json(nullptr);
            },
    },
    KeyRow{
        .name = "legacy",
        .example = "legacy",
        .clearable = true,
        .guest_sees = true,
        .parse = [](Change& c, std::string_view) -> Result<void> {
          c.legacy = true;
          return {};
        },
        .clear = [](Change& c) { c.legacy = false; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.legacy) e.legacy = *c.legacy;
            },
        .json_field = "legacy",
        .json_kind = JsonKind::kFlag,
        .json_required = true,
        .get = [](const EndpointConfig& e) { return json(e.legacy); },
    },
    KeyRow{
        .name = "priority",
        .value = "N",
        .example = "priority=10",
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto p = parse_number<int>("priority", v, 0, kMaxPriority);
          if (!p) return std::unexpected(p.error());
          c.priority = *p;
          return {};
        },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.priority) e.priority = *c.priority;
            },
        .json_field = "priority",
        .json_kind = JsonKind::kNumber,
        .json_required = true,
        .get = [](const EndpointConfig& e) { return json(e.priority); },
    },
    KeyRow{
        .name = "mtu",
        .value = "N",
        .example = "mtu=9000",
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto m = parse_number<uint32_t>("mtu", v, kMinMtu, kMaxMtu);
          if (!m) return std::unexpected(m.error());
          c.mtu = *m;
          return {};
        },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.mtu) e.mtu = *c.mtu;
            },
        .json_field = "mtu",
        .json_kind = JsonKind::kNumber,
        .json_required = true,
        .always_saved = true,
        .get = [](const EndpointConfig& e) { return json(e.mtu); },
    },
    KeyRow{
        .name = "rx-rate",
        .value = "RATE",
        .example = "rx-rate=100mbit",
        .clearable = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto bits = parse_rate("rx-rate", v);
          if (!bits) return std::unexpected(bits.error());
          c.rx_rate = *bits;
          return {};
        },
        .clear = [](Change& c) { c.rx_rate = 0; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.rx_rate) e.rx_rate = *c.rx_rate;
            },
        .json_field = "rx_rate",
        .json_kind = JsonKind::kText,
        .get = [](const EndpointConfig& e) { return json(e.rx_rate ? rate_text(e.rx_rate) : ""); },
    },
    KeyRow{
        .name = "tx-rate",
        .value = "RATE",
        .example = "tx-rate=20kpps",
        .clearable = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto rate = parse_tx_rate("tx-rate", v);
          if (!rate) return std::unexpected(rate.error());
          c.tx_rate = *rate;
          return {};
        },
        .clear = [](Change& c) { c.tx_rate = Rate{}; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.tx_rate) e.tx_rate = *c.tx_rate;
            },
        .json_field = "tx_rate",
        .json_kind = JsonKind::kText,
        .get = [](const EndpointConfig& e) { return json(rate_text(e.tx_rate)); },
    },
    KeyRow{
        // Both directions at once; the rows above keep, show and save what it sets.
        .name = "rate",
        .value = "RATE",
        .example = "rate=100mbit",
        .clearable = true,
        .shorthand = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto bits = parse_tx_rate("rate", v);
          if (!bits) return std::unexpected(bits.error());
          if (bits->packets != 0) {
            return fail("bad-value",
                        str("rate=", v,
                            " sets both directions, and the host→guest limit (a tbf qdisc) "
                            "counts bytes, not packets; write a bit rate, or tx-rate=",
                            v, " for the guest→host direction alone"));
          }
          c.rx_rate = bits->bits;
          c.tx_rate = *bits;
          return {};
        },
        .clear =
            [](Change& c) {
              c.rx_rate = 0;
              c.tx_rate = Rate{};
            },
    },
    KeyRow{
        .name = "bridge",
        .value = "BR",
        .example = "bridge=br0",
        .clearable = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          if (auto ok = need_value("bridge", v); !ok) return ok;
          if (auto ok = net::validate_ifname(v); !ok) return ok;
          c.bridge = std::string(v);
          return {};
        },
        .clear = [](Change& c) { c.bridge = ""; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.bridge) e.bridge = *c.bridge;
            },
        .json_field = "bridge",
        .json_kind = JsonKind::kText,
        .json_required = true,
        .get = [](const EndpointConfig& e) { return json(e.bridge); },
    },
    KeyRow{
        .name = "address",
        .value = "CIDR",
        .example = "address=192.168.7.1/24",
        .repeatable = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          if (auto a = add_address(c, v); !a) return std::unexpected(a.error());
          return {};
        },
        .remove = [](Change& c, std::string_view v) -> Result<void> {
          auto a = net::parse_address(v);
          if (!a) return std::unexpected(a.error());
          c.del_addresses.push_back(a->address);
          return {};
        },
        .apply = apply_addresses,
        .json_field = "addresses",
        .json_kind = JsonKind::kList,
        .json_required = true,
        .get =
            [](const EndpointConfig& e) {
              json addresses = json::array();
              for (const auto& a : e.addresses) addresses.push_back(a.to_string());
              return addresses;
            },
    },
    KeyRow{
        .name = "queues",
        .value = "N",
        .example = "queues=4",
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto q = parse_number<uint32_t>("queues", v, 1, kMaxQueuePairs);
          if (!q) return std::unexpected(q.error());
          c.queues = *q;
          return {};
        },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.queues) e.queues = *c.queues;
            },
        .json_field = "queues",
        .json_kind = JsonKind::kNumber,
        .get = [](const EndpointConfig& e) { return json(e.queues); },
    },
    KeyRow{
        .name = "mode",
        .value = "0660",
        .example = "mode=0600",
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          uint32_t mode = 0;
          auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), mode, 8);
          if (v.empty() || ec != std::errc{} || end != v.data() + v.size() || mode > 0777) {
            return fail(
                "bad-value",
                str("mode=", v, " must be octal permission bits such as 0660 (at most 0777)"));
          }
          c.socket_mode = mode;
          return {};
        },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.socket_mode) e.socket_mode = *c.socket_mode;
            },
        .json_field = "mode",
        .json_kind = JsonKind::kText,
        .get = [](const EndpointConfig& e) { return json(mode_text(e.socket_mode)); },
    },
    KeyRow{
        .name = "owner",
        .value = "USER",
        .example = "owner=64055",
        .clearable = true,
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto a = parse_account("owner", v);
          if (!a) return std::unexpected(a.error());
          c.owner = std::move(*a);
          return {};
        },
        .clear = [](Change& c) { c.owner = ""; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.owner) e.owner = *c.owner;
            },
        .json_field = "owner",
        .json_kind = JsonKind::kText,
        .get = [](const EndpointConfig& e) { return json(e.owner); },
    },
    KeyRow{
        .name = "group",
        .value = "GROUP",
        .example = "group=kvm",
        .clearable = true,
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto a = parse_account("group", v);
          if (!a) return std::unexpected(a.error());
          c.group = std::move(*a);
          return {};
        },
        .clear = [](Change& c) { c.group = ""; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.group) e.group = *c.group;
            },
        .json_field = "group",
        .json_kind = JsonKind::kText,
        .get = [](const EndpointConfig& e) { return json(e.group); },
    },
    KeyRow{
        .name = "allow",
        .value = "UID[:GID]",
        .example = "allow=64055:994",
        .clearable = true,
        .repeatable = true,
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto a = parse_allow(v);
          if (!a) return std::unexpected(a.error());
          c.add_allow.push_back(std::move(*a));
          return {};
        },
        .clear = [](Change& c) { c.clear_allow = true; },
        .remove = [](Change& c, std::string_view v) -> Result<void> {
          auto a = parse_allow(v);
          if (!a) return std::unexpected(a.error());
          c.del_allow.push_back(std::move(*a));
          return {};
        },
        .apply = apply_allow,
        .json_field = "allow",
        .json_kind = JsonKind::kList,
        .get = [](const EndpointConfig& e) { return json(e.allow); },
    },
    KeyRow{
        .name = "guest-mac",
        .value = "MAC",
        .example = "guest-mac=52:54:00:00:00:09",
        .clearable = true,
        .guest_sees = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          auto mac = parse_mac_value(v);
          if (!mac) return std::unexpected(mac.error());
          c.guest_mac_given = true;
          c.guest_mac = *mac;
          return {};
        },
        .clear =
            [](Change& c) {
              c.guest_mac_given = true;
              c.guest_mac.reset();
            },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.guest_mac_given) e.guest_mac = c.guest_mac;
            },
        .json_field = "guest_mac",
        .json_kind = JsonKind::kNullableText,
        .get =
            [](const EndpointConfig& e) {
              return text_or_null(e.guest_mac ? std::optional(e.guest_mac->to_string())
                                              : std::nullopt);
            },
    },
    KeyRow{
        .name = "lock-mac",
        .example = "lock-mac",
        .clearable = true,
        .guest_sees = true,
        .parse = [](Change& c, std::string_view) -> Result<void> {
          c.lock_mac = true;
          return {};
        },
        .clear = [](Change& c) { c.lock_mac = false; },
        .apply =
            [](EndpointConfig& e, const Change& c) {
              if (c.lock_mac) e.lock_mac = *c.lock_mac;
            },
        .json_field = "lock_mac",
        .json_kind = JsonKind::kFlag,
        .get = [](const EndpointConfig& e) { return json(e.lock_mac); },
    },
    KeyRow{
        .name = "name",
        .value = "PREFIX",
        .example = "name=eth",
        .create_only = true,
        .parse = [](Change& c, std::string_view v) -> Result<void> {
          if (auto ok = net::validate_prefix(v); !ok) return ok;
          c.prefix = std::string(v);
          return {};
        },
    },
};

std::string_view shape_of(JsonKind kind) {
  switch (kind) {
    case JsonKind::kNumber:
      return "a number";
    case JsonKind::kFlag:
      return "true/false";
    case JsonKind::kList:
      return "a list";
    case JsonKind::kNone:
    case JsonKind::kText:
    case JsonKind::kNullableText:
      break;
  }
  return "a string";
}

}  // namespace

std::span<const KeyRow> endpoint_keys() { return kKeys; }

const KeyRow* find_key(std::string_view name) {
  for (const KeyRow& row : kKeys) {
    if (row.name == name) return &row;
  }
  return nullptr;
}

std::string key_usage(const KeyRow& row) {
  if (row.value.empty()) return std::string(row.name);
  return str(row.name, "=", row.value, row.repeatable ? "..." : "");
}

Result<void> json_to_tokens(const KeyRow& row, const json* value,
                            std::vector<std::string>& tokens) {
  const std::string field(row.json_field);
  if (!value || (row.json_kind == JsonKind::kNullableText && value->is_null())) {
    if (!value && row.json_required) {
      return fail("bad-request",
                  str("endpoint field '", field, "' is missing or not ", shape_of(row.json_kind)));
    }
    return {};
  }
  bool shaped = false;
  switch (row.json_kind) {
    case JsonKind::kNone:
      return {};
    case JsonKind::kText:
    case JsonKind::kNullableText:
      shaped = value->is_string();
      break;
    case JsonKind::kNumber:
      shaped = value->is_number_integer();
      break;
    case JsonKind::kFlag:
      shaped = value->is_boolean();
      break;
    case JsonKind::kList:
      shaped = value->is_array();
      break;
  }
  if (!shaped) {
    return fail("bad-request",
                str("endpoint field '", field, "' is ", row.json_required ? "missing or " : "",
                    "not ", shape_of(row.json_kind)));
  }
  switch (row.json_kind) {
    case JsonKind::kNone:
      break;
    case JsonKind::kText:
    case JsonKind::kNullableText:
      if (!value->get_ref<const std::string&>().empty()) {
        tokens.push_back(str(row.name, "=", value->get_ref<const std::string&>()));
      }
      break;
    case JsonKind::kNumber:
      tokens.push_back(str(row.name, "=", value->get<int64_t>()));
      break;
    case JsonKind::kFlag:
      if (value->get<bool>()) tokens.emplace_back(row.name);
      break;
    case JsonKind::kList:
      for (const auto& entry : *value) {
        if (!entry.is_string()) {
          return fail("bad-request", str("an entry of endpoint field '", field, "' (", row.name,
                                         "=) is not a string"));
        }
        tokens.push_back(str(row.name, "=", entry.get_ref<const std::string&>()));
      }
      break;
  }
  return {};
}

bool guest_sees_change(const EndpointConfig& a, const EndpointConfig& b) {
  if (a.toggles != b.toggles) return true;
  return std::any_of(kKeys.begin(), kKeys.end(),
                     [&](const KeyRow& row) { return row.guest_sees && row.get(a) != row.get(b); });
}

}  // namespace vp::control
