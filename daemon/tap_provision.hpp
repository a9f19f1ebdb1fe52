#pragma once

#include <sys/types.h>

#include <utility>
#include <vector>

#include "control/endpoint.hpp"
#include "daemon/accounts.hpp"
#include "daemon/endpoint.hpp"
#include "net/address.hpp"
#include "net/link.hpp"
#include "sys/error.hpp"

namespace vp::daemon {

/// True for a TAP that vpd made (kind tun, ifalias kAliasMarker): the only kind of
/// interface vpd adopts, changes or deletes.
bool is_vpd_tap(const net::LinkInfo& link);

/// The uid and gid a bind socket (or a transport=tap TAP) is handed to; -1 keeps root's.
/// Fails (bad-value) when owner= or group= names no account on this host. Names are looked
/// up through `accounts`.
Result<std::pair<uid_t, gid_t>> socket_ids(const control::EndpointConfig& config,
                                           Accounts& accounts);

/// Who reads the TAP's frames.
enum class TapUse {
  kVpdQueue,  // vpd: it keeps a queue (Endpoint::tap) and runs the data path
  /// transport=tap, the VMM: the TAP is persistent, handed to owner=/group= with its
  /// offloads preset, multiqueue exactly when queues>1, and vpd lets go of it so that the
  /// VMM opens it by name. While a VMM holds it, it is left as it is.
  kForVmm,
};

/// Adopts the vpd TAP named config.name, or creates it, marks it as vpd's and sets
/// e.ifindex (and, for kVpdQueue, e.tap; nothing when e.tap is open already). Refuses
/// (name-taken) an interface of that name that is not a vpd TAP. A TAP it created is made
/// non-persistent again (so it goes) when a later part fails.
Result<void> adopt_or_create_tap(net::Netlink& netlink, Accounts& accounts, Endpoint& e,
                                 const control::EndpointConfig& config, TapUse use);

/// Deletes the endpoint's TAP when it is a vpd TAP (found by ifindex or, when the endpoint
/// never got one, by name) and closes vpd's queue. The data plane must have let go of it.
Result<void> delete_vpd_tap(net::Netlink& netlink, Endpoint& e);

/// Puts an adopted interface back as it was found (after a refused create): link state,
/// MAC, MTU, bridge, and no address it did not have. Best effort.
void put_back(net::Netlink& netlink, int ifindex, const net::LinkInfo& was,
              const std::vector<net::IfAddress>& addresses);

}  // namespace vp::daemon
