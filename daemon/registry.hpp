#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/config_file.hpp"
#include "control/endpoint.hpp"
#include "control/grammar.hpp"
#include "control/protocol.hpp"
#include "control/state_file.hpp"
#include "daemon/accounts.hpp"
#include "daemon/dataplane.hpp"
#include "daemon/endpoint.hpp"
#include "daemon/events.hpp"
#include "daemon/steps.hpp"
#include "net/link.hpp"
#include "net/link_events.hpp"
#include "net/tap.hpp"
#include "sys/error.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

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
  /// `events` (may be null; must outlive it) receives created/changed/destroyed and the
  /// changes found behind vpd's back.
  Registry(net::Netlink netlink, Paths paths, std::string machine_id, Dataplane& dataplane,
           EventQueue* events = nullptr);
  ~Registry();

  /// Re-adopts (or re-creates) every saved endpoint and makes the kernel match it. An
  /// endpoint that cannot be realised is kept, with its problem recorded and logged.
  void restore(const control::State& state);

  /// Applies vpd.conf / command-line declarations whose text changed since they were
  /// last applied. Returns the errors (each already logged); the rest are applied.
  std::vector<Error> apply_declarations(const std::vector<control::ConfigEntry>& entries);

  /// Serves one control request.
  control::Response handle(const control::Request& request, const Caller& caller);

  /// Changes made behind vpd's back (daemon/link_watch.cpp). A link event marks the
  /// endpoints it may concern; reconcile_marked() then compares each with the kernel and,
  /// where they differ, puts back what vpd owns or records why it cannot.
  void on_link_event(const net::LinkEvent& event);
  /// Events were lost: every endpoint is looked at again.
  void mark_all();
  void reconcile_marked();

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
  /// Refuses what clashes with other endpoints or the host: a duplicate MAC or socket
  /// path, a bridge that is missing or no bridge, owner=/group= naming no account, and a
  /// name owned by an interface that is not a vpd TAP.
  Result<void> check_conflicts(const control::EndpointConfig& config, const Endpoint* self);
  /// Makes the kernel match `want`; `before` is what was applied before (nullptr when
  /// unknown), so that only addresses vpd itself put there are removed.
  /// With `problems`, every failing step is recorded there and the rest still done (used
  /// on restore); without, the first failure stops it and is returned.
  Result<void> realise(Endpoint& e, const control::EndpointConfig* before,
                       const control::EndpointConfig& want,
                       std::vector<std::string>* problems = nullptr);
  struct LinkState;
  /// realise()'s steps: the TAP and its link; then MAC, MTU, bridge, down; then the
  /// addresses (planned from what the kernel has), up and the data plane.
  std::vector<Step> tap_steps(Endpoint& e, const control::EndpointConfig* before,
                              const control::EndpointConfig& want, LinkState& link);
  std::vector<Step> link_steps(Endpoint& e, const control::EndpointConfig* before,
                               const control::EndpointConfig& want, LinkState& link);
  std::vector<Step> address_steps(Endpoint& e, const control::EndpointConfig* before,
                                  const control::EndpointConfig& want, const LinkState& link);
  /// Hands the endpoint's guest side to the data plane when it has none yet or a setting
  /// that the guest sees changed (the guest then reconnects).
  Result<void> sync_dataplane(Endpoint& e, const control::EndpointConfig* before,
                              const control::EndpointConfig& want);
  /// Lets the data plane go of the endpoint and deletes its TAP.
  Result<void> remove_tap(Endpoint& e);
  /// Saves one accepted change before vpd answers: `e` as it is now, or (null) the removal
  /// of `name`. One journal record, fdatasync'ed; now and then a compaction.
  Result<void> save(const Endpoint* e, const std::string& name = "");
  /// Writes every endpoint as the new snapshot and empties the journal; a failure is
  /// logged (the journal still holds every change).
  void compact();
  /// The endpoint's configuration with its live status (kernel link, guest session).
  nlohmann::json describe(const Endpoint& e);

  /// Queues an event (nothing without an event queue). With `mark`, before what workers
  /// published since then (EventQueue::publish_at).
  void emit(EventType type, const std::string& name, std::string message,
            nlohmann::json details = nullptr, std::optional<uint64_t> mark = std::nullopt);
  uint64_t event_mark() const { return events_ ? events_->mark() : 0; }

  net::Netlink netlink_;
  Accounts accounts_;
  Dataplane& dataplane_;
  EventQueue* events_;
  Paths paths_;
  std::string machine_id_;
  std::map<std::string, Endpoint> endpoints_;
  /// Endpoints a link event may concern, until reconcile_marked() looks at them.
  std::set<std::string> marked_;
  /// Records in the journal since the last compaction.
  size_t journal_records_ = 0;
};

}  // namespace vp::daemon
