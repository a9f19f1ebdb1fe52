// Journald-friendly logging (issue 5): under systemd (JOURNAL_STREAM set) every line carries a
// syslog priority prefix journald understands, events about an endpoint name it, and traffic
// writes no lines.

#include <gtest/gtest.h>

#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/harness.hpp"
#include "support/vhost_frontend.hpp"

namespace vp::test {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(Logging, vpd_started_without_timeouts_logs_the_default_bounds_of_10_and_30_s) {
  ASSERT_EQ(enter_private_netns(), "");
  TempDir dir;
  Vpd vpd(dir.path());
  ASSERT_EQ(vpd.start(), "");
  EXPECT_NE(vpd.log().find("bounds: a front-end message arrives whole within 10 s "
                           "(--message-timeout), a control request line within 30 s "
                           "(--request-timeout)"),
            std::string::npos)
      << vpd.log();
  EXPECT_EQ(vpd.stop(), 0);
  // Given on the command line, the same line says so.
  ASSERT_EQ(vpd.start({"--message-timeout", "7", "--request-timeout=45"}), "");
  EXPECT_NE(vpd.log().find("within 7 s (--message-timeout), a control request line within 45 s"),
            std::string::npos)
      << vpd.log();
}

TEST(Logging, under_journald_every_line_has_a_priority_and_names_its_endpoint) {
  ASSERT_EQ(enter_private_netns(), "");
  TempDir dir;
  Vpd vpd(dir.path());
  ASSERT_EQ(vpd.start({}, {"JOURNAL_STREAM=8:12345"}), "");
  ASSERT_EQ(vpd.ctl({"vp0", "create", "address=10.93.0.1/24", "up"}).status, 0);
  EXPECT_EQ(vpd.ctl({"vp0", "bridge=nosuchbr"}).status, 1);  // refused
  EXPECT_EQ(vpd.ctl({"vp0", "mtu=9000"}).status, 0);
  const size_t before_traffic = lines_of(vpd.log()).size();
  // A front-end comes and goes; frames pass meanwhile, which must not add lines.
  {
    auto fe = VhostFrontend::connect(vpd.runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
    ASSERT_TRUE(fe);
    ASSERT_TRUE((*fe)->negotiate(~0ull, ~0ull));
    ASSERT_TRUE((*fe)->set_mem_table());
    ASSERT_TRUE((*fe)->setup_queue(0, 64));
    ASSERT_TRUE((*fe)->setup_queue(1, 64));
    for (int i = 0; i < 40; ++i) {
      std::vector<std::byte> frame(12 + 60, std::byte{0});
      for (int b = 12; b < 18; ++b) frame[b] = std::byte{0xff};
      frame[18] = std::byte{0x02};
      ASSERT_TRUE((*fe)->post_tx(1, frame));
    }
    ASSERT_TRUE((*fe)->kick(1));
    nlohmann::json counters;
    for (int i = 0; i < 250; ++i) {
      counters = vpd.ctl_json({"vp0"})["status"]["counters"];
      if (counters.value("tx_packets", 0) >= 40) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(counters.value("tx_packets", 0), 40) << counters.dump();
  }
  EXPECT_EQ(vpd.stop(), 0);

  const std::vector<std::string> lines = lines_of(vpd.log());
  ASSERT_FALSE(lines.empty());
  const std::regex prefixed("^<[0-7]>.+");
  for (const auto& line : lines) {
    EXPECT_TRUE(std::regex_match(line, prefixed)) << "no priority prefix: " << line;
    if (line.find("vhost-user") != std::string::npos ||
        line.find("frontend") != std::string::npos || line.find("refused") != std::string::npos) {
      EXPECT_NE(line.find("vp0"), std::string::npos)
          << "an endpoint event without its name: " << line;
    }
  }
  const std::string log = vpd.log();
  EXPECT_NE(log.find("<5>vp0: set "), std::string::npos) << "each change is a notice\n" << log;
  EXPECT_NE(log.find("vp0: refused set (no-such-bridge) from uid 0"), std::string::npos)
      << "a refusal names the endpoint, its code and who asked\n"
      << log;
  // Session lines only (connect, negotiation, end): none per frame.
  EXPECT_LT(lines.size() - before_traffic, 12u) << log;
}

}  // namespace
}  // namespace vp::test
