#include "ctl/output.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
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

// A set of names: an array (what vpd sends) or an older "A|B" string, as "A|B"; an empty
// set is "none".
std::string flags_text(const json& j, const char* key, std::string_view sep = "|") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) return it->dump();
  if (it->empty()) return "none";
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
  const std::string on = "," + flags_text(e, "toggles", ",") + ",";
  std::string off;
  for (const char* t : kAll) {
    if (on.find(std::string(",") + t + ",") == std::string::npos) off += std::string(" -") + t;
  }
  return off.empty() ? "all on" : "off:" + off;
}

// The guest state (an enum in the JSON) in words.
std::string guest_words(const json& e) {
  const json& s = status_of(e);
  const std::string guest = text(s, "guest");
  const std::string name = text(e, "name");
  const std::string socket = text(s, "socket", "");
  if (guest == "listening" || guest == "dialing") return guest + " on " + socket;
  if (guest == "attached") return "attached (a VMM has " + name + " open)";
  if (guest == "not-attached") {
    return text(e, "transport") == "tap" ? "not attached (a VMM opens " + name + " by name)"
                                         : "not attached";
  }
  return guest;
}

// "2026-12-03T17:30:02Z (5m 12s ago)" from the frontend's connected_since_unix.
std::string since_words(const json& f) {
  const std::string at = text(f, "connected_since");
  auto it = f.find("connected_since_unix");
  if (it == f.end() || !it->is_number_integer()) return at;
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  int64_t ago = std::max<int64_t>(0, now - it->get<int64_t>());
  std::string span;
  if (ago >= 86400) span += std::to_string(ago / 86400) + "d ", ago %= 86400;
  if (ago >= 3600 || !span.empty()) span += std::to_string(ago / 3600) + "h ", ago %= 3600;
  if (ago >= 60 || !span.empty()) span += std::to_string(ago / 60) + "m ", ago %= 60;
  span += std::to_string(ago) + "s";
  return at + " (" + span + " ago)";
}

// "pid 1234, uid 0, gid 0, /usr/bin/qemu-system-x86_64": who the frontend is.
std::string process_words(const json& f) {
  std::string out = "pid " + text(f, "pid") + ", uid " + text(f, "uid") + ", gid " + text(f, "gid");
  if (const std::string exe = text(f, "exe", ""); !exe.empty()) out += ", " + exe;
  return out;
}

// The link line: the kernel's state, and why there is no carrier in the session's terms.
std::string link_words(const json& s) {
  std::string link = text(s, "link", "?");
  if (link != "up") return link;
  const std::string state = text(s, "link_state", "");
  if (s.value("carrier", false) || state == "carrier-up") return link + ", carrier on";
  if (state == "guest-not-started") {
    return link + ", no carrier (guest connected, driver has not started its queues)";
  }
  return link + ", no carrier (no guest attached)";
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
  // Under an endpoint with a guest attached, one indented line names it (not a column: it
  // is long, and most rows have none).
  std::vector<std::string> guests(rows.size());
  if (endpoints.is_array()) {
    for (size_t i = 0; i < endpoints.size(); ++i) {
      const json& s = status_of(endpoints[i]);
      auto f = s.find("frontend");
      if (f == s.end() || !f->is_object()) continue;
      std::string line = "  guest: ";
      if (const std::string vm = text(*f, "vm_name", ""); !vm.empty()) line += "VM " + vm + ", ";
      line += process_words(*f) + ", since " + since_words(*f);
      guests[i + 1] = line;
    }
  }
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
    if (!guests[r].empty()) out += guests[r] + "\n";
  }
  if (rows.size() == 1)
    out += "(no endpoints; create one with `vpctl create` or `vpctl vp0 create`)\n";
  return out;
}

std::string format_show(const json& e) {
  const json& s = status_of(e);
  const std::string link = link_words(s);
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
      {"features", flags_text(s, "features")},
      {"features mask", text(s, "features_hex")},
      {"tun offloads", text(s, "tun_offloads")},
      {"vnet header",
       text(s, "vnet_hdr_len") + " bytes" + (e.value("legacy", false) ? " (legacy)" : "")},
      {"toggles", toggles_line(e)},
      {"priority", text(e, "priority")},
      {"rx rate", text(e, "rx_rate", "").empty()
                      ? "unlimited"
                      : text(e, "rx_rate") + " host→guest (tbf qdisc on the TAP)"},
      {"tx rate", text(e, "tx_rate", "").empty()
                      ? "unlimited"
                      : text(e, "tx_rate") + " guest→host (token bucket in vpd, back-pressure)"},
      {"guest", guest_words(e)},
      {"guest mac",
       text(e, "guest_mac") +
           (e.value("lock_mac", false) ? " (lock-mac: other source MACs are dropped)" : "")},
      {"allow", e.contains("allow") && !e["allow"].empty()
                    ? joined(e, "allow") +
                          " (uid[:gid]; others refused: " + text(s, "refused_peers", "0") + ")"
                    : "anyone the socket's permissions let in"},
  };
  if (auto f = s.find("frontend"); f != s.end() && f->is_object()) {
    const std::string vm = text(*f, "vm_name", "");
    lines.emplace_back("vm name", vm.empty() ? "- (the VMM's command line names none)" : vm);
    lines.emplace_back("frontend", process_words(*f));
    lines.emplace_back("since", since_words(*f));
  }
  if (const std::string note = text(s, "peerfeats_note", ""); !note.empty()) {
    lines.emplace_back("peerfeats note", note);
  }
  if (auto session = s.find("session"); session != s.end() && session->is_object() && stream) {
    lines.emplace_back("framing", "QEMU stream: 4-byte big-endian length, raw Ethernet frame");
    lines.emplace_back("sessions", text(*session, "sessions"));
  } else if (session != s.end() && session->is_object()) {
    const json& ses = *session;
    lines.emplace_back("negotiated", flags_text(ses, "features"));
    lines.emplace_back("ring", text(ses, "ring"));
    if (ses.contains("tx_path")) lines.emplace_back("tx path", text(ses, "tx_path"));
    lines.emplace_back("queues running",
                       text(ses, "queues_running") + " of " + text(ses, "queues"));
    // Which data-path worker serves each running queue pair (vpd --workers).
    if (auto w = s.find("queue_workers"); w != s.end() && w->is_array() && w->size() > 1) {
      std::string served;
      for (size_t p = 0; p < w->size(); ++p) {
        if (!(*w)[p].is_number()) continue;
        if (!served.empty()) served += ", ";
        served += "pair " + std::to_string(p) + " on worker " + (*w)[p].dump();
      }
      if (!served.empty()) lines.emplace_back("queue workers", served);
    }
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
  std::vector<std::pair<std::string, std::string>> lines{{"guest", guest_words(e)}};
  if (auto c = s.find("counters"); c != s.end() && c->is_object()) {
    for (const auto& [key, value] : c->items()) lines.emplace_back(key, value.dump());
  } else {
    lines.emplace_back("counters", "none (the endpoint has no data path)");
  }
  // Per queue pair, when there is more than one: tx is guest->host, rx host->guest.
  if (auto q = s.find("queue_counters"); q != s.end() && q->is_array() && q->size() > 1) {
    for (const json& pair : *q) {
      const auto n = [&](const char* key) { return std::to_string(pair.value(key, uint64_t{0})); };
      lines.emplace_back("queue " + n("queue"),
                         "tx " + n("tx_packets") + " packets " + n("tx_bytes") + " bytes " +
                             n("tx_dropped") + " dropped, rx " + n("rx_packets") + " packets " +
                             n("rx_bytes") + " bytes " + n("rx_dropped") + " dropped");
    }
  }
  return key_value_lines(lines);
}

namespace {

// One VMM's options: lines of argv words, then notes in parentheses.
struct VmmSection {
  std::string vmm;      // JSON key: "qemu", "cloud_hypervisor"
  std::string heading;  // "QEMU (in the network namespace that holds vp0)"
  std::vector<std::vector<std::string>> lines;
  std::vector<std::string> notes;
};

std::vector<VmmSection> vmm_sections(const json& e) {
  const std::string name = text(e, "name");
  const std::string transport = text(e, "transport");
  const std::string bind = text(e, "bind", "");
  const std::string peer = text(e, "peer", "");
  const std::string guest_mac = text(e, "guest_mac");
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
  // QEMU's virtio-net-pci gives the guest an MTU only with its own host_mtu= (it offers
  // VIRTIO_NET_F_MTU then, and with vhost-user tells vpd, which refuses a value other than
  // mtu=); without it the guest assumes 1500 whatever the TAP's MTU is.
  int64_t mtu = 1500;
  if (auto it = e.find("mtu"); it != e.end() && it->is_number_integer()) mtu = it->get<int64_t>();
  const std::string device_mtu = mtu != 1500 ? ",host_mtu=" + std::to_string(mtu) : std::string();
  std::vector<VmmSection> out;
  if (transport == "vhost-user") {
    // vpd listens on bind= (QEMU connects and reconnects); with only peer=, QEMU serves.
    const std::string chardev =
        !bind.empty() ? "path=" + bind + ",reconnect=1" : "path=" + peer + ",server=on,wait=off";
    VmmSection q{"qemu", "QEMU (guest memory must be shared with vpd; size it like -m)", {}, {}};
    q.lines = {
        {"-object", "memory-backend-memfd,id=mem0,size=1G,share=on", "-numa", "node,memdev=mem0"},
        {"-chardev", "socket,id=" + name + "," + chardev},
        {"-netdev", "vhost-user,id=" + name + ",chardev=" + name + netdev_queues},
        {"-device", "virtio-net-pci,netdev=" + name + ",mac=" + guest_mac + device_mq + device_mtu},
    };
    q.notes.push_back(mq ? "QEMU 7.2 under TCG only: use vectors=0 instead, or it crashes at start"
                         : "QEMU 7.2 under TCG only: add vectors=0 to -device, or it crashes at "
                           "start");
    out.push_back(std::move(q));
    VmmSection ch{"cloud_hypervisor", "cloud-hypervisor", {}, {}};
    // cloud-hypervisor counts virtqueues, not pairs.
    ch.lines = {
        {"--memory", "size=1G,shared=on"},
        {"--net", "vhost_user=true,socket=" + (!bind.empty() ? bind : peer) +
                      ",vhost_mode=" + (!bind.empty() ? "client" : "server") + ",mac=" + guest_mac +
                      (mq ? ",num_queues=" + std::to_string(2 * queues) : "")},
    };
    out.push_back(std::move(ch));
  } else if (transport == "stream") {
    const std::string addr = !bind.empty() ? bind : peer;
    VmmSection q{"qemu", "QEMU", {}, {}};
    q.lines = {
        {"-netdev", "stream,id=" + name + ",server=" + (!bind.empty() ? "off" : "on") +
                        ",addr.type=unix,addr.path=" + addr},
        {"-device", "virtio-net-pci,netdev=" + name + ",mac=" + guest_mac + device_mtu},
    };
    q.notes.push_back(!bind.empty() ? "QEMU 8.0 and later: add reconnect=1 to -netdev so that "
                                      "QEMU reconnects after vpd restarts; 7.2 cannot"
                                    : "vpd dials the socket QEMU serves, and dials again after "
                                      "a disconnect");
    out.push_back(std::move(q));
  } else {
    VmmSection q{"qemu", "QEMU (in the network namespace that holds " + name + ")", {}, {}};
    q.lines = {
        {"-netdev",
         "tap,id=" + name + ",ifname=" + name + ",script=no,downscript=no" + netdev_queues},
        {"-device", "virtio-net-pci,netdev=" + name + ",mac=" + guest_mac + device_mq + device_mtu},
    };
    q.notes.push_back("add vhost=on to -netdev where the host has /dev/vhost-net");
    out.push_back(std::move(q));
  }
  return out;
}

}  // namespace

std::string format_vmm_args(const json& e) {
  std::string out;
  for (const VmmSection& section : vmm_sections(e)) {
    if (!out.empty()) out += "\n";
    out += section.heading + ":\n";
    for (const auto& line : section.lines) {
      std::string words;
      for (const auto& w : line) words += (words.empty() ? "" : " ") + w;
      out += "  " + words + "\n";
    }
    for (const auto& note : section.notes) out += "  (" + note + ")\n";
  }
  return out;
}

json vmm_args_json(const json& e) {
  json out{{"endpoint", text(e, "name")},
           {"transport", text(e, "transport")},
           {"guest_mac", text(e, "guest_mac")},
           // vhost-user maps the guest's memory into vpd: the VMM must share it.
           {"shared_memory", text(e, "transport") == "vhost-user"}};
  for (const VmmSection& section : vmm_sections(e)) {
    json args = json::array();
    for (const auto& line : section.lines) {
      for (const auto& w : line) args.push_back(w);
    }
    out[section.vmm] = json{{"args", args}, {"notes", section.notes}};
  }
  return out;
}

json stats_json(const json& e) {
  const json& s = status_of(e);
  json out{{"endpoint", text(e, "name")},
           {"transport", text(e, "transport")},
           {"guest", s.value("guest", "not-attached")},
           {"link_state", s.value("link_state", "absent")}};
  // Counters only where vpd is in the data path (not transport=tap).
  if (auto c = s.find("counters"); c != s.end() && c->is_object()) out["counters"] = *c;
  if (auto q = s.find("queue_counters"); q != s.end() && q->is_array()) out["queues"] = *q;
  if (auto ses = s.find("session"); ses != s.end() && ses->is_object()) out["session"] = *ses;
  for (const char* key : {"refused_peers"}) {
    if (auto it = s.find(key); it != s.end()) out[key] = *it;
  }
  return out;
}

}  // namespace vp::ctl

namespace vp::ctl {

std::string format_event(const json& event) {
  std::string line = text(event, "time", "?");
  line += ' ';
  line += text(event, "endpoint", "-");
  line += ' ';
  line += text(event, "type", "?");
  line += ": ";
  line += text(event, "message", "");
  // One event, one line: a newline or escape in a name (a VM's -name, a path) is not passed
  // to the terminal.
  for (char& ch : line) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
  }
  line += '\n';
  return line;
}

}  // namespace vp::ctl
