#include "net/ifname.hpp"

#include <gtest/gtest.h>

#include <string>

#include "unit_expect.hpp"

namespace vp::net {
namespace {

using unit::fails_with;
using unit::succeeded;

TEST(ValidateIfname, ordinary_name_is_accepted) {
  EXPECT_TRUE(succeeded(validate_ifname("vp0")));
  EXPECT_TRUE(succeeded(validate_ifname("br-lan.10")));
  EXPECT_TRUE(succeeded(validate_ifname("a")));
}

TEST(ValidateIfname, fifteen_bytes_are_accepted) {
  EXPECT_TRUE(succeeded(validate_ifname(std::string(15, 'x'))));
  EXPECT_TRUE(succeeded(validate_ifname("vp1234567890123")));
}

TEST(ValidateIfname, sixteen_bytes_are_name_too_long) {
  const std::string name(16, 'x');
  EXPECT_TRUE(fails_with(validate_ifname(name), "name-too-long", {name, "16 bytes", "15"}));
}

TEST(ValidateIfname, empty_name_is_invalid) {
  EXPECT_TRUE(fails_with(validate_ifname(""), "invalid-name", {"empty"}));
}

TEST(ValidateIfname, dot_is_invalid) {
  EXPECT_TRUE(fails_with(validate_ifname("."), "invalid-name", {"'.'"}));
}

TEST(ValidateIfname, dot_dot_is_invalid) {
  EXPECT_TRUE(fails_with(validate_ifname(".."), "invalid-name", {"'..'"}));
}

TEST(ValidateIfname, dots_inside_a_name_are_accepted) {
  EXPECT_TRUE(succeeded(validate_ifname("...")));
  EXPECT_TRUE(succeeded(validate_ifname("eth0.100")));
}

TEST(ValidateIfname, slash_is_invalid) {
  EXPECT_TRUE(fails_with(validate_ifname("vp/0"), "invalid-name", {"'vp/0'", "'/'"}));
}

TEST(ValidateIfname, colon_is_invalid) {
  EXPECT_TRUE(fails_with(validate_ifname("vp0:1"), "invalid-name", {"'vp0:1'"}));
}

TEST(ValidateIfname, space_is_invalid) {
  EXPECT_TRUE(fails_with(validate_ifname("vp 0"), "invalid-name", {"white space"}));
}

TEST(ValidateIfname, tab_is_invalid) {
  EXPECT_TRUE(fails_with(validate_ifname("vp\t0"), "invalid-name"));
}

TEST(ValidateIfname, newline_and_other_white_space_are_invalid) {
  for (const char* name : {"vp\n0", "vp\r0", "vp\v0", "vp\f0", " vp0", "vp0 "}) {
    EXPECT_TRUE(fails_with(validate_ifname(name), "invalid-name")) << static_cast<int>(name[2]);
  }
}

TEST(ValidateIfname, control_characters_are_invalid) {
  for (char c : {'\x01', '\x1b', '\x1f', '\x7f'}) {
    const std::string name = std::string("vp") + c;
    EXPECT_TRUE(fails_with(validate_ifname(name), "invalid-name", {"control character"}))
        << static_cast<int>(c);
  }
}

TEST(ValidateIfname, embedded_nul_is_invalid) {
  EXPECT_TRUE(fails_with(validate_ifname(std::string("vp\0x", 4)), "invalid-name"));
}

TEST(ValidateIfname, length_is_checked_before_characters) {
  EXPECT_TRUE(fails_with(validate_ifname("a/b/c/d/e/f/g/h/"), "name-too-long"));
}

TEST(ValidatePrefix, default_prefix_vp_is_accepted) {
  EXPECT_TRUE(succeeded(validate_prefix("vp")));
}

TEST(ValidatePrefix, fourteen_bytes_are_accepted) {
  EXPECT_TRUE(succeeded(validate_prefix(std::string(14, 'p'))));
}

TEST(ValidatePrefix, fifteen_bytes_leave_no_room_for_an_index) {
  const std::string prefix(15, 'p');
  EXPECT_TRUE(fails_with(validate_prefix(prefix), "name-too-long", {prefix, "15 bytes", "14"}));
}

TEST(ValidatePrefix, empty_prefix_is_invalid) {
  EXPECT_TRUE(fails_with(validate_prefix(""), "invalid-name", {"name="}));
}

TEST(ValidatePrefix, dot_and_dot_dot_are_invalid) {
  EXPECT_TRUE(fails_with(validate_prefix("."), "invalid-name", {"prefix"}));
  EXPECT_TRUE(fails_with(validate_prefix(".."), "invalid-name", {"prefix"}));
}

TEST(ValidatePrefix, forbidden_characters_are_invalid) {
  for (const char* prefix : {"v/p", "v:p", "v p", "v\tp", "v\x01p", "v\x7fp"}) {
    EXPECT_TRUE(fails_with(validate_prefix(prefix), "invalid-name", {"name prefix"})) << prefix;
  }
}

}  // namespace
}  // namespace vp::net
