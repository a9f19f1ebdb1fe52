#include "ctl/stats_watch.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace vp::ctl {
namespace {

using nlohmann::json;

json view(json counters) {
  return json{{"name", "vp0"}, {"status", {{"counters", std::move(counters)}}}};
}

constexpr std::time_t kNoon = 1796385600;  // 2026-12-04T12:00:00Z

TEST(StatsInterval, delta_and_rate_are_per_counter_over_the_time_that_passed) {
  const json j =
      stats_interval_json(view({{"tx_packets", 100u}, {"tx_bytes", 6000u}}),
                          view({{"tx_packets", 300u}, {"tx_bytes", 18000u}}), 2.0, kNoon);
  EXPECT_EQ(j["endpoint"], "vp0");
  EXPECT_EQ(j["time"], "2026-12-04T12:00:00Z");
  EXPECT_EQ(j["delta"]["tx_packets"], 200u);
  EXPECT_DOUBLE_EQ(j["per_second"]["tx_packets"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(j["per_second"]["tx_bytes"].get<double>(), 6000.0);
  EXPECT_EQ(j["counters"]["tx_packets"], 300u);
  EXPECT_FALSE(j["restarted"].get<bool>());
}

TEST(StatsInterval, a_counter_that_went_down_restarts_from_zero_instead_of_negative) {
  const json j = stats_interval_json(view({{"tx_packets", 500u}, {"kicks", 9u}}),
                                     view({{"tx_packets", 7u}, {"kicks", 20u}}), 1.0, kNoon);
  EXPECT_TRUE(j["restarted"].get<bool>());
  EXPECT_EQ(j["delta"]["tx_packets"], 7u);
  EXPECT_EQ(j["delta"]["kicks"], 20u);
  EXPECT_NE(format_stats_interval(j).find("counters restarted"), std::string::npos);
}

TEST(StatsInterval, a_counter_new_in_the_later_view_counts_from_zero) {
  const json j = stats_interval_json(view(json::object()), view({{"rx_packets", 4u}}), 1.0, kNoon);
  EXPECT_EQ(j["delta"]["rx_packets"], 4u);
}

TEST(StatsInterval, line_has_rates_each_way_drops_and_the_other_counters_that_moved) {
  const json j = stats_interval_json(view({{"tx_packets", 0u},
                                           {"tx_bytes", 0u},
                                           {"rx_packets", 0u},
                                           {"rx_bytes", 0u},
                                           {"tx_dropped_spoofed_mac", 0u},
                                           {"rx_dropped_too_big", 0u},
                                           {"kicks", 0u},
                                           {"interrupts", 5u}}),
                                     view({{"tx_packets", 1000u},
                                           {"tx_bytes", 1250000u},
                                           {"rx_packets", 10u},
                                           {"rx_bytes", 0u},
                                           {"tx_dropped_spoofed_mac", 3u},
                                           {"rx_dropped_too_big", 1u},
                                           {"kicks", 12u},
                                           {"interrupts", 5u}}),
                                     1.0, kNoon);
  EXPECT_EQ(format_stats_interval(j),
            "12:00:00      1000      10.00         10       0.00        4  kicks +12 "
            "rx_dropped_too_big +1 tx_dropped_spoofed_mac +3\n");
}

TEST(StatsInterval, a_quiet_interval_says_nothing_else_moved) {
  const json j =
      stats_interval_json(view({{"tx_packets", 1u}}), view({{"tx_packets", 1u}}), 1.0, kNoon);
  const std::string line = format_stats_interval(j);
  EXPECT_EQ(line.substr(line.size() - 3), " -\n") << line;
}

TEST(StatsInterval, header_names_the_columns_and_which_way_tx_goes) {
  const std::string h = format_stats_interval_header("vp3", 0.5);
  EXPECT_EQ(h.rfind("vp3 every 0.5 s", 0), 0u) << h;
  EXPECT_NE(h.find("tx is guest→host"), std::string::npos);
  EXPECT_NE(h.find("tx pkt/s"), std::string::npos);
  EXPECT_NE(h.find("drops/s"), std::string::npos);
}

}  // namespace
}  // namespace vp::ctl
