#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/config_file.hpp"
#include "control/endpoint.hpp"
#include "control/grammar.hpp"
#include "control/protocol.hpp"
#include "control/state_file.hpp"
#include "daemon/dataplane.hpp"
#include "net/link.hpp"
#include "net/tap.hpp"
#include "sys/error.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

/// ifalias that marks a TAP as a vpd endpoint: vpd re-adopts such a TAP and refuses to
/// take over any other interface.
inline constexpr std::string_view kAliasMarker = "vpd endpoint";

/// One endpoint: its declared configuration and the kernel objects that realise it.
struct Endpoint {
  control::EndpointConfig config;
  std::string declared;  // see SavedEndpoint::declared
  net::Tap tap;          // vpd's own queue; invalid while the TAP could not be opened
  int ifindex = 0;
  unsigned tun_offloads = 0;          // what TUNSETOFFLOAD accepted
  int vnet_hdr_len = 0;               // what TUNSETVNETHDRSZ was given
  std::vector<std::string> problems;  // why the kernel does not match config, if it does not
};

/// Who asked for a change (logged with it).
struct Caller {
  std::string who;  // "uid 0 pid 1234", "vpd.conf:3", "state file"
};

/// All endpoints. Every request is atomic: when it is refused, every endpoint, the kernel
/// objects and the state file are as they were.
class Registry {
 public:
  struct Paths {
    std::string runtime_dir;
    std::string state_file;
  };

  /// `dataplane` serves the guest side of vhost-user endpoints; it must outlive the Registry.
  Registry(net::Netlink netlink, Paths paths, std::string machine_id, Dataplane& dataplane);
  ~Registry();

  /// Re-adopts (or re-creates) every saved endpoint and makes the kernel match it. An
  /// endpoint that cannot be realised is kept, with its problem recorded and logged.
  void restore(const control::State& state);

  /// Applies vpd.conf / command-line declarations whose text changed since they were
  /// last applied. Returns the errors (each already logged); the rest are applied.
  std::vector<Error> apply_declarations(const std::vector<control::ConfigEntry>& entries);

  /// Serves one control request.
  control::Response handle(const control::Request& request, const Caller& caller);

  size_t size() const { return endpoints_.size(); }
  /// Endpoints with problems.
  size_t troubled() const;

 private:
  Result<nlohmann::json> create(std::string name, const control::Change& change,
                                std::string declared, const Caller& caller);
  Result<nlohmann::json> set(const std::string& name, const control::Change& change,
                             const std::string* declared, const Caller& caller);
  Result<void> destroy(const std::string& name, const Caller& caller);
  Result<nlohmann::json> show(const std::string& name);
  nlohmann::json list();

  /// The next free PREFIX-N name, skipping endpoints and foreign interfaces (and
  /// `reserved`).
  Result<std::string> next_free_name(const std::string& prefix,
                                     const std::vector<std::string>& reserved = {});
  /// Fills in what the user left to vpd (the default bind socket) and clears what
  /// the transport cannot have.
  void normalize(control::EndpointConfig& config) const;
  /// Checks rules that span endpoints and the host: duplicate MAC or socket path,
  /// bridge existence, name owned by another interface.
  Result<void> check(const control::EndpointConfig& config, const Endpoint* self);
  /// Opens (adopting or creating) the endpoint's TAP when it is not open.
  Result<void> ensure_tap(Endpoint& e);
  /// transport=tap: creates or adopts the persistent TAP (multiqueue when queues>1), hands it
  /// to owner=/group= and lets go of it, so that the VMM opens it by name.
  Result<void> provision_tap(Endpoint& e, const control::EndpointConfig& config);
  /// Makes the kernel match `want`; `before` is what was applied before (nullptr when
  /// unknown), so that only addresses vpd itself put there are removed.
  /// With `problems`, every failing step is recorded there and the rest still done (used
  /// on restore); without, the first failure stops it and is returned.
  Result<void> realise(Endpoint& e, const control::EndpointConfig* before,
                       const control::EndpointConfig& want,
                       std::vector<std::string>* problems = nullptr);
  /// Puts an adopted interface back as it was found (after a refused create).
  void put_back(int ifindex, const net::LinkInfo& was,
                const std::vector<net::IfAddress>& addresses);
  /// Hands the endpoint's guest side to the data plane when it has none yet or a setting
  /// that the guest sees changed (the guest then reconnects).
  Result<void> sync_dataplane(Endpoint& e, const control::EndpointConfig* before,
                              const control::EndpointConfig& want);
  /// Removes the TAP device.
  Result<void> remove_tap(Endpoint& e);
  Result<void> save();
  nlohmann::json describe(const Endpoint& e);

  net::Netlink netlink_;
  Dataplane& dataplane_;
  Paths paths_;
  std::string machine_id_;
  std::map<std::string, Endpoint> endpoints_;
};

}  // namespace vp::daemon
