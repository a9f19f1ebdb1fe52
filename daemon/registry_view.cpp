// The endpoint's JSON view: its configuration and its status (vpctl show, list, stats,
// metrics). Sets of names (features, toggles) are arrays and states are enum strings, so
// that a script never parses a sentence; vpctl words them for people.

#include <ctime>

#include "daemon/events.hpp"
#include "daemon/registry.hpp"
#include "net/ethtool.hpp"
#include "net/offloads.hpp"
#include "sys/str.hpp"

namespace vp::daemon {

using nlohmann::json;

namespace {

// "CSUM|GUEST_CSUM" (the offload table's names) as ["CSUM", "GUEST_CSUM"]; "none" is [].
json name_array(std::string_view names, char sep) {
  json out = json::array();
  while (!names.empty() && names != "none") {
    const size_t at = names.find(sep);
    if (at != 0) out.push_back(std::string(names.substr(0, at)));
    if (at == std::string_view::npos) break;
    names.remove_prefix(at + 1);
  }
  return out;
}

}  // namespace

json Registry::describe(const Endpoint& e) {
  json j = control::to_json(e.config);
  // One guest_mac: the address the guest gets, whether guest-mac= chose it or vpd derived it.
  j["guest_mac"] = control::guest_mac_of(e.config, machine_id_).to_string();
  j["guest_mac_derived"] = !e.config.guest_mac.has_value();
  j["toggles"] = name_array(net::toggle_names(e.config.toggles), ',');
  const uint64_t features = e.config.features();
  json status{
      {"ifindex", e.ifindex},
      {"features", name_array(net::feature_names(features), '|')},
      {"features_hex", control::peerfeats_text(features)},
      {"tun_offloads", net::tun_offload_names(e.tun_offloads)},
      {"vnet_hdr_len", e.config.vnet_hdr_len()},
      {"guest", "not-attached"},
      {"declared", e.declared},
  };
  json problems = e.problems;
  auto link = e.ifindex > 0 ? netlink_.find_link(e.ifindex)
                            : Result<std::optional<net::LinkInfo>>(std::nullopt);
  if (link && *link) {
    status["link"] = (*link)->up ? "up" : "down";
    status["carrier"] = (*link)->carrier;
    std::string master;
    if ((*link)->master_ifindex) {
      auto m = netlink_.find_link((*link)->master_ifindex);
      if (m && *m) master = (*m)->name;
    }
    status["master"] = master;
    status["kernel_mac"] = (*link)->mac.to_string();
    status["kernel_mtu"] = (*link)->mtu;
  } else {
    status["link"] = "absent";
    status["carrier"] = false;
    status["master"] = "";
    if (link && e.problems.empty()) problems.push_back("the TAP device does not exist");
  }
  if (e.config.transport == control::Transport::kTap) {
    // The VMM owns the data path and sets the TAP's offloads itself: show what the kernel
    // has now. Carrier is the kernel's: on while a VMM has a queue of the TAP open.
    if (auto active = net::tun_offloads_active(e.config.name)) {
      status["tun_offloads"] = net::tun_offload_names(*active);
    }
    status["guest"] = status.value("carrier", false) ? "attached" : "not-attached";
    status["peerfeats_note"] =
        "advisory: vpd gives the TAP these offloads when it provisions it, and the VMM sets "
        "its own (what the guest negotiated) when it opens it; tun offloads shows what the "
        "kernel has now";
  }
  if (auto v = dataplane_.view(e.config.name)) {
    status["guest"] = std::string(session_state_name(v->state));
    status["socket"] = v->socket;
    if (v->frontend) status["frontend"] = peer_process_json(*v->frontend);
    // Only the counters this transport's data path can move: a stream endpoint has no kicks,
    // a vhost-user one no stream framing errors.
    const uint8_t moved_by = e.config.transport == control::Transport::kStream
                                 ? dataplane::kCountsStream
                                 : dataplane::kCountsVhostUser;
    json counters = json::object();
    for (const auto& f : dataplane::kNetCounterFields) {
      if ((f.transports & moved_by) != 0) counters[std::string(f.name)] = v->counters.*f.member;
    }
    status["counters"] = counters;
    if (e.config.transport == control::Transport::kVhostUser) {
      // Per queue pair (queue N: receiveq N and transmitq N), as many as queues= allows.
      json queues = json::array();
      for (uint32_t p = 0; p < e.config.queues && p < v->queue_counts.size(); ++p) {
        json q = {{"queue", p}};
        for (const auto& f : dataplane::kQueueCountFields)
          q[std::string(f.name)] = v->queue_counts[p].*f.member;
        queues.push_back(std::move(q));
      }
      status["queue_counters"] = std::move(queues);
      // The data-path worker serving each queue pair while it runs (null: it does not).
      json workers = json::array();
      for (uint32_t p = 0; p < e.config.queues; ++p) {
        if (p < v->queue_workers.size() && v->queue_workers[p] >= 0) {
          workers.push_back(v->queue_workers[p]);
        } else {
          workers.push_back(nullptr);
        }
      }
      status["queue_workers"] = std::move(workers);
    }
    status["refused_peers"] = v->refused_peers;
    if (v->state == SessionState::kConnected) {
      status["session"] = {
          {"features", name_array(net::feature_names(v->features), '|')},
          {"features_hex", control::peerfeats_text(v->features)},
          {"ring", v->features ? (v->packed ? "packed" : "split") : "-"},
          {"queues_running", v->queues_running},
          {"queues", v->queues},
          {"sessions", v->sessions},
          {"refused_messages", v->refused_messages},
          {"dirty_logging", v->dirty_logging},
          {"broken_queues", v->broken_queues},
      };
      if (!v->tx_path.empty()) status["session"]["tx_path"] = v->tx_path;
      if (v->features) {
        status["tun_offloads"] = net::tun_offload_names(v->tun_offloads);
        status["vnet_hdr_len"] = v->hdr_len;
      }
    }
  }
  // The link in the session's terms: a guest may be connected before its driver starts the
  // queues (no carrier yet), which is not the same as no guest at all.
  const std::string link_word = status.value("link", "absent");
  const std::string guest = status.value("guest", "");
  status["link_state"] = link_word != "up"                ? link_word
                         : status.value("carrier", false) ? "carrier-up"
                         : guest == "connected"           ? "guest-not-started"
                                                          : "no-guest";
  status["problems"] = problems;
  j["status"] = status;
  return j;
}

Result<json> Registry::show(const std::string& name) {
  auto it = endpoints_.find(name);
  if (it == endpoints_.end()) {
    return fail("no-such-endpoint", str("there is no endpoint ", name, "; see `vpctl list`"));
  }
  return describe(it->second);
}

json Registry::list() {
  json out = json::array();
  for (const auto& [name, e] : endpoints_) out.push_back(describe(e));
  return out;
}

}  // namespace vp::daemon
