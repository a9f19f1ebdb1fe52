// What vpctl shows of the attached front-end, and the JSON objects of stats and qemu-args.

#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "ctl/output.hpp"
#include "unit_expect.hpp"

namespace vp::ctl {
namespace {

using nlohmann::json;
using unit::contains;

std::string value_of(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) != 0) continue;
    line = line.substr(key.size() + 1);
    return line.substr(line.find_first_not_of(' '));
  }
  return "<no " + key + ">";
}

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// An endpoint as vpd describes it while QEMU is connected but its driver has not started.
json qemu_attached(bool carrier, const std::string& link_state) {
  return json{{"name", "vp0"},
              {"transport", "vhost-user"},
              {"mac", "02:00:00:00:00:01"},
              {"guest_mac", "52:54:00:00:00:01"},
              {"bind", "/run/vpd/vp0.sock"},
              {"up", true},
              {"toggles", {"rxcsum", "txcsum"}},
              {"status",
               {{"link", "up"},
                {"carrier", carrier},
                {"link_state", link_state},
                {"guest", "connected"},
                {"socket", "/run/vpd/vp0.sock"},
                {"features", {"CSUM", "VERSION_1"}},
                {"frontend",
                 {{"pid", 4242},
                  {"uid", 0},
                  {"gid", 0},
                  {"exe", "/usr/bin/qemu-system-x86_64"},
                  {"vm_name", "web1"},
                  {"connected_since", "2026-12-03T17:30:02Z"},
                  {"connected_since_unix", now_unix() - 125}}},
                {"counters", {{"tx_packets", 3}, {"rx_packets", 4}}},
                {"session",
                 {{"features", {"VERSION_1"}},
                  {"ring", "split"},
                  {"queues_running", 0},
                  {"queues", 2},
                  {"sessions", 1},
                  {"refused_messages", 0},
                  {"broken_queues", json::array()}}},
                {"problems", json::array()}}}};
}

TEST(FormatShowFrontend, connected_guest_without_carrier_says_the_driver_has_not_started) {
  const std::string out = format_show(qemu_attached(false, "guest-not-started"));
  EXPECT_EQ(value_of(out, "link"),
            "up, no carrier (guest connected, driver has not started its queues)");
  EXPECT_EQ(value_of(out, "guest"), "connected");
}

TEST(FormatShowFrontend, carrier_on_with_a_guest) {
  EXPECT_EQ(value_of(format_show(qemu_attached(true, "carrier-up")), "link"), "up, carrier on");
}

TEST(FormatShowFrontend, names_the_process_vm_and_since_when) {
  const std::string out = format_show(qemu_attached(true, "carrier-up"));
  EXPECT_EQ(value_of(out, "vm name"), "web1");
  EXPECT_EQ(value_of(out, "frontend"), "pid 4242, uid 0, gid 0, /usr/bin/qemu-system-x86_64");
  EXPECT_EQ(value_of(out, "since"), "2026-12-03T17:30:02Z (2m 5s ago)");
  EXPECT_EQ(value_of(out, "toggles"),
            "off: -rxcsum6 -txcsum6 -tcp4csum -udp4csum -tcp6csum -udp6csum -tso4 -tso6");
  EXPECT_EQ(value_of(out, "features"), "CSUM|VERSION_1");
  EXPECT_EQ(value_of(out, "guest mac"), "52:54:00:00:00:01");
}

TEST(FormatShowFrontend, without_exe_or_name_leaves_them_out) {
  json e = qemu_attached(true, "carrier-up");
  e["status"]["frontend"].erase("exe");
  e["status"]["frontend"].erase("vm_name");
  const std::string out = format_show(e);
  EXPECT_EQ(value_of(out, "frontend"), "pid 4242, uid 0, gid 0");
  EXPECT_TRUE(contains(value_of(out, "vm name"), "names none"));
}

TEST(FormatShowFrontend, listening_endpoint_has_no_frontend_lines) {
  json e = qemu_attached(false, "no-guest");
  e["status"]["guest"] = "listening";
  e["status"].erase("frontend");
  e["status"].erase("session");
  const std::string out = format_show(e);
  EXPECT_EQ(value_of(out, "guest"), "listening on /run/vpd/vp0.sock");
  EXPECT_EQ(value_of(out, "frontend"), "<no frontend>");
  EXPECT_EQ(value_of(out, "link"), "up, no carrier (no guest attached)");
}

TEST(FormatListFrontend, an_attached_guest_gets_a_line_under_its_row) {
  json plain = qemu_attached(false, "no-guest");
  plain["name"] = "vp1";
  plain["status"].erase("frontend");
  const std::string out = format_list(json::array({qemu_attached(true, "carrier-up"), plain}));
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u) << out;
  EXPECT_EQ(lines[1].rfind("vp0 ", 0), 0u) << out;
  EXPECT_EQ(lines[2],
            "  guest: VM web1, pid 4242, uid 0, gid 0, /usr/bin/qemu-system-x86_64, since "
            "2026-12-03T17:30:02Z (2m 5s ago)");
  EXPECT_EQ(lines[3].rfind("vp1 ", 0), 0u) << out;
}

TEST(StatsJson, is_its_own_object_with_the_counters) {
  const json j = stats_json(qemu_attached(true, "carrier-up"));
  EXPECT_EQ(j["endpoint"], "vp0");
  EXPECT_EQ(j["guest"], "connected");
  EXPECT_EQ(j["link_state"], "carrier-up");
  EXPECT_EQ(j["counters"]["tx_packets"], 3);
  EXPECT_EQ(j["session"]["queues"], 2);
  EXPECT_FALSE(j.contains("status")) << j.dump();
  EXPECT_FALSE(j.contains("mac")) << j.dump();
}

TEST(StatsJson, tap_transport_has_no_counters) {
  json e = qemu_attached(false, "no-guest");
  e["transport"] = "tap";
  e["status"].erase("counters");
  e["status"].erase("session");
  EXPECT_FALSE(stats_json(e).contains("counters"));
}

TEST(VmmArgsJson, gives_argv_words_per_vmm) {
  const json j = vmm_args_json(qemu_attached(true, "carrier-up"));
  EXPECT_EQ(j["endpoint"], "vp0");
  EXPECT_EQ(j["shared_memory"], true);
  const json& args = j["qemu"]["args"];
  ASSERT_TRUE(args.is_array());
  ASSERT_GE(args.size(), 10u) << args.dump();
  EXPECT_EQ(args[0], "-object");
  EXPECT_EQ(args[1], "memory-backend-memfd,id=mem0,size=1G,share=on");
  EXPECT_EQ(args[4], "-chardev");
  EXPECT_EQ(args[5], "socket,id=vp0,path=/run/vpd/vp0.sock,reconnect=1");
  EXPECT_EQ(args.back(), "virtio-net-pci,netdev=vp0,mac=52:54:00:00:00:01");
  EXPECT_TRUE(contains(j["qemu"]["notes"][0].get<std::string>(), "vectors=0"));
  EXPECT_EQ(j["cloud_hypervisor"]["args"][0], "--memory");
}

TEST(VmmArgsJson, text_and_json_say_the_same) {
  const json e = qemu_attached(true, "carrier-up");
  const std::string text = format_vmm_args(e);
  // The object is kept in a local: a range-for over a member of a temporary would read
  // freed memory (the temporary dies before the loop body runs).
  const json j = vmm_args_json(e);
  for (const auto& word : j["qemu"]["args"]) {
    EXPECT_TRUE(contains(text, word.get<std::string>()));
  }
}

TEST(VmmArgsJson, qemu_is_given_the_mtu_only_when_it_is_not_1500) {
  json e = qemu_attached(true, "carrier-up");
  e["mtu"] = 1450;
  const json j = vmm_args_json(e);
  EXPECT_EQ(j["qemu"]["args"].back(),
            "virtio-net-pci,netdev=vp0,mac=52:54:00:00:00:01,host_mtu=1450");
  e["mtu"] = 1500;
  const json plain = vmm_args_json(e);
  EXPECT_EQ(plain["qemu"]["args"].back(), "virtio-net-pci,netdev=vp0,mac=52:54:00:00:00:01");
  e["mtu"] = 9000;
  e["transport"] = "stream";
  const json stream = vmm_args_json(e);
  EXPECT_TRUE(contains(stream["qemu"]["args"].back().get<std::string>(), ",host_mtu=9000"));
}

}  // namespace
}  // namespace vp::ctl
