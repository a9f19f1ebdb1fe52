#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "net/address.hpp"
#include "net/mac.hpp"
#include "net/offloads.hpp"
#include "sys/error.hpp"

namespace vp::control {

enum class Transport { kVhostUser, kStream, kTap };

std::string_view transport_name(Transport t);
std::optional<Transport> transport_by_name(std::string_view name);

inline constexpr uint32_t kMinMtu = 68;
inline constexpr uint32_t kMaxMtu = 65521;  // a TAP's max_mtu (MAX_MTU less headers)
inline constexpr int kMaxPriority = 99;     // SCHED_FIFO range; 0 = normal scheduling
inline constexpr uint32_t kMaxQueuePairs = 16;
inline constexpr uint32_t kDefaultSocketMode = 0660;
/// Rate limits: at least 8 kbit/s; at most 16 Gbit/s (tbf's 32-bit bytes-per-second rate as
/// libnl sets it).
inline constexpr uint64_t kMinRateBits = 8'000;
inline constexpr uint64_t kMaxRateBits = 16'000'000'000;
/// Packet-rate limits (tx-rate=…pps): 1 to 100 Mpps.
inline constexpr uint64_t kMinRatePackets = 1;
inline constexpr uint64_t kMaxRatePackets = 100'000'000;

/// A limit as tx-rate= takes it: bits per second or packets per second, one of the two
/// (both 0: no limit).
struct Rate {
  uint64_t bits = 0;     // bits per second of Ethernet frame bytes; 0 = no byte limit
  uint64_t packets = 0;  // frames per second; 0 = no packet limit
  bool unset() const { return bits == 0 && packets == 0; }
  bool operator==(const Rate&) const = default;
};

/// Everything the operator declared about one endpoint. This is what the state file
/// saves and what vpd makes the kernel match.
struct EndpointConfig {
  std::string name;
  Transport transport = Transport::kVhostUser;
  std::string peer;  // vpd dials it; "" = none
  std::string bind;  // vpd listens there; "" = none
  net::Mac mac;
  std::optional<uint64_t> peerfeats;  // nullopt: offer everything vpd supports
  bool legacy = false;
  int priority = 0;
  uint32_t mtu = 1500;
  std::string bridge;                     // "" = no bridge
  std::vector<net::IfAddress> addresses;  // sorted, unique
  uint32_t toggles = net::toggle::kAll;
  bool up = false;
  uint32_t queues = 1;  // queue pairs (vhost-user MQ / TAP IFF_MULTI_QUEUE queues)
  /// The bind socket's (or, with transport=tap, the TAP's) permissions. owner/group are
  /// names or numbers; "" = root and group vpd when it exists.
  uint32_t socket_mode = kDefaultSocketMode;
  std::string owner;
  std::string group;
  /// allow=: who may connect to the bind socket, "UID" or "UID:GID" (SO_PEERCRED on accept);
  /// sorted, unique. Empty: whoever the socket's permissions let in.
  std::vector<std::string> allow;
  /// guest-mac=: the guest NIC's MAC (qemu-args, GET_CONFIG, lock-mac). Unset: derived from
  /// the machine id and the endpoint name, stable across restarts.
  std::optional<net::Mac> guest_mac;
  /// lock-mac: frames from the guest whose source MAC is not the guest MAC are dropped.
  bool lock_mac = false;
  /// rx-rate=: the host→guest limit, a tbf qdisc on the TAP, in bits per second; 0 = none.
  uint64_t rx_rate = 0;
  /// tx-rate=: the guest→host limit, a token bucket in vpd's data path (vhost-user only):
  /// while it is empty vpd takes no chain from the transmit ring (back-pressure, no drops).
  Rate tx_rate;

  bool operator==(const EndpointConfig&) const = default;

  /// The offload features this endpoint offers a guest (peerfeats ∩ toggles ∩ supported).
  /// A stream endpoint carries no virtio-net header, so it has none.
  uint64_t features() const {
    if (transport == Transport::kStream) return 0;
    return net::effective_features(peerfeats, toggles);
  }
  /// The virtio_net_hdr length in use: 10 with `legacy`, else 12.
  int vnet_hdr_len() const { return legacy ? 10 : 12; }
};

/// The guest NIC's MAC: guest-mac= when set, else one derived from `machine_id` and the
/// endpoint name (locally administered, the same on every restart).
net::Mac guest_mac_of(const EndpointConfig& config, std::string_view machine_id);

/// A rate as typed: a whole number and a unit, bit kbit mbit gbit (bits per second) or
/// bps kbps mbps gbps (bytes per second), decimal multiples as tc counts them; in bits/s.
Result<uint64_t> parse_rate(std::string_view key, std::string_view text);
/// Bits per second in the largest unit that divides them: "100mbit", "1500kbit".
std::string rate_text(uint64_t bits);
/// tx-rate=: a bit rate as parse_rate() takes it, or a packet rate: a whole number and pps,
/// kpps or mpps (decimal multiples), e.g. "20kpps".
Result<Rate> parse_tx_rate(std::string_view key, std::string_view text);
/// "100mbit", "20kpps"; "" when unset.
std::string rate_text(const Rate& rate);

/// True when a peer with `uid` and `gid` may connect under the allow= list (an empty list
/// allows everyone).
bool peer_allowed(const std::vector<std::string>& allow, uint32_t uid, uint32_t gid);

/// Rules that span several settings (e.g. a stream endpoint has no virtio header, so its
/// peerfeats must be 0). Single values were checked when parsed.
Result<void> validate(const EndpointConfig& config);

nlohmann::json to_json(const EndpointConfig& config);
/// Reads what to_json() wrote; every value is checked again (the file may be edited).
Result<EndpointConfig> endpoint_from_json(const nlohmann::json& j);

/// The endpoint as vpctl tokens, e.g. {"mac=02:..", "bridge=br0", "up"}.
std::vector<std::string> to_tokens(const EndpointConfig& config);

/// "0660".
std::string mode_text(uint32_t mode);

/// "0x19c3", or "default" when unset.
std::string peerfeats_text(std::optional<uint64_t> peerfeats);

}  // namespace vp::control
