#include "ctl/output.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace vp::ctl {

using nlohmann::json;

namespace {

std::string text(const json& j, const char* key, std::string_view fallback = "-") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::string(fallback);
  if (it->is_string()) {
    return it->get<std::string>().empty() ? std::string(fallback) : it->get<std::string>();
  }
  return it->dump();
}

std::string joined(const json& j, const char* key, std::string_view sep = " ") {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->empty()) return "-";
  std::string out;
  for (const auto& v : *it) {
    if (!out.empty()) out += sep;
    out += v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out;
}

const json& status_of(const json& e) {
  static const json kEmpty = json::object();
  auto it = e.find("status");
  return it != e.end() && it->is_object() ? *it : kEmpty;
}

std::string state_word(const json& e) {
  const json& s = status_of(e);
  std::string link = text(s, "link", "?");
  if (!status_of(e).value("problems", json::array()).empty()) link += "!";
  return link;
}

std::string socket_of(const json& e) {
  const std::string bind = text(e, "bind", "");
  const std::string peer = text(e, "peer", "");
  if (!bind.empty()) return "bind=" + bind;
  if (!peer.empty()) return "peer=" + peer;
  return "-";
}

std::string toggles_line(const json& e) {
  static const char* kAll[] = {"rxcsum",   "txcsum",   "rxcsum6",  "txcsum6", "tcp4csum",
                               "udp4csum", "tcp6csum", "udp6csum", "tso4",    "tso6"};
  const std::string on = "," + text(e, "toggles", "") + ",";
  std::string off;
  for (const char* t : kAll) {
    if (on.find(std::string(",") + t + ",") == std::string::npos) off += std::string(" -") + t;
  }
  return off.empty() ? "all on" : "off:" + off;
}

// "key:   value" lines, values aligned.
std::string key_value_lines(const std::vector<std::pair<std::string, std::string>>& lines) {
  size_t width = 0;
  for (const auto& [k, v] : lines) width = std::max(width, k.size());
  std::string out;
  for (const auto& [k, v] : lines)
    out += k + ":" + std::string(width - k.size() + 1, ' ') + v + "\n";
  return out;
}

}  // namespace

std::string format_list(const json& endpoints) {
  std::vector<std::vector<std::string>> rows{
      {"NAME", "TRANSPORT", "STATE", "MAC", "MTU", "BRIDGE", "ADDRESSES", "SOCKET"}};
  if (endpoints.is_array()) {
    for (const auto& e : endpoints) {
      rows.push_back({text(e, "name"), text(e, "transport"), state_word(e), text(e, "mac"),
                      text(e, "mtu"), text(e, "bridge"), joined(e, "addresses", ","),
                      socket_of(e)});
    }
  }
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  if (rows.size() == 1)
    out += "(no endpoints; create one with `vpctl create` or `vpctl vp0 create`)\n";
  return out;
}

std::string format_show(const json& e) {
  const json& s = status_of(e);
  std::string link = text(s, "link", "?");
  if (link == "up") {
    link += s.value("carrier", false) ? ", carrier on" : ", no carrier (no guest attached)";
  }
  const bool stream = text(e, "transport") == "stream";
  std::string peerfeats = text(e, "peerfeats", "");
  if (peerfeats.empty()) {
    peerfeats = stream ? "0 (a stream carries no virtio-net header, so no offloads)"
                       : "default (everything vpd supports)";
  }
  std::vector<std::pair<std::string, std::string>> lines{
      {"name", text(e, "name")},
      {"transport", text(e, "transport")},
      {"bind", text(e, "bind")},
      {"peer", text(e, "peer")},
      {"mac", text(e, "mac")},
      {"mtu", text(e, "mtu")},
      {"bridge", text(e, "bridge")},
      {"addresses", joined(e, "addresses")},
      {"admin state", e.value("up", false) ? "up" : "down"},
      {"link", link},
      {"ifindex", text(s, "ifindex")},
      {"peerfeats", peerfeats},
      {"features", text(s, "features")},
      {"features mask", text(s, "features_hex")},
      {"tun offloads", text(s, "tun_offloads")},
      {"vnet header",
       text(s, "vnet_hdr_len") + " bytes" + (e.value("legacy", false) ? " (legacy)" : "")},
      {"toggles", toggles_line(e)},
      {"priority", text(e, "priority")},
      {"rx rate", text(e, "rx_rate", "").empty()
                      ? "unlimited"
                      : text(e, "rx_rate") + " host→guest (tbf qdisc on the TAP)"},
      {"guest", text(s, "guest")},
      {"guest mac",
       text(s, "guest_mac") +
           (e.value("lock_mac", false) ? " (lock-mac: other source MACs are dropped)" : "")},
      {"allow", e.contains("allow") && !e["allow"].empty()
                    ? joined(e, "allow") +
                          " (uid[:gid]; others refused: " + text(s, "refused_peers", "0") + ")"
                    : "anyone the socket's permissions let in"},
  };
  if (const std::string note = text(s, "peerfeats_note", ""); !note.empty()) {
    lines.emplace_back("peerfeats note", note);
  }
  if (auto session = s.find("session"); session != s.end() && session->is_object() && stream) {
    lines.emplace_back("framing", "QEMU stream: 4-byte big-endian length, raw Ethernet frame");
    lines.emplace_back("sessions", text(*session, "sessions"));
  } else if (session != s.end() && session->is_object()) {
    const json& ses = *session;
    lines.emplace_back("negotiated", text(ses, "features"));
    lines.emplace_back("ring", text(ses, "ring"));
    if (ses.contains("tx_path")) lines.emplace_back("tx path", text(ses, "tx_path"));
    lines.emplace_back("queues running",
                       text(ses, "queues_running") + " of " + text(ses, "queues"));
    lines.emplace_back("refused messages", text(ses, "refused_messages"));
    // Live migration: whether vpd marks what it writes, and the pages it marked so far.
    const json& c = s.value("counters", json::object());
    lines.emplace_back("dirty logging",
                       std::string(ses.value("dirty_logging", false) ? "on" : "off") + " (" +
                           text(c, "dirty_pages_logged", "0") + " pages logged)");
    for (const auto& q : ses.value("broken_queues", json::array())) {
      lines.emplace_back("broken queue", q.get<std::string>());
    }
  }
  const std::string declared = text(s, "declared", "");
  lines.emplace_back("declared", declared.empty() ? "at run time (vpctl)" : declared);
  if (auto p = s.find("problems"); p != s.end() && p->is_array()) {
    for (const auto& problem : *p) lines.emplace_back("problem", problem.get<std::string>());
  }
  return key_value_lines(lines);
}

std::string format_stats(const json& e) {
  const json& s = status_of(e);
  std::vector<std::pair<std::string, std::string>> lines{{"guest", text(s, "guest")}};
  if (auto c = s.find("counters"); c != s.end() && c->is_object()) {
    for (const auto& [key, value] : c->items()) lines.emplace_back(key, value.dump());
  } else {
    lines.emplace_back("counters", "none (the endpoint has no data path)");
  }
  return key_value_lines(lines);
}

std::string format_vmm_args(const json& e) {
  const std::string name = text(e, "name");
  const std::string transport = text(e, "transport");
  const std::string bind = text(e, "bind", "");
  const std::string peer = text(e, "peer", "");
  const std::string guest_mac = text(status_of(e), "guest_mac");
  // Queue pairs: QEMU's netdev takes queues=N; its virtio-net-pci needs mq=on and an MSI-X
  // vector per virtqueue plus one for config changes and one for the control queue.
  int64_t queues = 1;
  if (auto it = e.find("queues"); it != e.end() && it->is_number_integer()) {
    queues = it->get<int64_t>();
  }
  const bool mq = queues > 1;
  const std::string netdev_queues = mq ? ",queues=" + std::to_string(queues) : "";
  const std::string device_mq =
      mq ? ",mq=on,vectors=" + std::to_string(2 * queues + 2) : std::string();
  std::string out;
  if (transport == "vhost-user") {
    // vpd listens on bind= (QEMU connects and reconnects); with only peer=, QEMU serves.
    const std::string chardev =
        !bind.empty() ? "path=" + bind + ",reconnect=1" : "path=" + peer + ",server=on,wait=off";
    out += "QEMU (guest memory must be shared with vpd; size it like -m):\n";
    out += "  -object memory-backend-memfd,id=mem0,size=1G,share=on -numa node,memdev=mem0\n";
    out += "  -chardev socket,id=" + name + "," + chardev + "\n";
    out += "  -netdev vhost-user,id=" + name + ",chardev=" + name + netdev_queues + "\n";
    out += "  -device virtio-net-pci,netdev=" + name + ",mac=" + guest_mac + device_mq + "\n";
    out += mq ? "  (QEMU 7.2 under TCG only: use vectors=0 instead, or it crashes at start)\n"
              : "  (QEMU 7.2 under TCG only: add vectors=0 to -device, or it crashes at start)\n";
    out += "\ncloud-hypervisor:\n";
    out += "  --memory size=1G,shared=on\n";
    // cloud-hypervisor counts virtqueues, not pairs.
    out += "  --net vhost_user=true,socket=" + (!bind.empty() ? bind : peer) +
           ",vhost_mode=" + (!bind.empty() ? "client" : "server") + ",mac=" + guest_mac +
           (mq ? ",num_queues=" + std::to_string(2 * queues) : std::string()) + "\n";
  } else if (transport == "stream") {
    const std::string addr = !bind.empty() ? bind : peer;
    out += "QEMU:\n";
    out += "  -netdev stream,id=" + name + ",server=" + (!bind.empty() ? "off" : "on") +
           ",addr.type=unix,addr.path=" + addr + "\n";
    out += "  -device virtio-net-pci,netdev=" + name + ",mac=" + guest_mac + "\n";
    out += !bind.empty()
               ? "  (QEMU 8.0 and later: add reconnect=1 to -netdev so that QEMU reconnects "
                 "after vpd restarts; 7.2 cannot)\n"
               : "  (vpd dials the socket QEMU serves, and dials again after a disconnect)\n";
  } else {
    out += "QEMU (in the network namespace that holds " + name + "):\n";
    out += "  -netdev tap,id=" + name + ",ifname=" + name + ",script=no,downscript=no" +
           netdev_queues + "\n";
    out += "  -device virtio-net-pci,netdev=" + name + ",mac=" + guest_mac + device_mq + "\n";
    out += "  (add vhost=on to -netdev where the host has /dev/vhost-net)\n";
  }
  return out;
}

}  // namespace vp::ctl
