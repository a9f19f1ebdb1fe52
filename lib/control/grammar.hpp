#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "control/endpoint.hpp"
#include "net/address.hpp"
#include "net/mac.hpp"
#include "sys/error.hpp"

namespace vp::control {

/// One request to change an endpoint, parsed from vpctl tokens: the verbs create | up |
/// down | destroy, the keys of endpoint_keys() (control/keys.hpp) as key=value or a bare
/// flag, -key for the clearable ones and -key=VALUE for a repeatable one, the offload
/// toggles rxcsum txcsum ... tso6 (and -x), and bare addresses.
/// The same grammar serves vpctl, the config file, vpd's command line and the control
/// protocol; this is its only parser. Each key's row fills its own fields below.
struct Change {
  bool create = false;
  bool destroy = false;
  std::optional<bool> up;
  std::optional<std::string> prefix;  // name=
  std::optional<Transport> transport;
  std::optional<std::string> peer;  // "" clears
  std::optional<std::string> bind;  // "" clears
  std::optional<net::Mac> mac;
  bool peerfeats_given = false;
  std::optional<uint64_t> peerfeats;  // with peerfeats_given: nullopt = back to default
  std::optional<bool> legacy;
  std::optional<int> priority;
  std::optional<uint32_t> mtu;
  std::optional<uint32_t> queues;
  std::optional<uint32_t> socket_mode;  // mode=
  std::optional<std::string> owner;     // "" clears
  std::optional<std::string> group;     // "" clears
  std::vector<std::string> add_allow;   // allow=
  std::vector<std::string> del_allow;   // -allow=X
  bool clear_allow = false;             // -allow
  bool guest_mac_given = false;
  std::optional<net::Mac> guest_mac;  // with guest_mac_given: nullopt = back to the derived one
  std::optional<bool> lock_mac;
  std::optional<uint64_t> rx_rate;    // bits per second; 0 clears
  std::optional<Rate> tx_rate;        // unset() clears
  std::optional<std::string> bridge;  // "" leaves the bridge
  std::vector<net::IfAddress> add_addresses;
  std::vector<net::IfAddress> del_addresses;
  uint32_t toggles_on = 0;
  uint32_t toggles_off = 0;
  /// Accepted, but worth telling the user (e.g. a MAC without the locally administered bit).
  std::vector<std::string> warnings;

  bool operator==(const Change&) const = default;

  /// True when it changes no setting (verbs and name= aside).
  bool sets_nothing() const;
};

/// True for words that are commands or settings, so they cannot be endpoint names.
bool is_keyword(std::string_view token);

/// Parses tokens. Codes: unknown-key, bad-value, invalid-mac, bad-peerfeats,
/// invalid-address, invalid-name, name-too-long, conflicting-settings.
Result<Change> parse_change(std::span<const std::string> tokens);

/// `config` with `change` applied, validated as a whole.
Result<EndpointConfig> apply_change(EndpointConfig config, const Change& change);

/// "192.168.1.1", "10.0.0.1/8", "fd00::1": a word meant as an address (valid or not),
/// never as a name.
bool looks_like_address(std::string_view word);

/// Splits "a,b,c" at commas (io-pkt option syntax).
std::vector<std::string> split_commas(std::string_view text);

}  // namespace vp::control
