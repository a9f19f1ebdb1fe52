// Registry: changes made to vpd's interfaces behind its back (`ip link del vp0`, `ip link
// set vp0 down`, an MTU or MAC changed, the bridge deleted or the port taken off it).
//
// The rule: vpd owns what an endpoint's settings say about its TAP. When the kernel stops
// matching them, vpd puts it back at once — re-creates a deleted TAP (a guest's session on
// the old one ends and its VMM reconnects), brings it back up or down, restores MTU, MAC and
// bridge port — and logs what it found. What it cannot put back (the bridge is gone, the TAP
// was renamed) is recorded as the endpoint's problem, shown by `vpctl vp0` and logged, and
// looked at again with the next change: a bridge that comes back gets its ports back.
// vpd's own changes raise the same events; they find the kernel matching and do nothing.

#include <algorithm>

#include "daemon/registry.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"

namespace vp::daemon {

void Registry::on_link_event(const net::LinkEvent& ev) {
  // The usual event is about an endpoint's own TAP under its own name: found by name, and
  // since no two endpoints share an ifindex, no other endpoint can be concerned. Only a
  // bridge, a renamed TAP or another interface needs the scan, so that the few events of
  // each create do not cost O(endpoints).
  if (ev.kind != "bridge") {
    auto named = endpoints_.find(ev.name);
    if (named != endpoints_.end() && named->second.ifindex == ev.ifindex) {
      marked_.insert(named->first);
      return;
    }
  }
  for (const auto& [name, e] : endpoints_) {
    const bool its_tap = ev.ifindex == e.ifindex || (ev.name == name && !ev.removed);
    const bool its_bridge = ev.kind == "bridge" && ev.name == e.config.bridge;
    if (its_tap || its_bridge) marked_.insert(name);
  }
}

void Registry::mark_all() {
  for (const auto& [name, e] : endpoints_) marked_.insert(name);
}

void Registry::reconcile_marked() {
  std::set<std::string> marked;
  marked.swap(marked_);
  for (const std::string& name : marked) {
    auto it = endpoints_.find(name);
    if (it == endpoints_.end()) continue;  // destroyed meanwhile
    Endpoint& e = it->second;
    const control::EndpointConfig& want = e.config;
    std::optional<net::LinkInfo> now;
    if (e.ifindex > 0) {
      auto found = netlink_.find_link(e.ifindex);
      if (!found) {
        log::warning(name, ": cannot look at its TAP: ", found.error().message);
        continue;
      }
      now = *found;
    }
    std::vector<std::string> found_changed;
    if (e.ifindex > 0 && !now) {
      found_changed.push_back(str("its TAP (ifindex ", e.ifindex, ") was deleted"));
      (void)remove_tap(e);  // the dead queue and the session on it go; a new TAP follows
    } else if (now && now->name != name) {
      const std::string problem =
          str(name, " was renamed to ", now->name,
              " behind vpd's back; vpd does not follow renames: `ip link set ", now->name,
              " down name ", name, "` puts it back, then vpd re-applies its settings");
      if (e.problems != std::vector<std::string>{problem}) {
        log::error(name, ": ", problem);
        emit(EventType::kProblem, name, problem, {{"problem", problem}});
        e.problems = {problem};
      }
      continue;
    } else if (now) {
      // transport=tap: the VMM owns the data path; the kernel's carrier says it has the TAP
      // open. An event when that changes, since no session of vpd's reports it.
      if (want.transport == control::Transport::kTap && now->carrier != e.vmm_carrier) {
        e.vmm_carrier = now->carrier;
        if (now->carrier) {
          emit(EventType::kCarrierUp, name, str(name, " has carrier: a VMM opened the TAP"));
        } else {
          emit(EventType::kCarrierDown, name,
               str(name, " lost carrier: no VMM has the TAP open any more"));
        }
      }
      if (now->mtu != want.mtu) found_changed.push_back(str("mtu ", now->mtu));
      if (now->mac != want.mac) found_changed.push_back(str("mac ", now->mac.to_string()));
      if (now->up != want.up) found_changed.push_back(now->up ? "up" : "down");
      if (!want.bridge.empty()) {
        auto bridge = netlink_.find_link(want.bridge);
        if (bridge && !*bridge) {
          found_changed.push_back(str("bridge ", want.bridge, " is gone"));
        } else if (bridge && (*bridge)->ifindex != now->master_ifindex) {
          found_changed.push_back(str("not a port of ", want.bridge));
        }
      }
    }
    if (found_changed.empty() && e.problems.empty()) continue;  // matches: vpd's own change
    if (!found_changed.empty()) {
      std::string what;
      for (const auto& c : found_changed) what += (what.empty() ? "" : ", ") + c;
      log::warning(name, ": changed behind vpd's back (", what,
                   "); putting back what its settings say");
      emit(EventType::kPutBack, name,
           str("changed behind vpd's back (", what, "); putting back what its settings say"),
           {{"found", found_changed}});
    }
    const bool had_problems = !e.problems.empty();
    std::vector<std::string> problems;
    (void)realise(e, &want, want, &problems);
    for (const auto& p : problems) {
      if (std::find(e.problems.begin(), e.problems.end(), p) == e.problems.end()) {
        log::error(name, ": cannot put back: ", p);
        emit(EventType::kProblem, name, str("cannot put back: ", p), {{"problem", p}});
      }
    }
    if (had_problems && problems.empty()) {
      log::notice(name, ": matches its settings again");
      emit(EventType::kProblemCleared, name, "matches its settings again");
    }
    e.problems = std::move(problems);
  }
}

}  // namespace vp::daemon
