#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "ctl/output.hpp"

namespace vp::ctl {
namespace {

using nlohmann::json;

json connected_endpoint() {
  return json{{"name", "vp0"},
              {"status",
               {{"guest", "connected"},
                {"session",
                 {{"features", {"CSUM", "GUEST_CSUM", "VERSION_1"}},
                  {"ring", "packed"},
                  {"queues_running", 2},
                  {"queues", 2},
                  {"refused_messages", 0},
                  {"broken_queues", json::array({"tx0: avail-index-jump"})}}},
                {"counters", {{"rx_packets", 7}, {"tx_packets", 5}, {"no_rx_avail_buffer", 1}}}}}};
}

std::string line_of(const std::string& text, const std::string& key) {
  const size_t at = text.find("\n" + key + ":");
  const size_t start = at == std::string::npos ? (text.rfind(key + ":", 0) == 0 ? 0 : at) : at + 1;
  if (start == std::string::npos) return "";
  return text.substr(start, text.find('\n', start) - start);
}

TEST(FormatStats, every_counter_is_a_line_with_its_value) {
  const std::string out = format_stats(connected_endpoint());
  EXPECT_NE(line_of(out, "guest").find("connected"), std::string::npos) << out;
  EXPECT_NE(line_of(out, "rx_packets").find(" 7"), std::string::npos) << out;
  EXPECT_NE(line_of(out, "tx_packets").find(" 5"), std::string::npos) << out;
  EXPECT_NE(line_of(out, "no_rx_avail_buffer").find(" 1"), std::string::npos) << out;
}

TEST(FormatStats, endpoint_without_a_data_path_says_so) {
  const std::string out = format_stats(json{{"name", "vp1"}, {"status", {{"guest", "-"}}}});
  EXPECT_NE(out.find("none (the endpoint has no data path)"), std::string::npos) << out;
}

TEST(FormatShow, connected_session_shows_negotiation_ring_and_queues) {
  const std::string out = format_show(connected_endpoint());
  EXPECT_NE(line_of(out, "negotiated").find("CSUM|GUEST_CSUM|VERSION_1"), std::string::npos) << out;
  EXPECT_NE(line_of(out, "ring").find("packed"), std::string::npos) << out;
  EXPECT_NE(line_of(out, "queues running").find("2 of 2"), std::string::npos) << out;
  EXPECT_NE(line_of(out, "broken queue").find("tx0: avail-index-jump"), std::string::npos) << out;
}

}  // namespace
}  // namespace vp::ctl
