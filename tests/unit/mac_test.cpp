#include "net/mac.hpp"

#include <gtest/gtest.h>

#include "unit_expect.hpp"

namespace vp::net {
namespace {

using unit::fails_with;
using unit::succeeded;

constexpr Mac kA0{{0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0}};
constexpr const char* kMachine = "0123456789abcdef0123456789abcdef";

TEST(ParseMac, twelve_digits_without_separators) {
  auto mac = parse_mac("a0b0c0d0e0f0");
  ASSERT_TRUE(succeeded(mac));
  EXPECT_EQ(*mac, kA0);
}

TEST(ParseMac, colon_separated) {
  auto mac = parse_mac("a0:b0:c0:d0:e0:f0");
  ASSERT_TRUE(succeeded(mac));
  EXPECT_EQ(*mac, kA0);
}

TEST(ParseMac, dash_separated) {
  auto mac = parse_mac("a0-b0-c0-d0-e0-f0");
  ASSERT_TRUE(succeeded(mac));
  EXPECT_EQ(*mac, kA0);
}

TEST(ParseMac, upper_case_in_every_form) {
  for (const char* text : {"A0B0C0D0E0F0", "A0:B0:C0:D0:E0:F0", "A0-b0-C0-d0-E0-f0"}) {
    auto mac = parse_mac(text);
    ASSERT_TRUE(succeeded(mac)) << text;
    EXPECT_EQ(*mac, kA0) << text;
  }
}

TEST(ParseMac, every_byte_lands_in_its_place) {
  auto mac = parse_mac("02:13:24:35:46:5f");
  ASSERT_TRUE(succeeded(mac));
  EXPECT_EQ(*mac, (Mac{{0x02, 0x13, 0x24, 0x35, 0x46, 0x5f}}));
}

TEST(ParseMac, eleven_digits_are_refused) {
  EXPECT_TRUE(
      fails_with(parse_mac("a0b0c0d0e0f"), "invalid-mac", {"mac=a0b0c0d0e0f ", "12 hex digits"}));
}

TEST(ParseMac, thirteen_digits_are_refused) {
  EXPECT_TRUE(fails_with(parse_mac("a0b0c0d0e0f01"), "invalid-mac", {"12 hex digits"}));
}

TEST(ParseMac, empty_text_is_refused) {
  EXPECT_TRUE(fails_with(parse_mac(""), "invalid-mac", {"12 hex digits"}));
}

TEST(ParseMac, five_colon_groups_are_refused) {
  EXPECT_TRUE(fails_with(parse_mac("a0:b0:c0:d0:e0"), "invalid-mac", {"12 hex digits"}));
}

TEST(ParseMac, seven_colon_groups_are_refused) {
  EXPECT_TRUE(fails_with(parse_mac("a0:b0:c0:d0:e0:f0:01"), "invalid-mac", {"12 hex digits"}));
}

TEST(ParseMac, single_digit_groups_are_refused) {
  EXPECT_TRUE(fails_with(parse_mac("2:0:0:0:0:1"), "invalid-mac", {"12 hex digits"}));
}

TEST(ParseMac, mixed_separators_are_refused) {
  EXPECT_TRUE(fails_with(parse_mac("a0:b0-c0:d0:e0:f0"), "invalid-mac",
                         {"mac=a0:b0-c0:d0:e0:f0", "all ':' or all '-'"}));
  EXPECT_TRUE(fails_with(parse_mac("a0-b0-c0-d0-e0:f0"), "invalid-mac", {"all ':' or all '-'"}));
}

TEST(ParseMac, dot_separator_is_refused) {
  EXPECT_TRUE(fails_with(parse_mac("a0.b0.c0.d0.e0.f0"), "invalid-mac", {"separator"}));
}

TEST(ParseMac, non_hex_digit_is_refused) {
  EXPECT_TRUE(fails_with(parse_mac("a0b0c0d0e0fg"), "invalid-mac", {"not a hex digit"}));
  EXPECT_TRUE(fails_with(parse_mac("zz:b0:c0:d0:e0:f0"), "invalid-mac", {"not a hex digit"}));
  EXPECT_TRUE(fails_with(parse_mac("0x0b0c0d0e0f"), "invalid-mac", {"not a hex digit"}));
}

TEST(ParseMac, separator_in_a_digit_position_is_refused) {
  EXPECT_TRUE(fails_with(parse_mac("a0:b0:c0:d0:e0::0"), "invalid-mac", {"not a hex digit"}));
}

TEST(ParseMac, all_zero_address_is_refused) {
  for (const char* text : {"000000000000", "00:00:00:00:00:00", "00-00-00-00-00-00"}) {
    EXPECT_TRUE(fails_with(parse_mac(text), "invalid-mac", {"all-zero"})) << text;
  }
}

TEST(ParseMac, multicast_bit_is_refused) {
  EXPECT_TRUE(fails_with(parse_mac("01:00:5e:00:00:01"), "invalid-mac",
                         {"mac=01:00:5e:00:00:01", "multicast"}));
  EXPECT_TRUE(fails_with(parse_mac("03:00:00:00:00:01"), "invalid-mac", {"multicast"}));
}

TEST(ParseMac, broadcast_address_is_refused_as_multicast) {
  EXPECT_TRUE(fails_with(parse_mac("ff:ff:ff:ff:ff:ff"), "invalid-mac", {"multicast"}));
}

TEST(ParseMac, error_sentence_shows_the_accepted_forms) {
  EXPECT_TRUE(fails_with(parse_mac("xyz"), "invalid-mac",
                         {"a0b0c0d0e0f0", "a0:b0:c0:d0:e0:f0", "a0-b0-c0-d0-e0-f0"}));
}

TEST(MacToString, lower_case_with_colons) {
  EXPECT_EQ(kA0.to_string(), "a0:b0:c0:d0:e0:f0");
  EXPECT_EQ((Mac{{0x02, 0x00, 0x0a, 0xff, 0x10, 0x01}}).to_string(), "02:00:0a:ff:10:01");
}

TEST(MacToString, parses_back_to_the_same_address) {
  auto mac = parse_mac("AA-0B-cc-0D-Ee-0F");
  ASSERT_TRUE(succeeded(mac));
  EXPECT_EQ(mac->to_string(), "aa:0b:cc:0d:ee:0f");
  auto again = parse_mac(mac->to_string());
  ASSERT_TRUE(succeeded(again));
  EXPECT_EQ(*again, *mac);
}

TEST(MacBits, locally_administered_is_bit_0x02_of_the_first_byte) {
  EXPECT_TRUE((Mac{{0x02, 0, 0, 0, 0, 1}}).is_locally_administered());
  EXPECT_TRUE((Mac{{0xfe, 0, 0, 0, 0, 1}}).is_locally_administered());
  EXPECT_FALSE(kA0.is_locally_administered());
  EXPECT_FALSE((Mac{{0x00, 0x02, 0x02, 0x02, 0x02, 0x02}}).is_locally_administered());
}

TEST(MacBits, multicast_is_bit_0x01_of_the_first_byte) {
  EXPECT_TRUE((Mac{{0x01, 0, 0, 0, 0, 0}}).is_multicast());
  EXPECT_FALSE((Mac{{0x02, 0x01, 0x01, 0x01, 0x01, 0x01}}).is_multicast());
}

TEST(MacBits, zero_only_when_every_byte_is_zero) {
  EXPECT_TRUE(Mac{}.is_zero());
  EXPECT_FALSE((Mac{{0, 0, 0, 0, 0, 1}}).is_zero());
}

TEST(StableMac, same_machine_and_name_give_the_same_address) {
  EXPECT_EQ(stable_mac(kMachine, "vp0"), stable_mac(kMachine, "vp0"));
}

TEST(StableMac, known_input_keeps_its_address_across_releases) {
  // FNV-1a of "vpd-endpoint-mac" + machine id + "/" + name, low byte first, with the
  // local bit set and the multicast bit cleared. A change here renames every host's MACs.
  EXPECT_EQ(stable_mac(kMachine, "vp0").to_string(), "7a:6e:cc:a3:99:07");
  EXPECT_EQ(stable_mac(kMachine, "vp1").to_string(), "2e:70:cc:a3:99:08");
}

TEST(StableMac, different_names_give_different_addresses) {
  EXPECT_NE(stable_mac(kMachine, "vp0"), stable_mac(kMachine, "vp1"));
  EXPECT_NE(stable_mac(kMachine, "vp1"), stable_mac(kMachine, "vp10"));
}

TEST(StableMac, different_machines_give_different_addresses) {
  EXPECT_NE(stable_mac(kMachine, "vp0"), stable_mac("fedcba9876543210fedcba9876543210", "vp0"));
}

TEST(StableMac, machine_and_name_boundary_matters) {
  EXPECT_NE(stable_mac("ab", "c"), stable_mac("a", "bc"));
}

TEST(StableMac, is_locally_administered_unicast_and_not_zero) {
  for (const char* machine : {"", "x", kMachine}) {
    for (const char* name : {"", "vp0", "vp1", "vp2", "eth7", "a-very-long-nm"}) {
      const Mac mac = stable_mac(machine, name);
      EXPECT_TRUE(mac.is_locally_administered()) << machine << "/" << name;
      EXPECT_FALSE(mac.is_multicast()) << machine << "/" << name;
      EXPECT_FALSE(mac.is_zero()) << machine << "/" << name;
      EXPECT_TRUE(succeeded(parse_mac(mac.to_string()))) << machine << "/" << name;
    }
  }
}

}  // namespace
}  // namespace vp::net
