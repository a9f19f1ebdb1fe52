// `vpctl metrics`: the Prometheus text exposition format (promtool checks it in the
// integration tier; these check the families and labels).

#include "ctl/metrics.hpp"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "dataplane/net_counters.hpp"
#include "unit_expect.hpp"

namespace vp::ctl {
namespace {

using nlohmann::json;
using unit::contains;

json endpoint(const std::string& name, const std::string& guest) {
  json status{
      {"link", "up"},
      {"carrier", guest == "connected"},
      {"link_state", guest == "connected" ? "carrier-up" : "no-guest"},
      {"guest", guest},
      {"problems", json::array()},
      {"refused_peers", 2},
      {"counters", {{"tx_packets", 5}, {"rx_packets", 7}, {"kicks", 1}, {"a_new_counter", 9}}}};
  if (guest == "connected") {
    status["frontend"] = {{"pid", 99},       {"uid", 0},
                          {"gid", 0},        {"exe", "/usr/bin/qemu \"x\""},
                          {"vm_name", "g1"}, {"connected_since_unix", 1700000000}};
    status["session"] = {{"sessions", 3},
                         {"queues", 2},
                         {"queues_running", 2},
                         {"refused_messages", 0},
                         {"broken_queues", {"tx0: avail-index-jump"}}};
  }
  return json{{"name", name}, {"transport", "vhost-user"}, {"up", true}, {"status", status}};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(FormatMetrics, directions_are_labels_of_one_family) {
  const std::string out = format_metrics(json::array({endpoint("vp0", "connected")}));
  EXPECT_TRUE(contains(out, "vpd_packets_total{endpoint=\"vp0\",direction=\"from_guest\"} 5\n"));
  EXPECT_TRUE(contains(out, "vpd_packets_total{endpoint=\"vp0\",direction=\"to_guest\"} 7\n"));
  EXPECT_TRUE(contains(out, "vpd_kicks_total{endpoint=\"vp0\"} 1\n"));
  EXPECT_TRUE(contains(out, "# TYPE vpd_packets_total counter\n"));
}

TEST(FormatMetrics, queue_pairs_are_a_label_of_their_own_families) {
  json e = endpoint("vp0", "connected");
  e["status"]["queue_counters"] = json::array({{{"queue", 0},
                                                {"tx_packets", 3},
                                                {"tx_bytes", 180},
                                                {"tx_dropped", 0},
                                                {"rx_packets", 4},
                                                {"rx_bytes", 240},
                                                {"rx_dropped", 1}},
                                               {{"queue", 1},
                                                {"tx_packets", 2},
                                                {"tx_bytes", 120},
                                                {"tx_dropped", 0},
                                                {"rx_packets", 3},
                                                {"rx_bytes", 180},
                                                {"rx_dropped", 0}}});
  const std::string out = format_metrics(json::array({e}));
  EXPECT_TRUE(contains(
      out, "vpd_queue_packets_total{endpoint=\"vp0\",queue=\"1\",direction=\"from_guest\"} 2\n"))
      << out;
  EXPECT_TRUE(contains(
      out, "vpd_queue_bytes_total{endpoint=\"vp0\",queue=\"0\",direction=\"to_guest\"} 240\n"))
      << out;
  EXPECT_TRUE(contains(
      out, "vpd_queue_dropped_total{endpoint=\"vp0\",queue=\"0\",direction=\"to_guest\"} 1\n"))
      << out;
  // The endpoint's own families keep no queue label (a sum over queues would count twice).
  EXPECT_TRUE(contains(out, "vpd_packets_total{endpoint=\"vp0\",direction=\"from_guest\"} 5\n"));
  EXPECT_EQ(out.find("# TYPE vpd_queue_packets_total counter\n"),
            out.rfind("# TYPE vpd_queue_packets_total counter\n"));
}

TEST(QueueCounts, drops_are_summed_per_direction_and_shares_are_differences) {
  dataplane::NetCounters c;
  c.tx_packets = 10;
  c.tx_bytes = 600;
  c.tx_dropped_bad_gso = 1;
  c.tx_dropped_spoofed_mac = 2;
  c.tap_write_fails = 3;
  c.tx_tap_full = 50;  // rewound and sent later: not a drop
  c.rx_packets = 4;
  c.rx_dropped_too_big = 5;
  c.rx_dropped_runt = 6;
  c.no_rx_avail_buffer = 70;  // the frame waited: not a drop
  const dataplane::QueueCounts before = dataplane::queue_counts(c);
  EXPECT_EQ(before.tx_dropped, 6u);
  EXPECT_EQ(before.rx_dropped, 11u);
  c.tx_packets += 2;
  c.rx_bytes += 128;
  dataplane::QueueCounts share{.tx_packets = 1};
  dataplane::add_difference(share, dataplane::queue_counts(c), before);
  EXPECT_EQ(share, (dataplane::QueueCounts{.tx_packets = 3, .rx_bytes = 128}));
}

TEST(FormatMetrics, every_family_has_help_and_type_once_before_its_samples) {
  const std::string out =
      format_metrics(json::array({endpoint("vp0", "connected"), endpoint("vp1", "listening")}));
  std::map<std::string, int> help, type;
  std::string current;
  for (const auto& line : lines_of(out)) {
    if (line.rfind("# HELP ", 0) == 0) {
      current = line.substr(7, line.find(' ', 7) - 7);
      ++help[current];
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      ++type[line.substr(7, line.find(' ', 7) - 7)];
      continue;
    }
    const std::string family = line.substr(0, line.find_first_of("{ "));
    EXPECT_EQ(family, current) << "a sample outside its family: " << line;
  }
  for (const auto& [family, n] : help) {
    EXPECT_EQ(n, 1) << family;
    EXPECT_EQ(type[family], 1) << family;
  }
  EXPECT_GT(help.size(), 10u);
}

TEST(FormatMetrics, states_are_one_series_per_value) {
  const std::string out = format_metrics(json::array({endpoint("vp1", "listening")}));
  EXPECT_TRUE(contains(out, "vpd_guest_state{endpoint=\"vp1\",state=\"listening\"} 1\n"));
  EXPECT_TRUE(contains(out, "vpd_guest_state{endpoint=\"vp1\",state=\"connected\"} 0\n"));
  EXPECT_TRUE(contains(out, "vpd_link_state{endpoint=\"vp1\",state=\"no-guest\"} 1\n"));
  EXPECT_FALSE(contains(out, "vpd_frontend_info"));
}

TEST(FormatMetrics, frontend_and_broken_queue_with_escaped_labels) {
  const std::string out = format_metrics(json::array({endpoint("vp0", "connected")}));
  EXPECT_TRUE(contains(out,
                       "vpd_frontend_info{endpoint=\"vp0\",pid=\"99\",uid=\"0\",gid=\"0\","
                       "exe=\"/usr/bin/qemu \\\"x\\\"\",vm_name=\"g1\"} 1\n"))
      << out;
  EXPECT_TRUE(contains(out,
                       "vpd_frontend_connected_timestamp_seconds{endpoint=\"vp0\"} "
                       "1700000000\n"));
  EXPECT_TRUE(contains(out,
                       "vpd_queue_broken{endpoint=\"vp0\",queue=\"tx0\","
                       "reason=\"avail-index-jump\"} 1\n"));
  EXPECT_TRUE(contains(out, "vpd_sessions_total{endpoint=\"vp0\"} 3\n"));
}

TEST(FormatMetrics, a_counter_not_in_the_table_still_appears) {
  const std::string out = format_metrics(json::array({endpoint("vp0", "listening")}));
  EXPECT_TRUE(contains(out, "# TYPE vpd_a_new_counter_total counter\n"));
  EXPECT_TRUE(contains(out, "vpd_a_new_counter_total{endpoint=\"vp0\"} 9\n"));
}

TEST(FormatMetrics, no_endpoints_is_still_valid) {
  EXPECT_EQ(
      format_metrics(json::array()),
      "# HELP vpd_endpoints Endpoints vpd has.\n# TYPE vpd_endpoints gauge\nvpd_endpoints 0\n");
}

}  // namespace
}  // namespace vp::ctl
