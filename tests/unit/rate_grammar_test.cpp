// rx-rate=, tx-rate= and the rate= shorthand: the grammar's edge cases. Each row's example is
// tested by keys_test; here the values around it.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "control/endpoint.hpp"
#include "control/grammar.hpp"
#include "unit_expect.hpp"

namespace vp::control {
namespace {

using unit::fails_with;
using unit::succeeded;

EndpointConfig base() {
  EndpointConfig c;
  c.name = "vp0";
  c.mac = *net::parse_mac("02:00:00:00:00:01");
  return c;
}

Result<EndpointConfig> apply(EndpointConfig c, std::initializer_list<const char*> tokens) {
  const std::vector<std::string> v = unit::words(tokens);
  auto change = parse_change(v);
  if (!change) return std::unexpected(change.error());
  return apply_change(std::move(c), *change);
}

TEST(TxRateGrammar, bit_and_byte_units_give_bits_per_second) {
  EXPECT_EQ(*parse_tx_rate("tx-rate", "100mbit"), (Rate{.bits = 100'000'000}));
  EXPECT_EQ(*parse_tx_rate("tx-rate", "2mbps"), (Rate{.bits = 16'000'000}));
  EXPECT_EQ(*parse_tx_rate("tx-rate", "8000bit"), (Rate{.bits = 8'000}));
}

TEST(TxRateGrammar, packet_units_give_packets_per_second) {
  EXPECT_EQ(*parse_tx_rate("tx-rate", "20kpps"), (Rate{.packets = 20'000}));
  EXPECT_EQ(*parse_tx_rate("tx-rate", "1pps"), (Rate{.packets = 1}));
  EXPECT_EQ(*parse_tx_rate("tx-rate", "100mpps"), (Rate{.packets = 100'000'000}));
}

TEST(TxRateGrammar, text_round_trips_through_the_parser) {
  for (const char* text :
       {"100mbit", "1500kbit", "8001bit", "16gbit", "20kpps", "1500pps", "3mpps", "1pps"}) {
    auto r = parse_tx_rate("tx-rate", text);
    ASSERT_TRUE(succeeded(r)) << text;
    EXPECT_EQ(rate_text(*r), text);
    EXPECT_EQ(*parse_tx_rate("tx-rate", rate_text(*r)), *r) << text;
  }
  EXPECT_EQ(rate_text(Rate{}), "");
  EXPECT_EQ(rate_text(Rate{.bits = 16'000'000}), "16mbit") << "2mbps is shown in bits";
}

TEST(TxRateGrammar, zero_is_outside_the_range) {
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "0mbit"), "bad-value", {"outside"}));
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "0pps"), "bad-value", {"outside", "1pps"}));
  EXPECT_TRUE(fails_with(parse_rate("rx-rate", "0bit"), "bad-value", {"outside", "8kbit"}));
}

TEST(TxRateGrammar, values_whose_product_overflows_are_refused_not_wrapped) {
  // 999999999999 gbps is 8e21 bit/s: more than 64 bits hold; it must not wrap into range.
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "999999999999gbps"), "bad-value", {"outside"}));
  EXPECT_TRUE(fails_with(parse_rate("rx-rate", "999999999999gbps"), "bad-value", {"outside"}));
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "9999999999999bit"), "bad-value", {"too large"}));
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "101mpps"), "bad-value", {"outside"}));
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "17gbit"), "bad-value", {"outside"}));
}

TEST(TxRateGrammar, unknown_or_missing_unit_names_the_units) {
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "100"), "bad-value", {"has no unit", "kpps"}));
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "100furlongs"), "bad-value",
                         {"unknown unit", "mbit", "pps"}));
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "fast"), "bad-value", {"number"}));
  EXPECT_TRUE(fails_with(parse_tx_rate("tx-rate", "1.5mbit"), "bad-value", {"unknown unit"}));
}

TEST(RxRateGrammar, packets_per_second_is_refused_with_the_reason) {
  EXPECT_TRUE(fails_with(parse_rate("rx-rate", "20kpps"), "bad-value",
                         {"tbf", "bytes, not packets", "tx-rate=20kpps"}));
}

TEST(RateShorthand, sets_both_directions_and_clears_both) {
  auto c = apply(base(), {"rate=100mbit"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->rx_rate, 100'000'000u);
  EXPECT_EQ(c->tx_rate, (Rate{.bits = 100'000'000}));
  auto cleared = apply(*c, {"-rate"});
  ASSERT_TRUE(succeeded(cleared));
  EXPECT_EQ(*cleared, base());
  // A later key in the same change wins over the shorthand's half.
  auto mixed = apply(base(), {"rate=100mbit", "tx-rate=20kpps"});
  ASSERT_TRUE(succeeded(mixed));
  EXPECT_EQ(mixed->rx_rate, 100'000'000u);
  EXPECT_EQ(mixed->tx_rate, (Rate{.packets = 20'000}));
}

TEST(RateShorthand, a_packet_rate_is_refused_for_both_directions) {
  EXPECT_TRUE(fails_with(parse_change(unit::words({"rate=20kpps"})), "bad-value",
                         {"bytes, not packets", "tx-rate=20kpps"}));
}

TEST(TxRateGrammar, other_transports_refuse_it_with_the_reason) {
  EndpointConfig stream = base();
  stream.transport = Transport::kStream;
  stream.peerfeats = 0;
  EXPECT_TRUE(fails_with(apply(stream, {"tx-rate=10mbit"}), "conflicting-settings",
                         {"stream", "vhost-user"}));
  EndpointConfig tap = base();
  tap.transport = Transport::kTap;
  EXPECT_TRUE(fails_with(apply(tap, {"rate=10mbit"}), "conflicting-settings",
                         {"transport=tap", "rx-rate"}));
  EXPECT_TRUE(succeeded(apply(tap, {"rx-rate=10mbit"})));
}

}  // namespace
}  // namespace vp::control
