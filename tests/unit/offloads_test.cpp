#include "net/offloads.hpp"

#include <gtest/gtest.h>

namespace vp::net {
namespace {

// One row per feature bit: the guest-feature -> TUNSETOFFLOAD mapping, bit by bit, with the
// prerequisites each bit needs so that it survives close_dependencies().
struct Row {
  const char* name;
  uint64_t features;
  unsigned tun;
};

// gtest prints parameters it cannot name byte by byte (padding included); name them.
void PrintTo(const Row& row, std::ostream* os) { *os << row.name; }

class TunOffloadTable : public ::testing::TestWithParam<Row> {};

TEST_P(TunOffloadTable, maps_one_feature_to_its_tun_flags) {
  const Row& row = GetParam();
  EXPECT_EQ(close_dependencies(row.features), row.features) << row.name;
  EXPECT_EQ(tun_offloads_for(row.features), row.tun) << row.name;
}

INSTANTIATE_TEST_SUITE_P(
    DesignTable, TunOffloadTable,
    ::testing::Values(
        Row{"none", 0, 0}, Row{"CSUM", feature::kCsum, 0},
        Row{"GUEST_CSUM", feature::kGuestCsum, tun::kCsum},
        Row{"GUEST_TSO4", feature::kGuestCsum | feature::kGuestTso4, tun::kCsum | tun::kTso4},
        Row{"GUEST_TSO6", feature::kGuestCsum | feature::kGuestTso6, tun::kCsum | tun::kTso6},
        Row{"GUEST_ECN", feature::kGuestCsum | feature::kGuestTso4 | feature::kGuestEcn,
            tun::kCsum | tun::kTso4 | tun::kTsoEcn},
        Row{"GUEST_UFO", feature::kGuestCsum | feature::kGuestUfo, tun::kCsum | tun::kUfo},
        Row{"GUEST_USO4", feature::kGuestCsum | feature::kGuestUso4, tun::kCsum | tun::kUso4},
        Row{"GUEST_USO6", feature::kGuestCsum | feature::kGuestUso6, tun::kCsum | tun::kUso6},
        Row{"HOST_TSO4", feature::kCsum | feature::kHostTso4, 0},
        Row{"HOST_TSO6", feature::kCsum | feature::kHostTso6, 0},
        Row{"HOST_ECN", feature::kCsum | feature::kHostTso4 | feature::kHostEcn, 0},
        Row{"HOST_UFO", feature::kCsum | feature::kHostUfo, 0},
        Row{"HOST_USO", feature::kCsum | feature::kHostUso, 0}),
    [](const auto& row_info) { return std::string(row_info.param.name); });

TEST(CloseDependencies, guest_tso_without_guest_csum_is_dropped) {
  EXPECT_EQ(close_dependencies(feature::kGuestTso4 | feature::kGuestTso6), 0u);
  EXPECT_EQ(tun_offloads_for(feature::kGuestTso4), 0u);
}

TEST(CloseDependencies, ecn_goes_with_the_last_tso) {
  EXPECT_EQ(close_dependencies(feature::kGuestCsum | feature::kGuestEcn), feature::kGuestCsum);
  EXPECT_EQ(close_dependencies(feature::kCsum | feature::kHostEcn), feature::kCsum);
}

TEST(CloseDependencies, legacy_gso_bit_is_never_offered) {
  EXPECT_EQ(close_dependencies(feature::kGso | feature::kCsum), feature::kCsum);
}

TEST(EffectiveFeatures, qnx_stack_mask_0x19c3) {
  // 0x19c3 = CSUM GUEST_CSUM GSO GUEST_TSO4 GUEST_TSO6 HOST_TSO4 HOST_TSO6.
  const uint64_t f = effective_features(0x19c3, toggle::kAll);
  EXPECT_EQ(f, feature::kCsum | feature::kGuestCsum | feature::kGuestTso4 | feature::kGuestTso6 |
                   feature::kHostTso4 | feature::kHostTso6);
  EXPECT_EQ(tun_offloads_for(f), tun::kCsum | tun::kTso4 | tun::kTso6);
}

TEST(EffectiveFeatures, default_offers_everything_supported) {
  EXPECT_EQ(effective_features(std::nullopt, toggle::kAll), kOffloadsSupported);
}

TEST(EffectiveFeatures, peerfeats_zero_offers_nothing) {
  EXPECT_EQ(effective_features(0, toggle::kAll), 0u);
  EXPECT_EQ(tun_offloads_for(effective_features(0, toggle::kAll)), 0u);
}

TEST(EffectiveFeatures, qnx_host_rule_disabling_protocol_checksums_clears_both_csum_bits) {
  // `ifconfig vp0 -tcp4csum -udp4csum -udp6csum -tcp6csum` from the seed.
  const uint32_t toggles = toggle::kAll & ~(toggle::kTcp4csum | toggle::kUdp4csum |
                                            toggle::kTcp6csum | toggle::kUdp6csum);
  const uint64_t f = effective_features(0x7fc3, toggles);
  EXPECT_EQ(f & (feature::kCsum | feature::kGuestCsum), 0u);
  EXPECT_EQ(f, 0u) << feature_names(f);  // everything else needs a checksum bit
  EXPECT_EQ(tun_offloads_for(f), 0u);
}

TEST(EffectiveFeatures, rx_toggles_gate_guest_transmit_checksum) {
  const uint64_t f = effective_features(std::nullopt, toggle::kAll & ~toggle::kRxcsum6);
  EXPECT_EQ(f & feature::kCsum, 0u);
  EXPECT_EQ(f & (feature::kHostTso4 | feature::kHostTso6 | feature::kHostUso), 0u);
  EXPECT_NE(f & feature::kGuestCsum, 0u);
}

TEST(EffectiveFeatures, tx_toggles_gate_host_transmit_checksum) {
  const uint64_t f = effective_features(std::nullopt, toggle::kAll & ~toggle::kTxcsum);
  EXPECT_EQ(f & feature::kGuestCsum, 0u);
  EXPECT_EQ(tun_offloads_for(f), 0u);
  EXPECT_NE(f & feature::kCsum, 0u);
}

TEST(EffectiveFeatures, tso4_toggle_clears_both_directions_of_tso4_only) {
  const uint64_t f = effective_features(std::nullopt, toggle::kAll & ~toggle::kTso4);
  EXPECT_EQ(f & (feature::kGuestTso4 | feature::kHostTso4), 0u);
  EXPECT_NE(f & feature::kGuestTso6, 0u);
  EXPECT_EQ(tun_offloads_for(f) & tun::kTso4, 0u);
  EXPECT_NE(tun_offloads_for(f) & tun::kTso6, 0u);
}

TEST(ParsePeerfeats, hex_and_decimal) {
  EXPECT_EQ(parse_peerfeats("0x19c3").value(), 0x19c3u);
  EXPECT_EQ(parse_peerfeats("0X7FC3").value(), 0x7fc3u);
  EXPECT_EQ(parse_peerfeats("6595").value(), 0x19c3u);
  EXPECT_EQ(parse_peerfeats("0").value(), 0u);
}

TEST(ParsePeerfeats, unknown_bits_are_named) {
  auto r = parse_peerfeats("0x8004");  // bits 2 and 15
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "bad-peerfeats");
  EXPECT_NE(r.error().message.find("bits 2, 15"), std::string::npos) << r.error().message;
}

TEST(ParsePeerfeats, garbage_is_refused) {
  for (const char* text : {"", "0x", "12abc", "-1", "0x1ffffffffffffffff"}) {
    auto r = parse_peerfeats(text);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code, "bad-peerfeats");
  }
}

TEST(Names, features_and_tun_flags_print_by_name) {
  EXPECT_EQ(feature_names(feature::kCsum | feature::kHostTso4), "CSUM|HOST_TSO4");
  EXPECT_EQ(feature_names(0), "none");
  EXPECT_EQ(tun_offload_names(tun::kCsum | tun::kTso6), "CSUM|TSO6");
  EXPECT_EQ(toggle_names(toggle::kRxcsum | toggle::kTso6), "rxcsum,tso6");
  EXPECT_EQ(toggle_by_name("udp6csum"), toggle::kUdp6csum);
  EXPECT_EQ(toggle_by_name("nope"), 0u);
}

}  // namespace
}  // namespace vp::net
