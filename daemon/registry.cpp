#include "daemon/registry.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "control/journal.hpp"
#include "control/keys.hpp"
#include "daemon/tap_provision.hpp"
#include "net/ifname.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"
#include "vp/version.hpp"

namespace vp::daemon {

using control::EndpointConfig;
using nlohmann::json;

namespace {

std::string join(const std::vector<std::string>& words, std::string_view sep) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += sep;
    out += w;
  }
  return out;
}

// The keys (as typed) whose values differ between `before` and `after`; up/down is "up".
std::vector<std::string> changed_keys(const EndpointConfig& before, const EndpointConfig& after) {
  std::vector<std::string> keys;
  for (const control::KeyRow& row : control::endpoint_keys()) {
    if (row.get && row.get(before) != row.get(after)) keys.emplace_back(row.name);
  }
  if (before.up != after.up) keys.emplace_back("up");
  return keys;
}

}  // namespace

void Registry::emit(EventType type, const std::string& name, std::string message, json details,
                    std::optional<uint64_t> mark) {
  if (!events_) return;
  if (mark) {
    events_->publish_at(*mark, type, name, std::move(message), std::move(details));
  } else {
    events_->publish(type, name, std::move(message), std::move(details));
  }
}

Registry::Registry(net::Netlink netlink, Paths paths, std::string machine_id, Dataplane& dataplane,
                   EventQueue* events)
    : netlink_(std::move(netlink)),
      dataplane_(dataplane),
      events_(events),
      paths_(std::move(paths)),
      machine_id_(std::move(machine_id)) {}

Registry::~Registry() {
  // Workers let go of every endpoint before the TAP handles here close.
  for (const auto& [name, e] : endpoints_) dataplane_.detach(name);
  // A clean stop leaves the whole state in the state file and an empty journal.
  if (journal_records_ > 0) compact();
}

size_t Registry::troubled() const {
  return std::count_if(endpoints_.begin(), endpoints_.end(),
                       [](const auto& kv) { return !kv.second.problems.empty(); });
}

void Registry::normalize(EndpointConfig& c) const {
  const std::string default_bind = str(paths_.runtime_dir, "/", c.name, ".sock");
  if (c.transport == control::Transport::kTap) {
    if (c.bind == default_bind) c.bind.clear();
  } else if (c.peer.empty() && c.bind.empty()) {
    c.bind = default_bind;
  }
}

Result<void> Registry::check_conflicts(const EndpointConfig& c, const Endpoint* self) {
  for (const auto& [name, other] : endpoints_) {
    if (&other == self) continue;
    if (other.config.mac == c.mac) {
      return fail("duplicate-mac", str("mac ", c.mac.to_string(), " is already used by ", name,
                                       "; every endpoint needs its own address"));
    }
    for (const std::string* path : {&c.bind, &c.peer}) {
      if (path->empty()) continue;
      if (*path == other.config.bind || *path == other.config.peer) {
        return fail("duplicate-path",
                    str(*path, " is already a socket of ", name, "; give each endpoint its own"));
      }
    }
  }
  if (auto ids = socket_ids(c, accounts_); !ids) return std::unexpected(ids.error());
  if (!c.bridge.empty()) {
    auto bridge = netlink_.find_link(c.bridge);
    if (!bridge) return std::unexpected(bridge.error());
    if (!*bridge) {
      return fail("no-such-bridge",
                  str("bridge ", c.bridge, " does not exist; create it first (e.g. `ip link add ",
                      c.bridge, " type bridge`) or leave bridge= out"));
    }
    if ((*bridge)->kind != "bridge") {
      return fail("no-such-bridge",
                  str(c.bridge, " is a ", (*bridge)->kind.empty() ? "plain" : (*bridge)->kind,
                      " interface, not a bridge"));
    }
  }
  if (!self || self->tap.fd() < 0) {
    auto link = netlink_.find_link(c.name);
    if (!link) return std::unexpected(link.error());
    if (*link && !is_vpd_tap(**link) && !(self && self->ifindex == (*link)->ifindex)) {
      return fail("name-taken", str("an interface named ", c.name,
                                    " already exists and is not a vpd endpoint; vpd never takes "
                                    "over other interfaces, so pick another name"));
    }
  }
  return {};
}

Result<void> Registry::remove_tap(Endpoint& e) {
  dataplane_.detach(e.config.name);
  return delete_vpd_tap(netlink_, e);
}

Result<void> Registry::save(const Endpoint* e, const std::string& name) {
  const std::string record =
      e ? control::encode_put({e->config, e->declared}) : control::encode_remove(name);
  if (auto ok = control::append_journal(paths_.state_file, record); !ok) {
    return fail("state-write-failed",
                str("vpd could not save its state (", ok.error().message,
                    "), so the change was undone; check that the state directory is writable"));
  }
  // Compacting costs O(endpoints); doing it only after as many changes as there are
  // endpoints (at least kCompactAfter) keeps a change O(1) on average and bounds the
  // journal to about the size of the snapshot.
  constexpr size_t kCompactAfter = 256;
  if (++journal_records_ >= std::max(kCompactAfter, endpoints_.size())) compact();
  return {};
}

void Registry::compact() {
  control::State state;
  for (const auto& [name, e] : endpoints_) state.endpoints.push_back({e.config, e.declared});
  if (auto ok = control::compact_state(paths_.state_file, state); !ok) {
    // Every change is still in the journal; the next compaction tries again.
    log::warning("could not compact the saved state: ", ok.error().message);
    return;
  }
  journal_records_ = 0;
}

void Registry::restore(const control::State& state) {
  for (const auto& saved : state.endpoints) {
    Endpoint e;
    e.config = saved.config;
    e.declared = saved.declared;
    (void)realise(e, nullptr, e.config, &e.problems);
    for (const auto& p : e.problems) log::error(e.config.name, ": not restored as saved: ", p);
    if (e.problems.empty()) log::info(e.config.name, ": restored");
    endpoints_.emplace(e.config.name, std::move(e));
  }
  // Start from a fresh snapshot and an empty journal.
  compact();
}

std::vector<Error> Registry::apply_declarations(const std::vector<control::ConfigEntry>& entries) {
  std::vector<Error> errors;
  std::vector<std::string> reserved;
  for (const auto& entry : entries) {
    if (!entry.name.empty()) reserved.push_back(entry.name);
  }
  for (const auto& [name, e] : endpoints_) {
    if (e.declared.empty()) reserved.push_back(name);
  }
  std::set<std::string> seen;
  for (const auto& entry : entries) {
    const Caller caller{entry.origin};
    std::string name = entry.name;
    const std::string spec = entry.spec();
    if (name.empty()) {
      // An unnamed declaration keeps the endpoint it was applied to before: the one with
      // the same text, else the declared one with the same socket path (the guest).
      for (const auto& [n, e] : endpoints_) {
        if (e.declared == spec && !seen.contains(n)) name = n;
      }
      for (const auto& [n, e] : endpoints_) {
        if (!name.empty()) break;
        if (e.declared.empty() || seen.contains(n)) continue;
        for (const auto& path : {entry.change.peer, entry.change.bind}) {
          if (path && !path->empty() && (*path == e.config.peer || *path == e.config.bind)) {
            name = n;
          }
        }
      }
    }
    if (name.empty()) {
      auto free = next_free_name(entry.change.prefix.value_or("vp"), reserved);
      if (!free) {
        errors.push_back(free.error());
        continue;
      }
      name = *free;
      reserved.push_back(name);
    }
    seen.insert(name);
    control::Change change = entry.change;
    change.prefix.reset();  // the name is chosen; create() must not pick another
    auto it = endpoints_.find(name);
    Result<json> done;
    if (it == endpoints_.end()) {
      done = create(name, change, spec, caller);
    } else if (it->second.declared == spec) {
      continue;  // unchanged since it was applied: keep run-time changes
    } else {
      done = set(name, change, &spec, caller);
    }
    if (!done) {
      Error e{done.error().code, str(entry.origin, ": ", done.error().message)};
      log::error(e.message);
      errors.push_back(std::move(e));
    }
  }
  for (auto& [name, e] : endpoints_) {
    if (e.declared.empty() || seen.contains(name)) continue;
    log::notice(name, ": no longer declared; kept as a run-time endpoint (`vpctl ", name,
                " destroy` removes it)");
    e.declared.clear();
    (void)save(&e);
  }
  return errors;
}

Result<std::string> Registry::next_free_name(const std::string& prefix,
                                             const std::vector<std::string>& reserved) {
  if (auto ok = net::validate_prefix(prefix); !ok) return std::unexpected(ok.error());
  for (int i = 0; i < 100000; ++i) {
    std::string name = str(prefix, i);
    if (name.size() > net::kMaxIfnameLength) break;
    if (endpoints_.contains(name)) continue;
    if (std::find(reserved.begin(), reserved.end(), name) != reserved.end()) continue;
    auto link = netlink_.find_link(name);
    if (!link) return std::unexpected(link.error());
    if (*link) continue;
    return name;
  }
  return fail("name-too-long", str("no free name with prefix '", prefix, "' is left"));
}

Result<json> Registry::create(std::string name, const control::Change& change, std::string declared,
                              const Caller& caller) {
  if (name.empty()) {
    auto free = next_free_name(change.prefix.value_or("vp"));
    if (!free) return std::unexpected(free.error());
    name = *free;
  } else if (change.prefix) {
    return fail("conflicting-settings",
                "name=PREFIX picks a name for `vpctl create`; it cannot rename an endpoint");
  }
  if (auto ok = net::validate_ifname(name); !ok) return std::unexpected(ok.error());
  if (control::is_keyword(name)) {
    return fail("invalid-name", str("'", name, "' is a vpctl word and cannot name an endpoint"));
  }
  if (endpoints_.contains(name)) {
    return fail("endpoint-exists",
                str(name, " already exists; change it with `vpctl ", name, " key=value`"));
  }
  EndpointConfig base;
  base.name = name;
  base.mac = net::stable_mac(machine_id_, name);
  auto config = control::apply_change(base, change);
  if (!config) return std::unexpected(config.error());
  normalize(*config);
  if (auto ok = control::validate(*config); !ok) return std::unexpected(ok.error());
  if (auto ok = check_conflicts(*config, nullptr); !ok) return std::unexpected(ok.error());

  Endpoint e;
  e.config = *config;
  e.declared = std::move(declared);
  // A TAP left by an earlier vpd (marked, but in no state) is adopted; if the create is
  // refused, it must stay as it was found, not be deleted.
  std::optional<net::LinkInfo> found;
  std::vector<net::IfAddress> found_addresses;
  if (auto link = netlink_.find_link(name); link && *link) {
    found = **link;
    if (auto a = netlink_.addresses(found->ifindex)) found_addresses = std::move(*a);
  }
  const uint64_t mark = event_mark();
  if (auto ok = realise(e, nullptr, *config); !ok) {
    if (found) {
      dataplane_.detach(name);
      put_back(netlink_, found->ifindex, *found, found_addresses);
      e.tap.close();
    } else {
      (void)remove_tap(e);
    }
    return std::unexpected(ok.error());
  }
  auto [it, inserted] = endpoints_.emplace(name, std::move(e));
  if (auto ok = save(&it->second); !ok) {
    (void)remove_tap(it->second);
    endpoints_.erase(it);
    return std::unexpected(ok.error());
  }
  const std::string settings = join(control::to_tokens(*config), " ");
  log::notice(name, ": created with ", settings, " (by ", caller.who, ")");
  emit(EventType::kCreated, name, str("created with ", settings, " (by ", caller.who, ")"),
       {{"by", caller.who}}, mark);
  return describe(it->second);
}

Result<json> Registry::set(const std::string& name, const control::Change& change,
                           const std::string* declared, const Caller& caller) {
  auto it = endpoints_.find(name);
  if (it == endpoints_.end()) {
    return fail("no-such-endpoint", str("there is no endpoint ", name, "; create it with `vpctl ",
                                        name, " create`, or see `vpctl list`"));
  }
  Endpoint& e = it->second;
  if (change.prefix) {
    return fail("conflicting-settings",
                "name=PREFIX picks a name for `vpctl create`; it cannot rename an endpoint");
  }
  const EndpointConfig before = e.config;
  auto config = control::apply_change(before, change);
  if (!config) return std::unexpected(config.error());
  normalize(*config);
  if (auto ok = control::validate(*config); !ok) return std::unexpected(ok.error());
  if (auto ok = check_conflicts(*config, &e); !ok) return std::unexpected(ok.error());

  const uint64_t mark = event_mark();
  if (auto ok = realise(e, &before, *config); !ok) {
    // Put the kernel back as it was; the endpoint keeps its old configuration.
    if (auto back = realise(e, &*config, before); !back) {
      log::error(name, ": could not undo a refused change: ", back.error().message);
    }
    return std::unexpected(ok.error());
  }
  const std::string old_declared = e.declared;
  e.config = *config;
  if (declared) e.declared = *declared;
  if (auto ok = save(&e); !ok) {
    e.config = before;
    e.declared = old_declared;
    (void)realise(e, &*config, before);
    return std::unexpected(ok.error());
  }
  e.problems.clear();
  log::notice(name, ": set ", join(control::to_tokens(*config), " "), " (by ", caller.who, ")");
  if (auto keys = changed_keys(before, *config); !keys.empty()) {
    emit(EventType::kChanged, name, str("changed ", join(keys, ", "), " (by ", caller.who, ")"),
         {{"keys", keys}, {"by", caller.who}}, mark);
  }
  return describe(e);
}

Result<void> Registry::destroy(const std::string& name, const Caller& caller) {
  auto it = endpoints_.find(name);
  if (it == endpoints_.end()) {
    return fail("no-such-endpoint", str("there is no endpoint ", name, "; see `vpctl list`"));
  }
  Endpoint e = std::move(it->second);
  endpoints_.erase(it);
  if (auto ok = save(nullptr, name); !ok) {
    endpoints_.emplace(name, std::move(e));
    return std::unexpected(ok.error());
  }
  if (auto ok = remove_tap(e); !ok) {
    log::error(name, ": removed from vpd, but the kernel kept the TAP: ", ok.error().message);
  }
  // The bind socket goes with the endpoint (the listener closed with the detach).
  struct stat st {};
  if (!e.config.bind.empty() && ::lstat(e.config.bind.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    ::unlink(e.config.bind.c_str());
  }
  log::notice(name, ": destroyed (by ", caller.who, ")");
  emit(EventType::kDestroyed, name, str("destroyed (by ", caller.who, ")"), {{"by", caller.who}});
  return {};
}

control::Response Registry::handle(const control::Request& r, const Caller& caller) {
  control::Response response;
  auto finish = [&](Result<json> result) {
    if (!result) return control::error_response(result.error());
    response.result = std::move(*result);
    return response;
  };
  if (r.op == control::op::kHello) {
    return finish(json{{"daemon", "vpd"},
                       {"version", kVersion},
                       {"protocol", kProtocolVersion},
                       {"endpoints", endpoints_.size()}});
  }
  if (r.op == control::op::kList) return finish(list());
  if (r.op != control::op::kCreate && r.endpoint.empty()) {
    return control::error_response({"bad-request", str("op ", r.op, " needs an endpoint")});
  }
  if (!r.endpoint.empty()) {
    if (auto ok = net::validate_ifname(r.endpoint); !ok) return control::error_response(ok.error());
  }
  if (r.op == control::op::kShow) return finish(show(r.endpoint));
  if (r.op == control::op::kDestroy) {
    if (!r.args.empty()) {
      return control::error_response(
          {"conflicting-settings", "destroy cannot be combined with other settings"});
    }
    if (auto ok = destroy(r.endpoint, caller); !ok) return control::error_response(ok.error());
    return finish(json{{"destroyed", r.endpoint}});
  }
  auto change = control::parse_change(r.args);
  if (!change) return control::error_response(change.error());
  response.warnings = change->warnings;
  if (change->destroy) {
    if (r.op == control::op::kCreate) {
      return control::error_response(
          {"conflicting-settings", "destroy cannot be combined with create"});
    }
    if (auto ok = destroy(r.endpoint, caller); !ok) return control::error_response(ok.error());
    return finish(json{{"destroyed", r.endpoint}});
  }
  if (r.op == control::op::kCreate || change->create) {
    return finish(create(r.endpoint, *change, "", caller));
  }
  return finish(set(r.endpoint, *change, nullptr, caller));
}

}  // namespace vp::daemon
