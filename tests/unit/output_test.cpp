#include "ctl/output.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "control/endpoint.hpp"
#include "net/offloads.hpp"
#include "unit_expect.hpp"

namespace vp::ctl {
namespace {

using nlohmann::json;
using unit::contains;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Where each header word starts.
std::vector<size_t> column_starts(const std::string& header) {
  std::vector<size_t> out;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] != ' ' && (i == 0 || header[i - 1] == ' ')) out.push_back(i);
  }
  return out;
}

// The cells of `line` cut at `starts`, trailing blanks removed.
std::vector<std::string> cells(const std::string& line, const std::vector<size_t>& starts) {
  std::vector<std::string> out;
  for (size_t i = 0; i < starts.size(); ++i) {
    if (starts[i] > line.size()) {
      out.emplace_back("<missing>");
      continue;
    }
    const size_t end = i + 1 < starts.size() ? starts[i + 1] : std::string::npos;
    std::string cell = line.substr(starts[i], end == std::string::npos ? end : end - starts[i]);
    while (!cell.empty() && cell.back() == ' ') cell.pop_back();
    out.push_back(cell);
  }
  return out;
}

// The line of `text` that starts with `key` + ":" (format_show), or "".
std::string show_line(const std::string& text, const std::string& key) {
  for (const auto& line : lines_of(text)) {
    if (line.rfind(key + ":", 0) == 0) return line;
  }
  return "";
}

// The value part of a format_show line.
std::string show_value(const std::string& text, const std::string& key) {
  std::string line = show_line(text, key);
  if (line.empty()) return "<no line " + key + ">";
  line = line.substr(key.size() + 1);
  const size_t first = line.find_first_not_of(' ');
  return first == std::string::npos ? "" : line.substr(first);
}

net::Mac mac(const char* text) {
  auto m = net::parse_mac(text);
  return m ? *m : net::Mac{};
}

// A "A|B" (or "a,b") list of names as a JSON array, as vpd sends sets of names.
json names(const std::string& text, char sep) {
  json out = json::array();
  std::string word;
  for (char ch : text + sep) {
    if (ch != sep) {
      word += ch;
    } else if (!word.empty() && word != "none") {
      out.push_back(word);
      word.clear();
    }
  }
  return out;
}

// What vpd's Registry::describe() returns: to_json(config) with the toggles as an array,
// plus a "status" object.
json described(const control::EndpointConfig& c, const std::string& link, bool carrier,
               unsigned tun, json problems = json::array(), const std::string& declared = "") {
  json j = control::to_json(c);
  j["toggles"] = names(net::toggle_names(c.toggles), ',');
  const uint64_t features = c.features();
  j["status"] = json{
      {"ifindex", 7},
      {"features", names(net::feature_names(features), '|')},
      {"features_hex", control::peerfeats_text(features)},
      {"tun_offloads", net::tun_offload_names(tun)},
      {"vnet_hdr_len", c.vnet_hdr_len()},
      {"guest", "not-attached"},
      {"declared", declared},
      {"link", link},
      {"carrier", carrier},
      {"master", c.bridge},
      {"problems", problems},
  };
  return j;
}

control::EndpointConfig vp0() {
  control::EndpointConfig c;
  c.name = "vp0";
  c.mac = mac("02:00:00:00:00:01");
  c.bind = "/run/vpd/vp0.sock";
  c.bridge = "br0";
  c.up = true;
  for (const char* a : {"192.168.1.1/24", "fd00::1/64"}) {
    if (auto p = net::parse_address(a)) c.addresses.push_back(p->address);
  }
  return c;
}

control::EndpointConfig long_named() {
  control::EndpointConfig c;
  c.name = "uplink-guest12";
  c.transport = control::Transport::kStream;
  c.peerfeats = 0;
  c.mac = mac("02:aa:bb:cc:dd:ee");
  c.peer = "/run/qemu/guest12/net.sock";
  c.mtu = 9000;
  c.legacy = true;
  c.toggles = net::toggle::kAll & ~(net::toggle::kTso6 | net::toggle::kRxcsum);
  return c;
}

control::EndpointConfig tap_only() {
  control::EndpointConfig c;
  c.name = "t1";
  c.transport = control::Transport::kTap;
  c.mac = mac("02:00:00:00:00:09");
  return c;
}

// ---- format_list -------------------------------------------------------------------------

TEST(FormatList, header_names_every_column) {
  const auto lines = lines_of(format_list(json::array({described(vp0(), "up", true, 0)})));
  ASSERT_FALSE(lines.empty());
  const std::vector<size_t> starts = column_starts(lines[0]);
  EXPECT_EQ(cells(lines[0], starts),
            (std::vector<std::string>{"NAME", "TRANSPORT", "STATE", "MAC", "MTU", "BRIDGE",
                                      "ADDRESSES", "SOCKET"}));
}

TEST(FormatList, rows_of_different_widths_are_aligned) {
  const json list =
      json::array({described(vp0(), "up", true, 0), described(long_named(), "down", false, 0),
                   described(tap_only(), "absent", false, 0)});
  const auto lines = lines_of(format_list(list));
  ASSERT_EQ(lines.size(), 4u);
  const std::vector<size_t> starts = column_starts(lines[0]);
  ASSERT_EQ(starts.size(), 8u) << lines[0];
  EXPECT_EQ(cells(lines[1], starts),
            (std::vector<std::string>{"vp0", "vhost-user", "up", "02:00:00:00:00:01", "1500", "br0",
                                      "192.168.1.1/24,fd00::1/64", "bind=/run/vpd/vp0.sock"}));
  EXPECT_EQ(cells(lines[2], starts),
            (std::vector<std::string>{"uplink-guest12", "stream", "down", "02:aa:bb:cc:dd:ee",
                                      "9000", "-", "-", "peer=/run/qemu/guest12/net.sock"}));
  EXPECT_EQ(cells(lines[3], starts),
            (std::vector<std::string>{"t1", "tap", "absent", "02:00:00:00:00:09", "1500", "-", "-",
                                      "-"}));
}

TEST(FormatList, every_column_starts_after_a_gap_of_two) {
  const json list =
      json::array({described(vp0(), "up", true, 0), described(long_named(), "down", false, 0)});
  const auto lines = lines_of(format_list(list));
  ASSERT_EQ(lines.size(), 3u);
  const std::vector<size_t> starts = column_starts(lines[0]);
  for (const auto& line : lines) {
    for (size_t s : starts) {
      if (s == 0) continue;
      ASSERT_LT(s, line.size()) << line;
      EXPECT_NE(line[s], ' ') << "column at " << s << " of: " << line;
      EXPECT_EQ(line.substr(s - 2, 2), "  ") << "column at " << s << " of: " << line;
    }
  }
  // The widest name decides where TRANSPORT starts.
  EXPECT_EQ(starts[1], std::string("uplink-guest12").size() + 2);
}

TEST(FormatList, rows_have_no_trailing_blanks) {
  const auto lines = lines_of(format_list(json::array({described(vp0(), "up", true, 0)})));
  for (const auto& line : lines) {
    ASSERT_FALSE(line.empty());
    EXPECT_NE(line.back(), ' ') << line;
  }
}

TEST(FormatList, endpoints_keep_their_order) {
  const json list =
      json::array({described(tap_only(), "absent", false, 0), described(vp0(), "up", true, 0)});
  const auto lines = lines_of(format_list(list));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1].rfind("t1 ", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("vp0 ", 0), 0u) << lines[2];
}

TEST(FormatList, problems_mark_the_state) {
  const json list = json::array(
      {described(vp0(), "absent", false, 0, json::array({"the TAP device does not exist"}))});
  const auto lines = lines_of(format_list(list));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(cells(lines[1], column_starts(lines[0]))[2], "absent!");
}

TEST(FormatList, bind_is_shown_before_peer) {
  control::EndpointConfig c = vp0();
  c.peer = "/run/qemu/p.sock";
  const auto lines = lines_of(format_list(json::array({described(c, "up", true, 0)})));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(cells(lines[1], column_starts(lines[0])).back(), "bind=/run/vpd/vp0.sock");
}

TEST(FormatList, empty_list_shows_header_and_how_to_create) {
  const std::string out = format_list(json::array());
  const auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].rfind("NAME", 0), 0u);
  EXPECT_TRUE(contains(lines[1], "no endpoints"));
  EXPECT_TRUE(contains(lines[1], "vpctl create"));
}

TEST(FormatList, non_list_is_shown_as_empty) {
  EXPECT_EQ(format_list(json::object()), format_list(json::array()));
  EXPECT_EQ(format_list(json()), format_list(json::array()));
}

TEST(FormatList, endpoint_without_status_shows_unknown_state) {
  const auto lines = lines_of(format_list(json::array({control::to_json(vp0())})));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(cells(lines[1], column_starts(lines[0]))[2], "?");
}

// ---- format_show -------------------------------------------------------------------------

TEST(FormatShow, settings_of_a_full_endpoint) {
  const unsigned tun = net::tun_offloads_for(vp0().features());
  const std::string out =
      format_show(described(vp0(), "up", true, tun, json::array(), "vp0 bridge=br0 up"));
  EXPECT_EQ(show_value(out, "name"), "vp0");
  EXPECT_EQ(show_value(out, "transport"), "vhost-user");
  EXPECT_EQ(show_value(out, "bind"), "/run/vpd/vp0.sock");
  EXPECT_EQ(show_value(out, "peer"), "-");
  EXPECT_EQ(show_value(out, "mac"), "02:00:00:00:00:01");
  EXPECT_EQ(show_value(out, "mtu"), "1500");
  EXPECT_EQ(show_value(out, "bridge"), "br0");
  EXPECT_EQ(show_value(out, "addresses"), "192.168.1.1/24 fd00::1/64");
  EXPECT_EQ(show_value(out, "admin state"), "up");
  EXPECT_EQ(show_value(out, "link"), "up, carrier on");
  EXPECT_EQ(show_value(out, "ifindex"), "7");
  EXPECT_EQ(show_value(out, "peerfeats"), "default (everything vpd supports)");
  EXPECT_EQ(show_value(out, "vnet header"), "12 bytes");
  EXPECT_EQ(show_value(out, "toggles"), "all on");
  EXPECT_EQ(show_value(out, "priority"), "0");
  EXPECT_EQ(show_value(out, "guest"), "not attached");
  EXPECT_EQ(show_value(out, "declared"), "vp0 bridge=br0 up");
  EXPECT_EQ(show_line(out, "problem"), "");
}

TEST(FormatShow, access_control_settings_are_explained) {
  control::EndpointConfig c = vp0();
  EXPECT_EQ(show_value(format_show(described(c, "up", true, 0, json::array(), "")), "allow"),
            "anyone the socket's permissions let in");
  c.allow = {"0", "64055:994"};
  c.guest_mac = mac("52:54:00:12:34:56");
  c.lock_mac = true;
  json d = described(c, "up", true, 0, json::array(), "");
  d["guest_mac"] = "52:54:00:12:34:56";
  d["status"]["refused_peers"] = 3;
  const std::string out = format_show(d);
  EXPECT_EQ(show_value(out, "allow"), "0 64055:994 (uid[:gid]; others refused: 3)");
  EXPECT_EQ(show_value(out, "guest mac"),
            "52:54:00:12:34:56 (lock-mac: other source MACs are dropped)");
}

TEST(FormatShow, features_and_tun_offloads_are_named) {
  const unsigned tun = net::tun_offloads_for(vp0().features());
  const std::string out = format_show(described(vp0(), "up", true, tun));
  const std::string features = show_value(out, "features");
  for (const char* name : {"CSUM", "GUEST_CSUM", "GUEST_TSO4", "GUEST_TSO6", "HOST_TSO4"}) {
    EXPECT_TRUE(contains(features, name));
  }
  EXPECT_TRUE(contains(show_value(out, "features mask"), "0x"));
  ASSERT_NE(show_line(out, "tun offloads"), "") << out;
  const std::string offloads = show_value(out, "tun offloads");
  for (const char* name : {"CSUM", "TSO4", "TSO6"}) EXPECT_TRUE(contains(offloads, name));
}

TEST(FormatShow, a_migrating_session_shows_dirty_logging_and_the_pages_logged) {
  json d = described(vp0(), "up", true, 0);
  d["status"]["session"] = {{"features", "VERSION_1"}, {"ring", "split"},
                            {"queues_running", 2},     {"queues", 2},
                            {"refused_messages", 0},   {"dirty_logging", true}};
  d["status"]["counters"] = {{"dirty_pages_logged", 42}};
  EXPECT_EQ(show_value(format_show(d), "dirty logging"), "on (42 pages logged)");
  d["status"]["session"]["dirty_logging"] = false;
  EXPECT_EQ(show_value(format_show(d), "dirty logging"), "off (42 pages logged)");
}

TEST(FormatShow, values_start_in_one_column) {
  const std::string out = format_show(described(vp0(), "up", true, 0));
  size_t column = std::string::npos;
  for (const auto& line : lines_of(out)) {
    const size_t colon = line.find(':');
    ASSERT_NE(colon, std::string::npos) << line;
    const size_t value = line.find_first_not_of(' ', colon + 1);
    ASSERT_NE(value, std::string::npos) << line;
    if (column == std::string::npos) column = value;
    EXPECT_EQ(value, column) << line;
  }
  // The longest key, "features mask", sets the column.
  EXPECT_EQ(column, std::string("features mask: ").size());
}

TEST(FormatShow, toggles_off_are_listed) {
  const std::string out = format_show(described(long_named(), "down", false, 0));
  EXPECT_EQ(show_value(out, "toggles"), "off: -rxcsum -tso6");
}

TEST(FormatShow, all_toggles_off) {
  control::EndpointConfig c = vp0();
  c.toggles = 0;
  const std::string out = format_show(described(c, "up", true, 0));
  EXPECT_EQ(show_value(out, "toggles"),
            "off: -rxcsum -txcsum -rxcsum6 -txcsum6 -tcp4csum -udp4csum -tcp6csum -udp6csum "
            "-tso4 -tso6");
}

TEST(FormatShow, stream_legacy_endpoint) {
  const std::string out = format_show(described(long_named(), "down", false, 0));
  EXPECT_EQ(show_value(out, "transport"), "stream");
  EXPECT_EQ(show_value(out, "peer"), "/run/qemu/guest12/net.sock");
  EXPECT_EQ(show_value(out, "peerfeats"), "0x0");
  EXPECT_EQ(show_value(out, "vnet header"), "10 bytes (legacy)");
  EXPECT_EQ(show_value(out, "admin state"), "down");
  EXPECT_EQ(show_value(out, "link"), "down");
  EXPECT_EQ(show_value(out, "bridge"), "-");
  EXPECT_EQ(show_value(out, "addresses"), "-");
  EXPECT_EQ(show_value(out, "tun offloads"), "none");
  EXPECT_EQ(show_value(out, "declared"), "at run time (vpctl)");
}

TEST(FormatShow, connected_stream_endpoint_shows_its_framing_not_virtqueues) {
  control::EndpointConfig c = long_named();
  c.peerfeats.reset();
  json j = described(c, "up", true, 0);
  j["status"]["guest"] = "connected";
  j["status"]["session"] = json{{"features", json::array()},
                                {"ring", "-"},
                                {"queues_running", 0},
                                {"queues", 0},
                                {"sessions", 3},
                                {"refused_messages", 0},
                                {"broken_queues", json::array()}};
  const std::string out = format_show(j);
  EXPECT_EQ(show_value(out, "peerfeats"),
            "0 (a stream carries no virtio-net header, so no offloads)");
  EXPECT_EQ(show_value(out, "framing"),
            "QEMU stream: 4-byte big-endian length, raw Ethernet frame");
  EXPECT_EQ(show_value(out, "sessions"), "3");
  EXPECT_EQ(show_line(out, "queues running"), "");
  EXPECT_EQ(show_line(out, "ring"), "");
}

TEST(FormatShow, tap_transport_explains_that_peerfeats_is_advisory) {
  json j = described(tap_only(), "up", true, net::tun::kCsum);
  j["status"]["peerfeats_note"] = "advisory: the VMM sets its own";
  const std::string out = format_show(j);
  EXPECT_EQ(show_value(out, "peerfeats note"), "advisory: the VMM sets its own");
  EXPECT_EQ(show_value(out, "tun offloads"), "CSUM");
  // Other endpoints have no such line.
  EXPECT_EQ(show_line(format_show(described(vp0(), "up", true, 0)), "peerfeats note"), "");
}

TEST(FormatShow, link_up_without_carrier_says_no_guest) {
  const std::string out = format_show(described(vp0(), "up", false, 0));
  EXPECT_EQ(show_value(out, "link"), "up, no carrier (no guest attached)");
}

TEST(FormatShow, problems_are_shown_one_per_line) {
  const json problems = json::array({"the TAP device does not exist", "bridge br0 is missing"});
  const std::string out = format_show(described(vp0(), "absent", false, 0, problems));
  std::vector<std::string> shown;
  for (const auto& line : lines_of(out)) {
    if (line.rfind("problem:", 0) == 0) shown.push_back(line);
  }
  ASSERT_EQ(shown.size(), 2u) << out;
  EXPECT_TRUE(contains(shown[0], "the TAP device does not exist"));
  EXPECT_TRUE(contains(shown[1], "bridge br0 is missing"));
  EXPECT_EQ(show_value(out, "link"), "absent");
}

TEST(FormatShow, endpoint_without_status_shows_placeholders) {
  const std::string out = format_show(control::to_json(vp0()));
  EXPECT_EQ(show_value(out, "link"), "?");
  EXPECT_EQ(show_value(out, "features"), "-");
  EXPECT_EQ(show_value(out, "mac"), "02:00:00:00:00:01");
}

json with_guest_mac(json j) {
  j["guest_mac"] = "06:00:00:00:00:09";
  return j;
}

TEST(FormatVmmArgs, bind_endpoint_gives_qemu_a_reconnecting_client_and_shared_memory) {
  const std::string out = format_vmm_args(with_guest_mac(described(vp0(), "up", false, 0)));
  EXPECT_TRUE(contains(out, "memory-backend-memfd,id=mem0,size=1G,share=on")) << out;
  EXPECT_TRUE(contains(out, "-chardev socket,id=vp0,path=/run/vpd/vp0.sock,reconnect=1")) << out;
  EXPECT_TRUE(contains(out, "-netdev vhost-user,id=vp0,chardev=vp0")) << out;
  EXPECT_TRUE(contains(out, "-device virtio-net-pci,netdev=vp0,mac=06:00:00:00:00:09")) << out;
  EXPECT_TRUE(contains(out, "vectors=0")) << "the TCG workaround is mentioned";
  EXPECT_TRUE(contains(out, "--net vhost_user=true,socket=/run/vpd/vp0.sock,vhost_mode=client"))
      << out;
}

TEST(FormatVmmArgs, peer_endpoint_makes_qemu_the_server) {
  control::EndpointConfig c = vp0();
  c.bind.clear();
  c.peer = "/run/qemu/g1.sock";
  const std::string out = format_vmm_args(with_guest_mac(described(c, "up", false, 0)));
  EXPECT_TRUE(contains(out, "path=/run/qemu/g1.sock,server=on,wait=off")) << out;
  EXPECT_TRUE(contains(out, "vhost_mode=server")) << out;
  EXPECT_FALSE(contains(out, "reconnect=1")) << out;
}

TEST(FormatVmmArgs, stream_and_tap_transports_use_their_netdevs) {
  control::EndpointConfig s = vp0();
  s.transport = control::Transport::kStream;
  const std::string stream = format_vmm_args(with_guest_mac(described(s, "up", false, 0)));
  EXPECT_TRUE(contains(stream,
                       "-netdev stream,id=vp0,server=off,addr.type=unix,"
                       "addr.path=/run/vpd/vp0.sock"))
      << stream;
  EXPECT_TRUE(contains(stream, "reconnect=1")) << "how QEMU 8.0+ survives a vpd restart";
  EXPECT_FALSE(contains(stream, "vectors=0")) << "the TCG workaround is vhost-user's only";
  s.bind.clear();
  s.peer = "/run/qemu/g1.sock";
  const std::string served = format_vmm_args(with_guest_mac(described(s, "up", false, 0)));
  EXPECT_TRUE(contains(served,
                       "-netdev stream,id=vp0,server=on,addr.type=unix,"
                       "addr.path=/run/qemu/g1.sock"))
      << served;
  control::EndpointConfig t = vp0();
  t.transport = control::Transport::kTap;
  t.bind.clear();
  const std::string tap = format_vmm_args(with_guest_mac(described(t, "up", false, 0)));
  EXPECT_TRUE(contains(tap, "-netdev tap,id=vp0,ifname=vp0,script=no,downscript=no")) << tap;
  EXPECT_TRUE(contains(tap, "vhost=on")) << tap;
}

TEST(FormatVmmArgs, one_queue_pair_asks_for_no_multiqueue) {
  const std::string out = format_vmm_args(with_guest_mac(described(vp0(), "up", false, 0)));
  EXPECT_FALSE(contains(out, "queues=")) << out;
  EXPECT_FALSE(contains(out, "mq=on")) << out;
  EXPECT_FALSE(contains(out, "num_queues")) << out;
}

TEST(FormatVmmArgs, queues_4_gives_qemu_4_pairs_with_mq_and_a_vector_each) {
  control::EndpointConfig c = vp0();
  c.queues = 4;
  const std::string out = format_vmm_args(with_guest_mac(described(c, "up", false, 0)));
  EXPECT_TRUE(contains(out, "-netdev vhost-user,id=vp0,chardev=vp0,queues=4\n")) << out;
  // 8 virtqueues + config + control queue.
  EXPECT_TRUE(contains(out,
                       "-device virtio-net-pci,netdev=vp0,mac=06:00:00:00:00:09,mq=on,"
                       "vectors=10\n"))
      << out;
  EXPECT_TRUE(contains(out, "vectors=0")) << "the TCG workaround is still mentioned";
  // cloud-hypervisor counts virtqueues.
  EXPECT_TRUE(contains(out, "vhost_mode=client,mac=06:00:00:00:00:09,num_queues=8\n")) << out;

  c.transport = control::Transport::kTap;
  c.bind.clear();
  const std::string tap = format_vmm_args(with_guest_mac(described(c, "up", false, 0)));
  EXPECT_TRUE(contains(tap, "-netdev tap,id=vp0,ifname=vp0,script=no,downscript=no,queues=4\n"))
      << tap;
  EXPECT_TRUE(contains(tap, "mq=on,vectors=10")) << tap;
}

}  // namespace
}  // namespace vp::ctl
