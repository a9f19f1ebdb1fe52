#include "ctl/metrics.hpp"

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace vp::ctl {

using nlohmann::json;

namespace {

// One data-path counter of `vpctl --json vp0 stats` as a sample of a metric family.
struct CounterRow {
  std::string_view counter;    // name in the counters object
  std::string_view family;     // metric name
  std::string_view direction;  // "from_guest", "to_guest" or "" (neither)
  /// The counter is in microseconds and the family in seconds (Prometheus' base unit).
  bool microseconds = false;
};

constexpr std::string_view kFromGuest = "from_guest";
constexpr std::string_view kToGuest = "to_guest";

// A counter is a row: its family and direction. A counter vpd reports that is not here
// still appears, as vpd_<counter>_total without a direction.
constexpr CounterRow kCounters[] = {
    {"tx_packets", "vpd_packets_total", kFromGuest},
    {"rx_packets", "vpd_packets_total", kToGuest},
    {"tx_bytes", "vpd_bytes_total", kFromGuest},
    {"rx_bytes", "vpd_bytes_total", kToGuest},
    {"tx_dropped_malformed_chain", "vpd_dropped_malformed_chain_total", kFromGuest},
    {"tx_dropped_too_short", "vpd_dropped_too_short_total", kFromGuest},
    {"tx_dropped_too_long", "vpd_dropped_too_long_total", kFromGuest},
    {"tx_dropped_bad_flags", "vpd_dropped_bad_flags_total", kFromGuest},
    {"tx_dropped_csum_not_negotiated", "vpd_dropped_csum_not_negotiated_total", kFromGuest},
    {"tx_dropped_bad_csum_offsets", "vpd_dropped_bad_csum_offsets_total", kFromGuest},
    {"tx_dropped_gso_not_negotiated", "vpd_dropped_gso_not_negotiated_total", kFromGuest},
    {"tx_dropped_bad_gso", "vpd_dropped_bad_gso_total", kFromGuest},
    {"tx_dropped_hdr_len_past_frame", "vpd_dropped_hdr_len_past_frame_total", kFromGuest},
    {"tx_dropped_spoofed_mac", "vpd_dropped_spoofed_mac_total", kFromGuest},
    {"tx_dropped_ring_disabled", "vpd_dropped_ring_disabled_total", kFromGuest},
    {"tap_write_fails", "vpd_tap_write_fails_total", kFromGuest},
    {"tx_tap_full", "vpd_tap_full_total", kFromGuest},
    {"tx_throttled", "vpd_throttled_total", kFromGuest},
    {"tx_throttled_us", "vpd_throttled_seconds_total", kFromGuest, true},
    {"rx_dropped_too_big", "vpd_dropped_too_big_total", kToGuest},
    {"rx_dropped_runt", "vpd_dropped_runt_total", kToGuest},
    {"rx_dropped_offload", "vpd_dropped_offload_total", kToGuest},
    {"rx_malformed_chain", "vpd_malformed_chain_total", kToGuest},
    {"rx_buffers_returned_empty", "vpd_buffers_returned_empty_total", kToGuest},
    {"no_rx_avail_buffer", "vpd_no_avail_buffer_total", kToGuest},
    {"rx_frames_held", "vpd_frames_held_total", kToGuest},
    {"tap_read_fails", "vpd_tap_read_fails_total", kToGuest},
    {"kicks", "vpd_kicks_total", ""},
    {"interrupts", "vpd_interrupts_total", ""},
    {"interrupts_suppressed", "vpd_interrupts_suppressed_total", ""},
    {"stream_bad_length", "vpd_stream_bad_length_total", kFromGuest},
    {"stream_truncated", "vpd_stream_truncated_total", kFromGuest},
    {"stream_peer_full", "vpd_stream_peer_full_total", kToGuest},
};

struct Help {
  std::string_view family;
  std::string_view text;
};

constexpr Help kHelp[] = {
    {"vpd_packets_total",
     "Frames forwarded (from_guest: guest to TAP, the TAP's RX in ip -s link; to_guest: TAP to "
     "guest, the TAP's TX)."},
    {"vpd_bytes_total", "Ethernet bytes of the frames forwarded (virtio-net header not counted)."},
    {"vpd_dropped_malformed_chain_total",
     "Guest TX chains with device-writable descriptors, dropped."},
    {"vpd_dropped_too_short_total", "Guest frames shorter than a virtio-net and Ethernet header."},
    {"vpd_dropped_too_long_total", "Guest frames longer than the largest frame vpd forwards."},
    {"vpd_dropped_bad_flags_total",
     "Guest frames with virtio-net header flags other than "
     "NEEDS_CSUM."},
    {"vpd_dropped_csum_not_negotiated_total",
     "Guest frames asking for a checksum offload the guest did not negotiate."},
    {"vpd_dropped_bad_csum_offsets_total",
     "Guest frames whose checksum field lies past the "
     "frame."},
    {"vpd_dropped_gso_not_negotiated_total",
     "Guest frames with a GSO type (or ECN) the guest did not negotiate."},
    {"vpd_dropped_bad_gso_total",
     "Guest frames with an unknown GSO type, gso_size 0 or no "
     "NEEDS_CSUM."},
    {"vpd_dropped_hdr_len_past_frame_total", "Guest frames whose hdr_len lies past the frame."},
    {"vpd_dropped_spoofed_mac_total",
     "Guest frames from another source MAC than the guest's (lock-mac)."},
    {"vpd_dropped_ring_disabled_total",
     "Guest TX chains on a ring the front-end disabled, given back unsent."},
    {"vpd_tap_write_fails_total", "Writes to the TAP that failed (the frame was dropped)."},
    {"vpd_tap_full_total", "Writes the TAP refused with EAGAIN (retried, not dropped)."},
    {"vpd_throttled_total",
     "Times the tx-rate= token bucket ran dry and vpd stopped taking guest frames (nothing "
     "dropped)."},
    {"vpd_throttled_seconds_total", "Time vpd waited for tx-rate= tokens with guest frames held."},
    {"vpd_dropped_too_big_total", "TAP frames larger than the buffers the guest offered."},
    {"vpd_dropped_runt_total", "TAP reads shorter than a virtio-net and Ethernet header."},
    {"vpd_dropped_offload_total",
     "TAP frames needing an offload the front-end cannot take (stream)."},
    {"vpd_malformed_chain_total", "Guest RX chains that were malformed, given back empty."},
    {"vpd_buffers_returned_empty_total",
     "Guest RX buffers given back with length 0 (could not be rewound)."},
    {"vpd_no_avail_buffer_total", "Times a TAP frame waited because the guest had no buffer."},
    {"vpd_frames_held_total", "TAP frames kept aside until the guest posted buffers large enough."},
    {"vpd_tap_read_fails_total", "Reads from the TAP that failed."},
    {"vpd_kicks_total", "Kicks (guest notifications) vpd read."},
    {"vpd_interrupts_total", "Interrupts (call eventfd writes) vpd sent to the guest."},
    {"vpd_interrupts_suppressed_total",
     "Batches given back without an interrupt because the driver suppressed it."},
    {"vpd_stream_bad_length_total",
     "Stream length prefixes of 0 or too large (vpd closed the stream)."},
    {"vpd_stream_truncated_total", "Stream frames cut short by the front-end closing."},
    {"vpd_stream_peer_full_total",
     "Times the stream front-end did not read and vpd stopped reading the TAP."},
};

// Label values: backslash, double quote and newline are escaped (exposition format 0.0.4).
std::string escaped(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

using Labels = std::vector<std::pair<std::string, std::string>>;

// The families in the order they are first seen, each with its samples.
class Exposition {
 public:
  void add(const std::string& family, std::string_view type, std::string_view help,
           const Labels& labels, const std::string& value) {
    auto [it, inserted] = index_.try_emplace(family, families_.size());
    if (inserted) families_.push_back({family, std::string(type), std::string(help), {}});
    std::string sample = family;
    if (!labels.empty()) {
      sample += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        if (i) sample += ',';
        sample += labels[i].first + "=\"" + escaped(labels[i].second) + "\"";
      }
      sample += '}';
    }
    families_[it->second].samples.push_back(sample + " " + value);
  }

  std::string text() const {
    std::string out;
    for (const auto& f : families_) {
      out += "# HELP " + f.name + " " + f.help + "\n";
      out += "# TYPE " + f.name + " " + f.type + "\n";
      for (const auto& s : f.samples) out += s + "\n";
    }
    return out;
  }

 private:
  struct Family {
    std::string name, type, help;
    std::vector<std::string> samples;
  };
  std::map<std::string, size_t> index_;
  std::vector<Family> families_;
};

std::string string_of(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string number_of(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->dump() : "0";
}

std::string_view help_of(std::string_view family) {
  for (const Help& h : kHelp) {
    if (h.family == family) return h.text;
  }
  return "";
}

constexpr std::string_view kGuestStates[] = {"stopped",   "listening", "dialing",
                                             "connected", "attached",  "not-attached"};
constexpr std::string_view kLinkStates[] = {"absent", "down", "no-guest", "guest-not-started",
                                            "carrier-up"};

}  // namespace

std::string format_metrics(const json& endpoints) {
  Exposition x;
  const json list = endpoints.is_array() ? endpoints : json::array();
  x.add("vpd_endpoints", "gauge", "Endpoints vpd has.", {}, std::to_string(list.size()));
  for (const json& e : list) {
    const std::string name = string_of(e, "name");
    const Labels ep{{"endpoint", name}};
    const json& s = e.contains("status") && e["status"].is_object() ? e["status"] : json::object();
    x.add("vpd_endpoint_info", "gauge",
          "Always 1; the endpoint's transport, MAC, the guest's MAC and bridge as labels.",
          {{"endpoint", name},
           {"transport", string_of(e, "transport")},
           {"mac", string_of(e, "mac")},
           {"guest_mac", string_of(e, "guest_mac")},
           {"bridge", string_of(e, "bridge")}},
          "1");
    x.add("vpd_endpoint_admin_up", "gauge", "1 if the endpoint is configured up.", ep,
          e.value("up", false) ? "1" : "0");
    x.add("vpd_link_up", "gauge", "1 if the kernel has the TAP up.", ep,
          string_of(s, "link") == "up" ? "1" : "0");
    x.add("vpd_carrier", "gauge", "1 if the TAP has carrier (a guest's queues run).", ep,
          s.value("carrier", false) ? "1" : "0");
    const std::string link_state = string_of(s, "link_state");
    for (std::string_view state : kLinkStates) {
      x.add("vpd_link_state", "gauge",
            "1 for the endpoint's link state in the session's terms, 0 for the others.",
            {{"endpoint", name}, {"state", std::string(state)}}, state == link_state ? "1" : "0");
    }
    const std::string guest = string_of(s, "guest");
    for (std::string_view state : kGuestStates) {
      x.add("vpd_guest_state", "gauge",
            "1 for the state of the endpoint's front-end side, 0 for the others.",
            {{"endpoint", name}, {"state", std::string(state)}}, state == guest ? "1" : "0");
    }
    x.add("vpd_problems", "gauge", "Problems vpd records for the endpoint (0 when healthy).", ep,
          std::to_string(s.value("problems", json::array()).size()));
    if (auto f = s.find("frontend"); f != s.end() && f->is_object()) {
      x.add("vpd_frontend_info", "gauge",
            "Always 1; the connected front-end's process and VM name as labels.",
            {{"endpoint", name},
             {"pid", string_of(*f, "pid")},
             {"uid", string_of(*f, "uid")},
             {"gid", string_of(*f, "gid")},
             {"exe", string_of(*f, "exe")},
             {"vm_name", string_of(*f, "vm_name")}},
            "1");
      x.add("vpd_frontend_connected_timestamp_seconds", "gauge",
            "When the front-end connected, in seconds since the Unix epoch.", ep,
            number_of(*f, "connected_since_unix"));
    }
    if (s.contains("refused_peers")) {
      x.add("vpd_refused_peers_total", "counter",
            "Front-end connections refused by allow= since vpd started.", ep,
            number_of(s, "refused_peers"));
    }
    if (auto ses = s.find("session"); ses != s.end() && ses->is_object()) {
      x.add("vpd_sessions_total", "counter", "Front-end sessions served since vpd started.", ep,
            number_of(*ses, "sessions"));
      x.add("vpd_queues", "gauge", "Virtqueues of the running session (2 per queue pair).", ep,
            number_of(*ses, "queues"));
      x.add("vpd_queues_running", "gauge", "Virtqueues the guest's driver has started.", ep,
            number_of(*ses, "queues_running"));
      x.add("vpd_refused_messages_total", "counter",
            "vhost-user messages refused in the running session.", ep,
            number_of(*ses, "refused_messages"));
      for (const auto& q : ses->value("broken_queues", json::array())) {
        // "rx0: avail-index-jump"
        const std::string text = q.is_string() ? q.get<std::string>() : q.dump();
        const size_t colon = text.find(':');
        const std::string queue = text.substr(0, colon);
        const std::string reason =
            colon == std::string::npos ? "" : text.substr(text.find_first_not_of(' ', colon + 1));
        x.add("vpd_queue_broken", "gauge",
              "1 for a virtqueue vpd stopped serving because the guest broke its ring.",
              {{"endpoint", name}, {"queue", queue}, {"reason", reason}}, "1");
      }
    }
    // Per queue pair: the endpoint's packets, bytes and drops split by queue (their sum over
    // `queue` is the endpoint's figure).
    for (const json& q : s.value("queue_counters", json::array())) {
      const std::string queue = number_of(q, "queue");
      for (const auto& [family, what, help] :
           {std::tuple{"vpd_queue_packets_total", "packets", "Frames one queue pair carried."},
            std::tuple{"vpd_queue_bytes_total", "bytes",
                       "Ethernet bytes one queue pair carried (the virtio-net header not "
                       "counted)."},
            std::tuple{"vpd_queue_dropped_total", "dropped",
                       "Frames one queue pair dropped, for any reason (vpctl vp0 stats says "
                       "which)."}}) {
        for (const auto& [prefix, direction] :
             {std::pair{"tx_", "from_guest"}, std::pair{"rx_", "to_guest"}}) {
          x.add(family, "counter", help,
                {{"endpoint", name}, {"queue", queue}, {"direction", direction}},
                number_of(q, (std::string(prefix) + what).c_str()));
        }
      }
    }
    if (auto c = s.find("counters"); c != s.end() && c->is_object()) {
      for (const auto& [counter, value] : c->items()) {
        const CounterRow* row = nullptr;
        for (const CounterRow& r : kCounters) {
          if (r.counter == counter) row = &r;
        }
        const std::string family =
            row ? std::string(row->family) : "vpd_" + std::string(counter) + "_total";
        const std::string help =
            row ? std::string(help_of(row->family))
                : "The data path's " + std::string(counter) + " counter (vpctl vp0 stats).";
        Labels labels = ep;
        if (row && !row->direction.empty()) {
          labels.emplace_back("direction", std::string(row->direction));
        }
        std::string sample = value.is_number() ? value.dump() : "0";
        if (row && row->microseconds && value.is_number_unsigned()) {
          const auto us = value.get<uint64_t>();
          char buf[32];
          std::snprintf(buf, sizeof buf, "%llu.%06llu",
                        static_cast<unsigned long long>(us / 1'000'000),
                        static_cast<unsigned long long>(us % 1'000'000));
          sample = buf;
        }
        x.add(family, "counter", help, labels, sample);
      }
    }
  }
  return x.text();
}

}  // namespace vp::ctl
