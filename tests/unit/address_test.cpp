#include "net/address.hpp"

#include <sys/socket.h>

#include <gtest/gtest.h>

#include "unit_expect.hpp"

namespace vp::net {
namespace {

using unit::fails_with;
using unit::succeeded;

TEST(ParseAddress, ipv4_with_prefix) {
  auto a = parse_address("192.168.1.1/24");
  ASSERT_TRUE(succeeded(a));
  EXPECT_EQ(a->address.family, AF_INET);
  EXPECT_EQ(a->address.bytes[0], 192);
  EXPECT_EQ(a->address.bytes[1], 168);
  EXPECT_EQ(a->address.bytes[2], 1);
  EXPECT_EQ(a->address.bytes[3], 1);
  EXPECT_EQ(a->address.bytes[4], 0);  // the rest stays zero, so == compares only the address
  EXPECT_EQ(a->address.prefix, 24);
  EXPECT_FALSE(a->prefix_defaulted);
  EXPECT_EQ(a->address.to_string(), "192.168.1.1/24");
}

TEST(ParseAddress, ipv6_with_prefix) {
  auto a = parse_address("fd00::1/64");
  ASSERT_TRUE(succeeded(a));
  EXPECT_EQ(a->address.family, AF_INET6);
  EXPECT_EQ(a->address.bytes[0], 0xfd);
  EXPECT_EQ(a->address.bytes[15], 1);
  EXPECT_EQ(a->address.prefix, 64);
  EXPECT_FALSE(a->prefix_defaulted);
  EXPECT_EQ(a->address.to_string(), "fd00::1/64");
}

TEST(ParseAddress, ipv6_is_printed_canonically) {
  auto a = parse_address("fd00:0::1/64");
  ASSERT_TRUE(succeeded(a));
  EXPECT_EQ(a->address.to_string(), "fd00::1/64");
  auto b = parse_address("FD00:0000:0000:0000:0000:0000:0000:00AB/48");
  ASSERT_TRUE(succeeded(b));
  EXPECT_EQ(b->address.to_string(), "fd00::ab/48");
}

TEST(ParseAddress, same_address_written_two_ways_is_equal) {
  auto a = parse_address("fd00:0::1/64");
  auto b = parse_address("fd00::1/64");
  ASSERT_TRUE(succeeded(a));
  ASSERT_TRUE(succeeded(b));
  EXPECT_EQ(a->address, b->address);
}

TEST(ParseAddress, to_string_parses_back_to_the_same_address) {
  for (const char* text : {"10.1.2.3/8", "192.0.2.1/32", "2001:db8::5/128", "fe80::1/10"}) {
    auto a = parse_address(text);
    ASSERT_TRUE(succeeded(a)) << text;
    EXPECT_EQ(a->address.to_string(), text);
    auto b = parse_address(a->address.to_string());
    ASSERT_TRUE(succeeded(b)) << text;
    EXPECT_EQ(b->address, a->address) << text;
  }
}

TEST(ParseAddress, prefix_limits_are_accepted) {
  for (const char* text : {"10.0.0.1/1", "10.0.0.1/32", "fd00::1/1", "fd00::1/128"}) {
    EXPECT_TRUE(succeeded(parse_address(text))) << text;
  }
}

TEST(ParseAddress, ipv4_class_a_defaults_to_8) {
  auto a = parse_address("10.1.2.3");
  ASSERT_TRUE(succeeded(a));
  EXPECT_EQ(a->address.prefix, 8);
  EXPECT_TRUE(a->prefix_defaulted);
  EXPECT_EQ(a->address.to_string(), "10.1.2.3/8");
}

TEST(ParseAddress, ipv4_class_b_defaults_to_16) {
  auto a = parse_address("172.16.0.1");
  ASSERT_TRUE(succeeded(a));
  EXPECT_EQ(a->address.prefix, 16);
  EXPECT_TRUE(a->prefix_defaulted);
  EXPECT_EQ(a->address.to_string(), "172.16.0.1/16");
}

TEST(ParseAddress, ipv4_class_c_defaults_to_24) {
  auto a = parse_address("192.168.1.1");
  ASSERT_TRUE(succeeded(a));
  EXPECT_EQ(a->address.prefix, 24);
  EXPECT_TRUE(a->prefix_defaulted);
  EXPECT_EQ(a->address.to_string(), "192.168.1.1/24");
}

TEST(ParseAddress, classful_boundaries) {
  auto last_a = parse_address("126.255.255.254");
  auto first_b = parse_address("128.0.0.1");
  auto last_b = parse_address("191.255.0.1");
  auto first_c = parse_address("192.0.0.1");
  auto last_c = parse_address("223.255.255.1");
  ASSERT_TRUE(last_a && first_b && last_b && first_c && last_c);
  EXPECT_EQ(last_a->address.prefix, 8);
  EXPECT_EQ(first_b->address.prefix, 16);
  EXPECT_EQ(last_b->address.prefix, 16);
  EXPECT_EQ(first_c->address.prefix, 24);
  EXPECT_EQ(last_c->address.prefix, 24);
}

TEST(ParseAddress, ipv6_without_prefix_defaults_to_64) {
  auto a = parse_address("fd00::1");
  ASSERT_TRUE(succeeded(a));
  EXPECT_EQ(a->address.prefix, 64);
  EXPECT_TRUE(a->prefix_defaulted);
  EXPECT_EQ(a->address.to_string(), "fd00::1/64");
}

TEST(ParseAddress, prefix_zero_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/0"), "invalid-address",
                         {"address=10.0.0.1/0", "from 1 to 32"}));
  EXPECT_TRUE(fails_with(parse_address("fd00::1/0"), "invalid-address", {"from 1 to 128"}));
}

TEST(ParseAddress, ipv4_prefix_33_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/33"), "invalid-address", {"from 1 to 32"}));
}

TEST(ParseAddress, ipv6_prefix_129_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("fd00::1/129"), "invalid-address", {"from 1 to 128"}));
}

TEST(ParseAddress, ipv4_prefix_over_32_but_valid_for_ipv6_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/64"), "invalid-address", {"from 1 to 32"}));
}

TEST(ParseAddress, non_numeric_prefix_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/x"), "invalid-address", {"prefix length"}));
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/24x"), "invalid-address", {"prefix length"}));
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/-8"), "invalid-address", {"prefix length"}));
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/+8"), "invalid-address", {"prefix length"}));
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/ 8"), "invalid-address", {"prefix length"}));
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/24/8"), "invalid-address", {"prefix length"}));
}

TEST(ParseAddress, empty_prefix_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("10.0.0.1/"), "invalid-address", {"prefix length"}));
  EXPECT_TRUE(fails_with(parse_address("fd00::1/"), "invalid-address", {"prefix length"}));
}

TEST(ParseAddress, ipv4_multicast_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("224.0.0.1/4"), "invalid-address", {"unicast"}));
  EXPECT_TRUE(fails_with(parse_address("239.1.1.1"), "invalid-address", {"unicast"}));
}

TEST(ParseAddress, ipv4_reserved_and_broadcast_are_refused) {
  EXPECT_TRUE(fails_with(parse_address("240.0.0.1/24"), "invalid-address", {"unicast"}));
  EXPECT_TRUE(fails_with(parse_address("255.255.255.255/32"), "invalid-address", {"unicast"}));
}

TEST(ParseAddress, ipv6_multicast_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("ff02::1/64"), "invalid-address", {"multicast"}));
}

TEST(ParseAddress, ipv4_unspecified_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("0.0.0.0"), "invalid-address", {"unicast"}));
  EXPECT_TRUE(fails_with(parse_address("0.1.2.3/8"), "invalid-address", {"unicast"}));
}

TEST(ParseAddress, ipv4_loopback_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("127.0.0.1/8"), "invalid-address", {"unicast"}));
  EXPECT_TRUE(fails_with(parse_address("127.1.2.3"), "invalid-address", {"unicast"}));
}

TEST(ParseAddress, ipv6_unspecified_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("::"), "invalid-address", {"unspecified"}));
  EXPECT_TRUE(fails_with(parse_address("::/64"), "invalid-address", {"unspecified"}));
}

// 127.x is refused because no ordinary interface may hold it; Linux refuses ::1 on a
// non-loopback device the same way (ipv6_add_addr: EADDRNOTAVAIL), so the parser should
// catch it before netlink does.
TEST(ParseAddress, ipv6_loopback_is_refused) {
  EXPECT_TRUE(fails_with(parse_address("::1/128"), "invalid-address"));
}

TEST(ParseAddress, garbage_is_refused) {
  for (const char* text : {"", "hello", "10.0.0", "10.0.0.256", "10.0.0.1.2", " 10.0.0.1",
                           "10.0.0.1 ", "fd00:::1", "fd00::g", "/24", "br0"}) {
    EXPECT_TRUE(fails_with(parse_address(text), "invalid-address",
                           {"neither an IPv4 nor an IPv6", "192.168.1.1/24"}))
        << '"' << text << '"';
  }
}

TEST(ParseAddress, error_sentence_quotes_the_input) {
  EXPECT_TRUE(fails_with(parse_address("banana/7"), "invalid-address", {"address=banana/7 "}));
}

TEST(IfAddress, ipv4_sorts_before_ipv6_and_by_bytes) {
  auto v4a = parse_address("10.0.0.1/8");
  auto v4b = parse_address("10.0.0.2/8");
  auto v6 = parse_address("::2/64");
  ASSERT_TRUE(v4a && v4b && v6);
  EXPECT_LT(v4a->address, v4b->address);
  EXPECT_LT(v4b->address, v6->address);
}

}  // namespace
}  // namespace vp::net
