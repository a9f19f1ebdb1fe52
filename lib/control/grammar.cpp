#include "control/grammar.hpp"

#include <algorithm>
#include <array>
#include <charconv>

#include "net/ifname.hpp"
#include "net/offloads.hpp"
#include "sys/str.hpp"

namespace vp::control {
namespace {

constexpr std::array<std::string_view, 4> kVerbs{"create", "up", "down", "destroy"};
constexpr std::array<std::string_view, 18> kKeys{
    "peer",      "bind",   "mac",     "name",  "peerfeats", "priority",
    "transport", "bridge", "address", "mtu",   "legacy",    "queues",
    "mode",      "owner",  "group",   "allow", "guest-mac", "lock-mac"};
constexpr std::array<std::string_view, 10> kClearable{"peer",      "bind",    "peerfeats", "bridge",
                                                      "legacy",    "owner",   "group",     "allow",
                                                      "guest-mac", "lock-mac"};

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
// Words that vpctl uses as commands; they cannot name an endpoint either.
constexpr std::array<std::string_view, 6> kCommands{"list",  "version",   "help",
                                                    "stats", "qemu-args", "show"};

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

std::string known_words() {
  return "peer= bind= mac= name= peerfeats= priority= transport= bridge= address= mtu= "
         "queues= mode= owner= group= allow= guest-mac= "
         "legacy lock-mac, create up down destroy, and the toggles rxcsum txcsum rxcsum6 txcsum6 "
         "tcp4csum udp4csum tcp6csum udp6csum tso4 tso6 (with - to disable)";
}

}  // namespace

bool Change::sets_nothing() const {
  return !transport && !peer && !bind && !mac && !peerfeats_given && !legacy && !priority && !mtu &&
         !queues && !socket_mode && !owner && !group && !bridge && add_addresses.empty() &&
         del_addresses.empty() && !toggles_on && !toggles_off && add_allow.empty() &&
         del_allow.empty() && !clear_allow && !guest_mac_given && !lock_mac;
}

bool is_keyword(std::string_view token) {
  auto in = [&](const auto& list) {
    return std::find(list.begin(), list.end(), token) != list.end();
  };
  return in(kVerbs) || in(kKeys) || in(kCommands) || net::toggle_by_name(token) != 0;
}

bool looks_like_address(std::string_view word) {
  if (word.empty()) return false;
  if (word.find(':') != std::string_view::npos) return true;
  return word.find_first_not_of("0123456789./") == std::string_view::npos;
}

std::vector<std::string> split_commas(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    std::string_view part = text.substr(0, comma);
    if (!part.empty()) out.emplace_back(part);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

Result<Change> parse_change(std::span<const std::string> tokens) {
  Change c;
  for (const std::string& token : tokens) {
    const size_t eq = token.find('=');
    const bool negated = token.starts_with('-');
    const std::string_view key = std::string_view(token).substr(
        negated ? 1 : 0, eq == std::string::npos ? std::string::npos : eq - (negated ? 1 : 0));
    const std::string_view value =
        eq == std::string::npos ? std::string_view() : std::string_view(token).substr(eq + 1);

    // Verbs.
    if (!negated && eq == std::string::npos) {
      if (token == "create") {
        c.create = true;
        continue;
      }
      if (token == "destroy") {
        c.destroy = true;
        continue;
      }
      if (token == "up" || token == "down") {
        const bool up = token == "up";
        if (c.up && *c.up != up) {
          return fail("conflicting-settings", "up and down cannot be given together");
        }
        c.up = up;
        continue;
      }
      if (token == "legacy") {
        c.legacy = true;
        continue;
      }
      if (token == "lock-mac") {
        c.lock_mac = true;
        continue;
      }
    }
    // Offload toggles: tso4, -tso4.
    if (eq == std::string::npos) {
      if (const uint32_t bit = net::toggle_by_name(key)) {
        (negated ? c.toggles_off : c.toggles_on) |= bit;
        ((negated ? c.toggles_on : c.toggles_off) &= ~bit);
        continue;
      }
    }
    // Removals: -peer -bind -peerfeats -bridge -legacy -address=CIDR.
    if (negated) {
      if (key == "address" && eq != std::string::npos) {
        auto a = net::parse_address(value);
        if (!a) return std::unexpected(a.error());
        c.del_addresses.push_back(a->address);
        continue;
      }
      if (key == "allow" && eq != std::string::npos) {
        auto a = parse_allow(value);
        if (!a) return std::unexpected(a.error());
        c.del_allow.push_back(*a);
        continue;
      }
      if (eq == std::string::npos &&
          std::find(kClearable.begin(), kClearable.end(), key) != kClearable.end()) {
        if (key == "peer") c.peer = "";
        if (key == "bind") c.bind = "";
        if (key == "bridge") c.bridge = "";
        if (key == "legacy") c.legacy = false;
        if (key == "owner") c.owner = "";
        if (key == "group") c.group = "";
        if (key == "allow") c.clear_allow = true;
        if (key == "lock-mac") c.lock_mac = false;
        if (key == "guest-mac") {
          c.guest_mac_given = true;
          c.guest_mac.reset();
        }
        if (key == "peerfeats") {
          c.peerfeats_given = true;
          c.peerfeats.reset();
        }
        continue;
      }
      return fail("unknown-key",
                  str("'", token, "' is not a setting vpd knows; known: ", known_words(),
                      ", and -peer -bind -peerfeats -bridge -legacy -address=CIDR "
                      "-allow[=UID[:GID]] -guest-mac -lock-mac to remove one"));
    }
    // A bare address, as in QNX's `ifconfig vp0 192.168.1.1`.
    if (eq == std::string::npos) {
      if (auto a = net::parse_address(token)) {
        c.add_addresses.push_back(a->address);
        if (a->prefix_defaulted) {
          c.warnings.push_back(
              str("address ", token, " has no prefix length; using ", a->address.to_string()));
        }
        continue;
      } else if (looks_like_address(token)) {
        return std::unexpected(a.error());
      }
      return fail("unknown-key",
                  str("'", token, "' is not a setting vpd knows; known: ", known_words()));
    }

    if (key == "peer" || key == "bind") {
      if (auto ok = check_path(key, value); !ok) return std::unexpected(ok.error());
      (key == "peer" ? c.peer : c.bind) = std::string(value);
    } else if (key == "mac") {
      auto mac = net::parse_mac(value);
      if (!mac) return std::unexpected(mac.error());
      if (!mac->is_locally_administered()) {
        c.warnings.push_back(
            str("mac=", value,
                " does not have the locally administered bit (0x02 of the first byte) set; "
                "it may collide with a real device's address"));
      }
      c.mac = *mac;
    } else if (key == "guest-mac") {
      auto mac = net::parse_mac(value);
      if (!mac) return std::unexpected(mac.error());
      c.guest_mac_given = true;
      c.guest_mac = *mac;
    } else if (key == "allow") {
      auto a = parse_allow(value);
      if (!a) return std::unexpected(a.error());
      c.add_allow.push_back(*a);
    } else if (key == "name") {
      if (auto ok = net::validate_prefix(value); !ok) return std::unexpected(ok.error());
      c.prefix = std::string(value);
    } else if (key == "peerfeats") {
      auto p = net::parse_peerfeats(value);
      if (!p) return std::unexpected(p.error());
      c.peerfeats_given = true;
      c.peerfeats = *p;
    } else if (key == "priority") {
      auto p = parse_number<int>(key, value, 0, kMaxPriority);
      if (!p) return std::unexpected(p.error());
      c.priority = *p;
    } else if (key == "mtu") {
      auto m = parse_number<uint32_t>(key, value, kMinMtu, kMaxMtu);
      if (!m) return std::unexpected(m.error());
      c.mtu = *m;
    } else if (key == "queues") {
      auto q = parse_number<uint32_t>(key, value, 1, kMaxQueuePairs);
      if (!q) return std::unexpected(q.error());
      c.queues = *q;
    } else if (key == "mode") {
      uint32_t mode = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), mode, 8);
      if (value.empty() || ec != std::errc{} || end != value.data() + value.size() || mode > 0777) {
        return fail("bad-value", str("mode=", value,
                                     " must be octal permission bits such as 0660 (at most 0777)"));
      }
      c.socket_mode = mode;
    } else if (key == "owner" || key == "group") {
      if (auto ok = need_value(key, value); !ok) return std::unexpected(ok.error());
      if (value.find_first_of(" \t:/") != std::string_view::npos) {
        return fail("bad-value", str(key, "=", value, " must be a user or group name or number"));
      }
      (key == "owner" ? c.owner : c.group) = std::string(value);
    } else if (key == "transport") {
      auto t = transport_by_name(value);
      if (!t) {
        return fail("bad-value",
                    str("transport=", value, " is not one of vhost-user, stream, tap"));
      }
      c.transport = *t;
    } else if (key == "bridge") {
      if (auto ok = need_value(key, value); !ok) return std::unexpected(ok.error());
      if (auto ok = net::validate_ifname(value); !ok) return std::unexpected(ok.error());
      c.bridge = std::string(value);
    } else if (key == "address") {
      auto a = net::parse_address(value);
      if (!a) return std::unexpected(a.error());
      c.add_addresses.push_back(a->address);
      if (a->prefix_defaulted) {
        c.warnings.push_back(
            str("address=", value, " has no prefix length; using ", a->address.to_string()));
      }
    } else {
      return fail("unknown-key",
                  str("'", token, "' is not a setting vpd knows; known: ", known_words()));
    }
  }
  if (c.destroy && (c.create || c.up || c.prefix || !c.sets_nothing())) {
    return fail("conflicting-settings", "destroy cannot be combined with other settings");
  }
  for (const auto& a : c.add_addresses) {
    if (std::any_of(c.del_addresses.begin(), c.del_addresses.end(),
                    [&](const auto& d) { return d.family == a.family && d.bytes == a.bytes; })) {
      return fail("conflicting-settings",
                  str("address ", a.to_string(), " is both added and removed"));
    }
  }
  return c;
}

Result<EndpointConfig> apply_change(EndpointConfig config, const Change& c) {
  if (c.transport) config.transport = *c.transport;
  if (c.peer) config.peer = *c.peer;
  if (c.bind) config.bind = *c.bind;
  if (c.mac) config.mac = *c.mac;
  if (c.peerfeats_given) config.peerfeats = c.peerfeats;
  if (c.legacy) config.legacy = *c.legacy;
  if (c.priority) config.priority = *c.priority;
  if (c.mtu) config.mtu = *c.mtu;
  if (c.queues) config.queues = *c.queues;
  if (c.socket_mode) config.socket_mode = *c.socket_mode;
  if (c.owner) config.owner = *c.owner;
  if (c.group) config.group = *c.group;
  if (c.guest_mac_given) config.guest_mac = c.guest_mac;
  if (c.lock_mac) config.lock_mac = *c.lock_mac;
  if (c.clear_allow) config.allow.clear();
  for (const auto& a : c.del_allow) std::erase(config.allow, a);
  for (const auto& a : c.add_allow) config.allow.push_back(a);
  std::sort(config.allow.begin(), config.allow.end());
  config.allow.erase(std::unique(config.allow.begin(), config.allow.end()), config.allow.end());
  if (c.bridge) config.bridge = *c.bridge;
  if (c.up) config.up = *c.up;
  config.toggles = (config.toggles | c.toggles_on) & ~c.toggles_off;
  auto& addresses = config.addresses;
  // One entry per address: removal ignores the prefix length, and a new prefix length
  // replaces the old one.
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
  if (config.bridge == config.name && !config.name.empty()) {
    return fail("conflicting-settings", str(config.name, " cannot be its own bridge"));
  }
  if (auto ok = validate(config); !ok) return std::unexpected(ok.error());
  return config;
}

}  // namespace vp::control
