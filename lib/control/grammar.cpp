#include "control/grammar.hpp"

#include <algorithm>
#include <array>
#include <charconv>

#include "control/keys.hpp"
#include "net/ifname.hpp"
#include "net/offloads.hpp"
#include "sys/str.hpp"

namespace vp::control {
namespace {

constexpr std::array<std::string_view, 4> kVerbs{"create", "up", "down", "destroy"};
// Words that vpctl uses as commands; they cannot name an endpoint either.
constexpr std::array<std::string_view, 9> kCommands{
    "list", "version", "help", "stats", "qemu-args", "show", "metrics", "set", "monitor"};

// "peer= bind= ... legacy lock-mac, create up down destroy, and the toggles ...": every
// word the grammar takes, for the unknown-key message.
std::string known_words() {
  std::string valued;
  std::string flags;
  for (const KeyRow& row : endpoint_keys()) {
    std::string& list = row.value.empty() ? flags : valued;
    list += str(list.empty() ? "" : " ", row.name, row.value.empty() ? "" : "=");
  }
  std::string toggles;
  for (const auto& t : split_commas(net::toggle_names(net::toggle::kAll))) {
    toggles += str(toggles.empty() ? "" : " ", t);
  }
  return str(valued, " ", flags, ", create up down destroy, and the toggles ", toggles,
             " (with - to disable)");
}

// "-peer -bind ... -address=CIDR -allow[=UID[:GID]] ...": the removals.
std::string removal_words() {
  std::string out;
  for (const KeyRow& row : endpoint_keys()) {
    if (!row.clear && !row.remove) continue;
    if (!out.empty()) out += ' ';
    out += str("-", row.name);
    if (row.remove) out += str(row.clear ? "[=" : "=", row.value, row.clear ? "]" : "");
  }
  return out;
}

Error unknown(std::string_view token, bool negated) {
  return Error{"unknown-key",
               str("'", token, "' is not a setting vpd knows; known: ", known_words(),
                   negated ? str(", and ", removal_words(), " to remove one") : "")};
}

// Rules between the tokens of one change.
Result<void> check_combination(const Change& c) {
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
  return {};
}

}  // namespace

bool Change::sets_nothing() const {
  // Nothing but the verbs, name= and the warnings differs from an empty Change.
  Change blank;
  blank.create = create;
  blank.destroy = destroy;
  blank.up = up;
  blank.prefix = prefix;
  blank.warnings = warnings;
  return *this == blank;
}

bool is_keyword(std::string_view token) {
  auto in = [&](const auto& list) {
    return std::find(list.begin(), list.end(), token) != list.end();
  };
  return in(kVerbs) || find_key(token) != nullptr || in(kCommands) ||
         net::toggle_by_name(token) != 0;
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
    const bool has_value = eq != std::string::npos;
    const bool negated = token.starts_with('-');
    const std::string_view key = std::string_view(token).substr(
        negated ? 1 : 0, has_value ? eq - (negated ? 1 : 0) : std::string::npos);
    const std::string_view value =
        has_value ? std::string_view(token).substr(eq + 1) : std::string_view();

    // Verbs.
    if (!negated && !has_value) {
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
    }
    // Offload toggles: tso4, -tso4.
    if (!has_value) {
      if (const uint32_t bit = net::toggle_by_name(key)) {
        (negated ? c.toggles_off : c.toggles_on) |= bit;
        ((negated ? c.toggles_on : c.toggles_off) &= ~bit);
        continue;
      }
    }
    const KeyRow* row = find_key(key);
    // Removals: -peer, -address=CIDR.
    if (negated) {
      if (row && has_value && row->remove) {
        if (auto ok = row->remove(c, value); !ok) return std::unexpected(ok.error());
        continue;
      }
      if (row && !has_value && row->clear) {
        row->clear(c);
        continue;
      }
      return std::unexpected(unknown(token, true));
    }
    // A flag (legacy), or a bare address as in QNX's `ifconfig vp0 192.168.1.1`.
    if (!has_value) {
      if (row && row->value.empty()) {
        if (auto ok = row->parse(c, ""); !ok) return std::unexpected(ok.error());
        continue;
      }
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
      return std::unexpected(unknown(token, false));
    }
    if (!row || row->value.empty()) return std::unexpected(unknown(token, false));
    if (auto ok = row->parse(c, value); !ok) return std::unexpected(ok.error());
  }
  if (auto ok = check_combination(c); !ok) return std::unexpected(ok.error());
  return c;
}

Result<EndpointConfig> apply_change(EndpointConfig config, const Change& c) {
  for (const KeyRow& row : endpoint_keys()) {
    if (row.apply) row.apply(config, c);
  }
  if (c.up) config.up = *c.up;
  config.toggles = (config.toggles | c.toggles_on) & ~c.toggles_off;
  if (config.bridge == config.name && !config.name.empty()) {
    return fail("conflicting-settings", str(config.name, " cannot be its own bridge"));
  }
  if (auto ok = validate(config); !ok) return std::unexpected(ok.error());
  return config;
}

}  // namespace vp::control
