#include "control/grammar.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "net/offloads.hpp"
#include "unit_expect.hpp"

namespace vp::control {
namespace {

using unit::contains;
using unit::fails_with;
using unit::succeeded;

Result<Change> parse(std::initializer_list<const char*> tokens) {
  const std::vector<std::string> v = unit::words(tokens);
  return parse_change(v);
}

net::IfAddress address(const char* text) {
  auto a = net::parse_address(text);
  EXPECT_TRUE(succeeded(a)) << text;
  return a ? a->address : net::IfAddress{};
}

net::Mac mac(const char* text) {
  auto m = net::parse_mac(text);
  EXPECT_TRUE(succeeded(m)) << text;
  return m ? *m : net::Mac{};
}

// A valid endpoint to apply changes to.
EndpointConfig base() {
  EndpointConfig c;
  c.name = "vp0";
  c.mac = mac("02:00:00:00:00:01");
  return c;
}

Result<EndpointConfig> apply(const EndpointConfig& config,
                             std::initializer_list<const char*> tokens) {
  auto change = parse(tokens);
  if (!change) return std::unexpected(change.error());
  return apply_change(config, *change);
}

struct ToggleRow {
  const char* name;
  uint32_t bit;
};

constexpr ToggleRow kToggleRows[] = {
    {"rxcsum", net::toggle::kRxcsum},     {"txcsum", net::toggle::kTxcsum},
    {"rxcsum6", net::toggle::kRxcsum6},   {"txcsum6", net::toggle::kTxcsum6},
    {"tcp4csum", net::toggle::kTcp4csum}, {"udp4csum", net::toggle::kUdp4csum},
    {"tcp6csum", net::toggle::kTcp6csum}, {"udp6csum", net::toggle::kUdp6csum},
    {"tso4", net::toggle::kTso4},         {"tso6", net::toggle::kTso6},
};

// ---- is_keyword / split_commas -------------------------------------------------------

TEST(IsKeyword, verbs_keys_commands_and_toggles_are_keywords) {
  for (const char* word :
       {"create",  "up",        "down",      "destroy",  "peer",      "bind",
        "mac",     "name",      "peerfeats", "priority", "transport", "bridge",
        "address", "mtu",       "legacy",    "list",     "version",   "help",
        "stats",   "qemu-args", "show",      "rxcsum",   "tso6",      "udp6csum"}) {
    EXPECT_TRUE(is_keyword(word)) << word;
  }
}

TEST(IsKeyword, endpoint_names_and_forms_with_signs_are_not_keywords) {
  for (const char* word : {"vp0", "br0", "", "peer=", "-tso4", "Up", "creates", "tso"}) {
    EXPECT_FALSE(is_keyword(word)) << word;
  }
}

TEST(SplitCommas, splits_at_every_comma) {
  EXPECT_EQ(split_commas("peer=/a,bind=/b,mac=02:00:00:00:00:01"),
            (std::vector<std::string>{"peer=/a", "bind=/b", "mac=02:00:00:00:00:01"}));
}

TEST(SplitCommas, empty_parts_are_dropped) {
  EXPECT_EQ(split_commas(",a,,b,"), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(split_commas("").empty());
  EXPECT_TRUE(split_commas(",,,").empty());
}

TEST(SplitCommas, text_without_commas_is_one_part) {
  EXPECT_EQ(split_commas("up"), (std::vector<std::string>{"up"}));
}

// ---- parse_change: verbs --------------------------------------------------------------

TEST(ParseChange, no_tokens_set_nothing) {
  auto c = parse({});
  ASSERT_TRUE(succeeded(c));
  EXPECT_TRUE(c->sets_nothing());
  EXPECT_FALSE(c->create);
  EXPECT_FALSE(c->destroy);
  EXPECT_FALSE(c->up.has_value());
  EXPECT_TRUE(c->warnings.empty());
}

TEST(ParseChange, create_verb) {
  auto c = parse({"create"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_TRUE(c->create);
  EXPECT_FALSE(c->destroy);
  EXPECT_TRUE(c->sets_nothing());
}

TEST(ParseChange, up_verb) {
  auto c = parse({"up"});
  ASSERT_TRUE(succeeded(c));
  ASSERT_TRUE(c->up.has_value());
  EXPECT_TRUE(*c->up);
}

TEST(ParseChange, down_verb) {
  auto c = parse({"down"});
  ASSERT_TRUE(succeeded(c));
  ASSERT_TRUE(c->up.has_value());
  EXPECT_FALSE(*c->up);
}

TEST(ParseChange, up_twice_is_accepted) {
  auto c = parse({"up", "up"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->up, true);
}

TEST(ParseChange, destroy_alone) {
  auto c = parse({"destroy"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_TRUE(c->destroy);
}

TEST(ParseChange, create_with_settings) {
  auto c = parse({"create", "mtu=9000", "up"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_TRUE(c->create);
  EXPECT_EQ(c->mtu, 9000u);
  EXPECT_EQ(c->up, true);
}

// ---- parse_change: every key ------------------------------------------------------------

TEST(ParseChange, peer_path) {
  auto c = parse({"peer=/run/qemu/g1/p2p.sock"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->peer, "/run/qemu/g1/p2p.sock");
  EXPECT_FALSE(c->bind.has_value());
  EXPECT_FALSE(c->sets_nothing());
}

TEST(ParseChange, bind_path) {
  auto c = parse({"bind=/run/vpd/vp0.sock"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->bind, "/run/vpd/vp0.sock");
  EXPECT_FALSE(c->peer.has_value());
}

TEST(ParseChange, path_value_may_contain_equals_sign) {
  auto c = parse({"bind=/run/a=b.sock"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->bind, "/run/a=b.sock");
}

TEST(ParseChange, mac_locally_administered_without_warning) {
  auto c = parse({"mac=02:00:00:00:00:05"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->mac, mac("02:00:00:00:00:05"));
  EXPECT_TRUE(c->warnings.empty());
}

TEST(ParseChange, mac_without_locally_administered_bit_warns) {
  auto c = parse({"mac=a0b0c0d0e0f0"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->mac, mac("a0:b0:c0:d0:e0:f0"));
  ASSERT_EQ(c->warnings.size(), 1u);
  EXPECT_TRUE(contains(c->warnings[0], "mac=a0b0c0d0e0f0"));
  EXPECT_TRUE(contains(c->warnings[0], "locally administered"));
}

TEST(ParseChange, name_prefix) {
  auto c = parse({"name=gw"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->prefix, "gw");
  EXPECT_TRUE(c->sets_nothing());  // name= picks a name, it is not a setting
}

TEST(ParseChange, peerfeats_hex) {
  auto c = parse({"peerfeats=0x19c3"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_TRUE(c->peerfeats_given);
  EXPECT_EQ(c->peerfeats, 0x19c3u);
}

TEST(ParseChange, peerfeats_decimal) {
  auto c = parse({"peerfeats=6595"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->peerfeats, 0x19c3u);
}

TEST(ParseChange, peerfeats_zero) {
  auto c = parse({"peerfeats=0"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_TRUE(c->peerfeats_given);
  EXPECT_EQ(c->peerfeats, 0u);
}

TEST(ParseChange, priority_in_range) {
  auto c = parse({"priority=10"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->priority, 10);
  auto lo = parse({"priority=0"});
  auto hi = parse({"priority=99"});
  ASSERT_TRUE(succeeded(lo));
  ASSERT_TRUE(succeeded(hi));
  EXPECT_EQ(lo->priority, 0);
  EXPECT_EQ(hi->priority, 99);
}

TEST(ParseChange, every_transport_name) {
  auto v = parse({"transport=vhost-user"});
  auto s = parse({"transport=stream"});
  auto t = parse({"transport=tap"});
  ASSERT_TRUE(succeeded(v));
  ASSERT_TRUE(succeeded(s));
  ASSERT_TRUE(succeeded(t));
  EXPECT_EQ(v->transport, Transport::kVhostUser);
  EXPECT_EQ(s->transport, Transport::kStream);
  EXPECT_EQ(t->transport, Transport::kTap);
}

TEST(ParseChange, bridge_name) {
  auto c = parse({"bridge=br0"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->bridge, "br0");
}

TEST(ParseChange, address_with_prefix_has_no_warning) {
  auto c = parse({"address=192.168.1.1/24"});
  ASSERT_TRUE(succeeded(c));
  ASSERT_EQ(c->add_addresses.size(), 1u);
  EXPECT_EQ(c->add_addresses[0], address("192.168.1.1/24"));
  EXPECT_TRUE(c->warnings.empty());
}

TEST(ParseChange, address_without_prefix_warns_with_the_default) {
  auto c = parse({"address=10.1.2.3"});
  ASSERT_TRUE(succeeded(c));
  ASSERT_EQ(c->add_addresses.size(), 1u);
  EXPECT_EQ(c->add_addresses[0], address("10.1.2.3/8"));
  ASSERT_EQ(c->warnings.size(), 1u);
  EXPECT_TRUE(contains(c->warnings[0], "address=10.1.2.3"));
  EXPECT_TRUE(contains(c->warnings[0], "10.1.2.3/8"));
}

TEST(ParseChange, mtu_in_range) {
  auto c = parse({"mtu=9000"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->mtu, 9000u);
  auto lo = parse({"mtu=68"});
  auto hi = parse({"mtu=65521"});
  ASSERT_TRUE(succeeded(lo));
  ASSERT_TRUE(succeeded(hi));
  EXPECT_EQ(lo->mtu, 68u);
  EXPECT_EQ(hi->mtu, 65521u);
}

TEST(ParseChange, legacy_flag) {
  auto c = parse({"legacy"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->legacy, true);
  EXPECT_FALSE(c->sets_nothing());
}

// ---- parse_change: removals --------------------------------------------------------------

TEST(ParseChange, minus_peer_clears_peer) {
  auto c = parse({"-peer"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->peer, "");
  EXPECT_FALSE(c->sets_nothing());
}

TEST(ParseChange, minus_bind_clears_bind) {
  auto c = parse({"-bind"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->bind, "");
}

TEST(ParseChange, minus_peerfeats_returns_to_default) {
  auto c = parse({"peerfeats=0x3", "-peerfeats"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_TRUE(c->peerfeats_given);
  EXPECT_FALSE(c->peerfeats.has_value());
}

TEST(ParseChange, minus_bridge_leaves_the_bridge) {
  auto c = parse({"-bridge"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->bridge, "");
}

TEST(ParseChange, minus_legacy) {
  auto c = parse({"-legacy"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->legacy, false);
}

TEST(ParseChange, legacy_then_minus_legacy_last_wins) {
  auto c = parse({"legacy", "-legacy"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->legacy, false);
  auto d = parse({"-legacy", "legacy"});
  ASSERT_TRUE(succeeded(d));
  EXPECT_EQ(d->legacy, true);
}

TEST(ParseChange, minus_address_with_cidr) {
  auto c = parse({"-address=fd00::1/64"});
  ASSERT_TRUE(succeeded(c));
  ASSERT_EQ(c->del_addresses.size(), 1u);
  EXPECT_EQ(c->del_addresses[0], address("fd00::1/64"));
  EXPECT_TRUE(c->add_addresses.empty());
}

TEST(ParseChange, minus_address_with_bad_cidr) {
  EXPECT_TRUE(fails_with(parse({"-address=10.0.0.1/40"}), "invalid-address"));
}

TEST(ParseChange, minus_address_without_value_is_unknown) {
  EXPECT_TRUE(fails_with(parse({"-address"}), "unknown-key", {"'-address'"}));
}

TEST(ParseChange, minus_of_a_key_that_cannot_be_removed_is_unknown) {
  EXPECT_TRUE(fails_with(parse({"-mtu"}), "unknown-key", {"'-mtu'", "-peer -bind"}));
  EXPECT_TRUE(fails_with(parse({"-mac"}), "unknown-key", {"'-mac'"}));
  EXPECT_TRUE(fails_with(parse({"-up"}), "unknown-key", {"'-up'"}));
}

TEST(ParseChange, minus_peer_with_value_is_unknown) {
  EXPECT_TRUE(fails_with(parse({"-peer=/a"}), "unknown-key", {"'-peer=/a'"}));
}

// ---- parse_change: bare addresses ------------------------------------------------------

TEST(ParseChange, bare_address_with_prefix) {
  auto c = parse({"192.168.1.1/24"});
  ASSERT_TRUE(succeeded(c));
  ASSERT_EQ(c->add_addresses.size(), 1u);
  EXPECT_EQ(c->add_addresses[0], address("192.168.1.1/24"));
  EXPECT_TRUE(c->warnings.empty());
}

TEST(ParseChange, bare_address_without_prefix_warns) {
  auto c = parse({"192.168.1.1"});
  ASSERT_TRUE(succeeded(c));
  ASSERT_EQ(c->add_addresses.size(), 1u);
  EXPECT_EQ(c->add_addresses[0], address("192.168.1.1/24"));
  ASSERT_EQ(c->warnings.size(), 1u);
  EXPECT_TRUE(contains(c->warnings[0], "192.168.1.1"));
  EXPECT_TRUE(contains(c->warnings[0], "192.168.1.1/24"));
}

TEST(ParseChange, bare_ipv6_address_without_prefix_warns_with_64) {
  auto c = parse({"fd00::7"});
  ASSERT_TRUE(succeeded(c));
  ASSERT_EQ(c->add_addresses.size(), 1u);
  EXPECT_EQ(c->add_addresses[0], address("fd00::7/64"));
  ASSERT_EQ(c->warnings.size(), 1u);
  EXPECT_TRUE(contains(c->warnings[0], "fd00::7/64"));
}

TEST(ParseChange, several_addresses_keep_their_order) {
  auto c = parse({"address=10.0.0.1/24", "fd00::1/64", "address=192.168.7.1/24"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->add_addresses,
            (std::vector<net::IfAddress>{address("10.0.0.1/24"), address("fd00::1/64"),
                                         address("192.168.7.1/24")}));
}

// ---- parse_change: toggles ---------------------------------------------------------------

TEST(ParseChange, every_toggle_on) {
  for (const auto& row : kToggleRows) {
    auto c = parse({row.name});
    ASSERT_TRUE(succeeded(c)) << row.name;
    EXPECT_EQ(c->toggles_on, row.bit) << row.name;
    EXPECT_EQ(c->toggles_off, 0u) << row.name;
    EXPECT_FALSE(c->sets_nothing()) << row.name;
  }
}

TEST(ParseChange, every_toggle_off) {
  for (const auto& row : kToggleRows) {
    const std::string token = std::string("-") + row.name;
    const std::vector<std::string> v{token};
    auto c = parse_change(v);
    ASSERT_TRUE(succeeded(c)) << token;
    EXPECT_EQ(c->toggles_off, row.bit) << token;
    EXPECT_EQ(c->toggles_on, 0u) << token;
  }
}

TEST(ParseChange, toggle_last_mention_wins) {
  for (const auto& row : kToggleRows) {
    const std::string on = row.name;
    const std::string off = "-" + on;
    const std::vector<std::string> on_then_off{on, off};
    const std::vector<std::string> off_then_on{off, on};
    auto a = parse_change(on_then_off);
    auto b = parse_change(off_then_on);
    ASSERT_TRUE(succeeded(a)) << on;
    ASSERT_TRUE(succeeded(b)) << on;
    EXPECT_EQ(a->toggles_on, 0u) << on;
    EXPECT_EQ(a->toggles_off, row.bit) << on;
    EXPECT_EQ(b->toggles_on, row.bit) << on;
    EXPECT_EQ(b->toggles_off, 0u) << on;
  }
}

TEST(ParseChange, toggles_combine) {
  auto c = parse({"-rxcsum", "-txcsum", "-rxcsum6", "-txcsum6", "tso4"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->toggles_off, net::toggle::kRxcsum | net::toggle::kTxcsum | net::toggle::kRxcsum6 |
                                net::toggle::kTxcsum6);
  EXPECT_EQ(c->toggles_on, net::toggle::kTso4);
}

TEST(ParseChange, toggle_with_a_value_is_unknown) {
  EXPECT_TRUE(fails_with(parse({"tso4=on"}), "unknown-key", {"'tso4=on'"}));
}

// ---- parse_change: errors ----------------------------------------------------------------

TEST(ParseChange, unknown_key_names_the_token) {
  EXPECT_TRUE(
      fails_with(parse({"mtu=1500", "colour=red"}), "unknown-key", {"'colour=red'", "peer="}));
}

TEST(ParseChange, unknown_bare_word_names_the_token) {
  EXPECT_TRUE(fails_with(parse({"frobnicate"}), "unknown-key", {"'frobnicate'"}));
}

TEST(ParseChange, unknown_negated_word_names_the_token) {
  EXPECT_TRUE(fails_with(parse({"-frobnicate"}), "unknown-key", {"'-frobnicate'"}));
}

TEST(ParseChange, key_without_name_is_unknown) {
  EXPECT_TRUE(fails_with(parse({"=5"}), "unknown-key", {"'=5'"}));
}

TEST(ParseChange, legacy_with_a_value_is_unknown) {
  EXPECT_TRUE(fails_with(parse({"legacy=1"}), "unknown-key", {"'legacy=1'"}));
}

TEST(ParseChange, verb_with_a_value_is_unknown) {
  EXPECT_TRUE(fails_with(parse({"up=1"}), "unknown-key", {"'up=1'"}));
}

TEST(ParseChange, up_and_down_together_conflict) {
  EXPECT_TRUE(fails_with(parse({"up", "down"}), "conflicting-settings", {"up and down"}));
  EXPECT_TRUE(fails_with(parse({"down", "mtu=1500", "up"}), "conflicting-settings"));
}

TEST(ParseChange, destroy_with_a_setting_conflicts) {
  EXPECT_TRUE(fails_with(parse({"destroy", "mtu=1500"}), "conflicting-settings", {"destroy"}));
  EXPECT_TRUE(fails_with(parse({"bridge=br0", "destroy"}), "conflicting-settings", {"destroy"}));
}

TEST(ParseChange, destroy_with_create_conflicts) {
  EXPECT_TRUE(fails_with(parse({"create", "destroy"}), "conflicting-settings", {"destroy"}));
}

TEST(ParseChange, destroy_with_up_or_down_conflicts) {
  EXPECT_TRUE(fails_with(parse({"destroy", "up"}), "conflicting-settings"));
  EXPECT_TRUE(fails_with(parse({"destroy", "down"}), "conflicting-settings"));
}

TEST(ParseChange, destroy_with_a_toggle_or_removal_conflicts) {
  EXPECT_TRUE(fails_with(parse({"destroy", "-tso4"}), "conflicting-settings"));
  EXPECT_TRUE(fails_with(parse({"destroy", "-bridge"}), "conflicting-settings"));
  EXPECT_TRUE(fails_with(parse({"destroy", "10.0.0.1/8"}), "conflicting-settings"));
}

TEST(ParseChange, empty_peer_value) {
  EXPECT_TRUE(fails_with(parse({"peer="}), "bad-value", {"peer= needs a value", "-peer"}));
}

TEST(ParseChange, empty_bind_value) {
  EXPECT_TRUE(fails_with(parse({"bind="}), "bad-value", {"bind= needs a value", "-bind"}));
}

TEST(ParseChange, empty_bridge_value) {
  EXPECT_TRUE(fails_with(parse({"bridge="}), "bad-value", {"bridge= needs a value", "-bridge"}));
}

TEST(ParseChange, empty_numeric_and_transport_values) {
  EXPECT_TRUE(fails_with(parse({"mtu="}), "bad-value", {"mtu="}));
  EXPECT_TRUE(fails_with(parse({"priority="}), "bad-value", {"priority="}));
  EXPECT_TRUE(fails_with(parse({"transport="}), "bad-value", {"transport="}));
}

TEST(ParseChange, empty_values_with_their_own_codes) {
  EXPECT_TRUE(fails_with(parse({"mac="}), "invalid-mac"));
  EXPECT_TRUE(fails_with(parse({"name="}), "invalid-name"));
  EXPECT_TRUE(fails_with(parse({"peerfeats="}), "bad-peerfeats"));
  EXPECT_TRUE(fails_with(parse({"address="}), "invalid-address"));
}

TEST(ParseChange, relative_peer_path) {
  EXPECT_TRUE(
      fails_with(parse({"peer=run/p.sock"}), "bad-value", {"peer=run/p.sock", "absolute path"}));
}

TEST(ParseChange, relative_bind_path) {
  EXPECT_TRUE(
      fails_with(parse({"bind=./vp0.sock"}), "bad-value", {"bind=./vp0.sock", "absolute path"}));
}

TEST(ParseChange, path_of_107_bytes_is_accepted) {
  const std::string path = "/" + std::string(106, 'p');
  const std::vector<std::string> v{"bind=" + path};
  auto c = parse_change(v);
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->bind, path);
}

TEST(ParseChange, path_of_108_bytes_is_refused) {
  const std::string path = "/" + std::string(107, 'p');
  const std::vector<std::string> peer{"peer=" + path};
  const std::vector<std::string> bind{"bind=" + path};
  EXPECT_TRUE(fails_with(parse_change(peer), "bad-value", {"108 bytes", "shorter than 108"}));
  EXPECT_TRUE(fails_with(parse_change(bind), "bad-value", {"108 bytes"}));
}

TEST(ParseChange, mtu_below_68) {
  EXPECT_TRUE(fails_with(parse({"mtu=67"}), "bad-value", {"mtu=67", "68", "65521"}));
}

TEST(ParseChange, mtu_above_65521) {
  EXPECT_TRUE(fails_with(parse({"mtu=65522"}), "bad-value", {"mtu=65522"}));
  EXPECT_TRUE(fails_with(parse({"mtu=4294967296"}), "bad-value"));
}

TEST(ParseChange, mtu_not_a_number) {
  EXPECT_TRUE(fails_with(parse({"mtu=big"}), "bad-value", {"mtu=big", "whole number"}));
  EXPECT_TRUE(fails_with(parse({"mtu=1500x"}), "bad-value"));
  EXPECT_TRUE(fails_with(parse({"mtu=-1500"}), "bad-value"));
  EXPECT_TRUE(fails_with(parse({"mtu=1500.0"}), "bad-value"));
  EXPECT_TRUE(fails_with(parse({"mtu= 1500"}), "bad-value"));
}

TEST(ParseChange, priority_above_99) {
  EXPECT_TRUE(fails_with(parse({"priority=100"}), "bad-value", {"priority=100", "0 to 99"}));
}

TEST(ParseChange, priority_negative) {
  EXPECT_TRUE(fails_with(parse({"priority=-1"}), "bad-value", {"priority=-1"}));
}

TEST(ParseChange, priority_not_a_number) {
  EXPECT_TRUE(fails_with(parse({"priority=high"}), "bad-value", {"priority=high"}));
  EXPECT_TRUE(fails_with(parse({"priority=0x10"}), "bad-value"));
}

TEST(ParseChange, unknown_transport) {
  EXPECT_TRUE(fails_with(parse({"transport=vhost"}), "bad-value",
                         {"transport=vhost", "vhost-user, stream, tap"}));
  EXPECT_TRUE(fails_with(parse({"transport=Stream"}), "bad-value"));
}

TEST(ParseChange, invalid_mac) {
  EXPECT_TRUE(fails_with(parse({"mac=zz"}), "invalid-mac", {"mac=zz"}));
  EXPECT_TRUE(fails_with(parse({"mac=01:00:5e:00:00:01"}), "invalid-mac", {"multicast"}));
  EXPECT_TRUE(fails_with(parse({"mac=00:00:00:00:00:00"}), "invalid-mac", {"all-zero"}));
}

TEST(ParseChange, peerfeats_not_a_number) {
  EXPECT_TRUE(fails_with(parse({"peerfeats=lots"}), "bad-peerfeats", {"peerfeats=lots"}));
  EXPECT_TRUE(fails_with(parse({"peerfeats=0x"}), "bad-peerfeats"));
  EXPECT_TRUE(fails_with(parse({"peerfeats=0x19c3z"}), "bad-peerfeats"));
}

TEST(ParseChange, peerfeats_with_unknown_bit_names_it) {
  EXPECT_TRUE(fails_with(parse({"peerfeats=0x8000"}), "bad-peerfeats", {"bit 15"}));
  EXPECT_TRUE(fails_with(parse({"peerfeats=0x30"}), "bad-peerfeats", {"bits 4, 5"}));
}

TEST(ParseChange, bad_name_prefix) {
  EXPECT_TRUE(fails_with(parse({"name=vp/"}), "invalid-name"));
  EXPECT_TRUE(fails_with(parse({"name=abcdefghijklmno"}), "name-too-long"));
}

TEST(ParseChange, bad_bridge_name) {
  EXPECT_TRUE(fails_with(parse({"bridge=br:0"}), "invalid-name"));
  EXPECT_TRUE(fails_with(parse({"bridge=abcdefghijklmnop"}), "name-too-long"));
}

TEST(ParseChange, address_added_and_removed_together) {
  EXPECT_TRUE(fails_with(parse({"address=10.0.0.1/24", "-address=10.0.0.1/16"}),
                         "conflicting-settings", {"10.0.0.1/24", "both added and removed"}));
  EXPECT_TRUE(fails_with(parse({"-address=fd00::1/64", "fd00::1"}), "conflicting-settings"));
}

TEST(ParseChange, different_addresses_added_and_removed_are_fine) {
  auto c = parse({"address=10.0.0.2/24", "-address=10.0.0.1/24"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->add_addresses.size(), 1u);
  EXPECT_EQ(c->del_addresses.size(), 1u);
}

// ---- apply_change ------------------------------------------------------------------------

TEST(ApplyChange, nothing_changes_nothing) {
  auto c = apply(base(), {});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(*c, base());
}

TEST(ApplyChange, every_setting_is_applied) {
  auto c =
      apply(base(), {"peer=/run/p.sock", "bind=/run/b.sock", "mac=02:aa:bb:cc:dd:ee",
                     "peerfeats=0x19c3", "legacy", "priority=5", "mtu=9000", "bridge=br0", "up"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->name, "vp0");
  EXPECT_EQ(c->peer, "/run/p.sock");
  EXPECT_EQ(c->bind, "/run/b.sock");
  EXPECT_EQ(c->mac, mac("02:aa:bb:cc:dd:ee"));
  EXPECT_EQ(c->peerfeats, 0x19c3u);
  EXPECT_TRUE(c->legacy);
  EXPECT_EQ(c->vnet_hdr_len(), 10);
  EXPECT_EQ(c->priority, 5);
  EXPECT_EQ(c->mtu, 9000u);
  EXPECT_EQ(c->bridge, "br0");
  EXPECT_TRUE(c->up);
}

TEST(ApplyChange, removals_clear_settings) {
  EndpointConfig start = base();
  start.peer = "/run/p.sock";
  start.bind = "/run/b.sock";
  start.bridge = "br0";
  start.legacy = true;
  start.peerfeats = 0x19c3;
  auto c = apply(start, {"-peer", "-bind", "-bridge", "-legacy", "-peerfeats"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->peer, "");
  EXPECT_EQ(c->bind, "");
  EXPECT_EQ(c->bridge, "");
  EXPECT_FALSE(c->legacy);
  EXPECT_FALSE(c->peerfeats.has_value());
}

TEST(ApplyChange, down_after_up) {
  EndpointConfig start = base();
  start.up = true;
  auto c = apply(start, {"down"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_FALSE(c->up);
}

TEST(ApplyChange, new_prefix_replaces_the_address) {
  EndpointConfig start = base();
  start.addresses = {address("10.0.0.1/24")};
  auto c = apply(start, {"address=10.0.0.1/16"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->addresses, std::vector<net::IfAddress>{address("10.0.0.1/16")});
}

TEST(ApplyChange, removal_ignores_the_prefix) {
  EndpointConfig start = base();
  start.addresses = {address("10.0.0.1/24"), address("fd00::1/64")};
  auto c = apply(start, {"-address=10.0.0.1/8", "-address=fd00::1/128"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_TRUE(c->addresses.empty());
}

TEST(ApplyChange, removal_of_an_absent_address_is_harmless) {
  EndpointConfig start = base();
  start.addresses = {address("10.0.0.1/24")};
  auto c = apply(start, {"-address=10.0.0.2/24"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->addresses, std::vector<net::IfAddress>{address("10.0.0.1/24")});
}

TEST(ApplyChange, addresses_are_sorted_and_unique) {
  auto c = apply(base(), {"fd00::1/64", "192.168.1.1/24", "10.0.0.1/8", "address=10.0.0.1/8"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->addresses,
            (std::vector<net::IfAddress>{address("10.0.0.1/8"), address("192.168.1.1/24"),
                                         address("fd00::1/64")}));
}

TEST(ApplyChange, same_address_twice_in_one_change_keeps_the_last_prefix) {
  auto c = apply(base(), {"address=10.0.0.1/24", "address=10.0.0.1/16"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->addresses, std::vector<net::IfAddress>{address("10.0.0.1/16")});
}

TEST(ApplyChange, toggles_off_and_on) {
  auto off = apply(base(), {"-tso4", "-rxcsum"});
  ASSERT_TRUE(succeeded(off));
  EXPECT_EQ(off->toggles, net::toggle::kAll & ~(net::toggle::kTso4 | net::toggle::kRxcsum));
  auto on = apply(*off, {"tso4"});
  ASSERT_TRUE(succeeded(on));
  EXPECT_EQ(on->toggles, net::toggle::kAll & ~net::toggle::kRxcsum);
}

TEST(ApplyChange, toggles_change_the_offered_features) {
  auto c = apply(base(), {"-tso4", "-tso6"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->features() & (net::feature::kGuestTso4 | net::feature::kGuestTso6 |
                             net::feature::kHostTso4 | net::feature::kHostTso6),
            0u);
  EXPECT_NE(c->features() & net::feature::kGuestCsum, 0u);
}

TEST(ApplyChange, minus_peerfeats_resets_to_default) {
  EndpointConfig start = base();
  start.peerfeats = 0x3;
  auto c = apply(start, {"-peerfeats"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_FALSE(c->peerfeats.has_value());
  EXPECT_EQ(c->features(), net::effective_features(std::nullopt, net::toggle::kAll));
}

TEST(ApplyChange, stream_with_nonzero_peerfeats_is_refused) {
  EXPECT_TRUE(fails_with(apply(base(), {"transport=stream", "peerfeats=0x3"}), "bad-peerfeats",
                         {"vp0", "virtio-net header", "peerfeats=0"}));
}

TEST(ApplyChange, switching_to_stream_with_earlier_peerfeats_is_refused) {
  EndpointConfig start = base();
  start.peerfeats = 0x19c3;
  EXPECT_TRUE(
      fails_with(apply(start, {"transport=stream"}), "bad-peerfeats", {"virtio-net header"}));
}

TEST(ApplyChange, stream_with_peerfeats_zero_is_accepted) {
  auto c = apply(base(), {"transport=stream", "peerfeats=0", "bind=/run/s.sock"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->transport, Transport::kStream);
  EXPECT_EQ(c->peerfeats, 0u);
  EXPECT_EQ(c->features(), 0u);
}

TEST(ApplyChange, stream_without_peerfeats_is_accepted) {
  auto c = apply(base(), {"transport=stream"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->transport, Transport::kStream);
}

TEST(ApplyChange, tap_transport_with_peer_is_refused) {
  EXPECT_TRUE(fails_with(apply(base(), {"transport=tap", "peer=/run/p.sock"}),
                         "conflicting-settings", {"transport=tap", "peer="}));
}

TEST(ApplyChange, tap_transport_with_bind_is_refused) {
  EXPECT_TRUE(fails_with(apply(base(), {"transport=tap", "bind=/run/b.sock"}),
                         "conflicting-settings", {"transport=tap", "bind="}));
}

TEST(ApplyChange, tap_transport_without_sockets_is_accepted) {
  EndpointConfig start = base();
  start.bind = "/run/vpd/vp0.sock";
  auto c = apply(start, {"transport=tap", "-bind"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->transport, Transport::kTap);
  EXPECT_EQ(c->bind, "");
}

TEST(ApplyChange, peer_equal_to_bind_is_refused) {
  EXPECT_TRUE(fails_with(apply(base(), {"peer=/run/x.sock", "bind=/run/x.sock"}),
                         "conflicting-settings", {"/run/x.sock", "same path"}));
}

TEST(ApplyChange, peer_equal_to_existing_bind_is_refused) {
  EndpointConfig start = base();
  start.bind = "/run/x.sock";
  EXPECT_TRUE(
      fails_with(apply(start, {"peer=/run/x.sock"}), "conflicting-settings", {"same path"}));
}

TEST(ApplyChange, bridge_equal_to_own_name_is_refused) {
  EXPECT_TRUE(fails_with(apply(base(), {"bridge=vp0"}), "conflicting-settings",
                         {"vp0 cannot be its own bridge"}));
}

TEST(ApplyChange, bridge_with_another_name_is_accepted) {
  auto c = apply(base(), {"bridge=vp1"});
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->bridge, "vp1");
}

TEST(ApplyChange, refused_change_reports_the_whole_config_rule) {
  // Values that parse alone but break a rule across settings are refused by validate().
  EndpointConfig start = base();
  start.transport = Transport::kTap;
  EXPECT_TRUE(fails_with(apply(start, {"bind=/run/b.sock"}), "conflicting-settings"));
}

TEST(ApplyChange, config_without_mac_is_refused) {
  EndpointConfig start = base();
  start.mac = {};
  EXPECT_TRUE(fails_with(apply(start, {"up"}), "invalid-mac", {"vp0"}));
}

TEST(ParseChange, queues_mode_owner_group) {
  auto c = parse({"queues=4", "mode=0600", "owner=libvirt-qemu", "group=kvm"});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->queues, 4u);
  EXPECT_EQ(c->socket_mode, 0600u);
  EXPECT_EQ(c->owner, "libvirt-qemu");
  EXPECT_EQ(c->group, "kvm");
  EXPECT_FALSE(c->sets_nothing());
  auto cleared = parse({"-owner", "-group"});
  ASSERT_TRUE(cleared);
  EXPECT_EQ(cleared->owner, "");
  EXPECT_EQ(cleared->group, "");
}

TEST(ParseChange, queues_out_of_range_or_bad_mode_is_refused) {
  EXPECT_TRUE(fails_with(parse({"queues=0"}), "bad-value", {"queues=0"}));
  EXPECT_TRUE(fails_with(parse({"queues=17"}), "bad-value", {"queues=17"}));
  EXPECT_TRUE(fails_with(parse({"mode=0888"}), "bad-value", {"octal"}));
  EXPECT_TRUE(fails_with(parse({"mode=01777"}), "bad-value", {"0777"}));
  EXPECT_TRUE(fails_with(parse({"owner=a:b"}), "bad-value", {"owner=a:b"}));
  EXPECT_TRUE(fails_with(parse({"group="}), "bad-value", {"-group"}));
}

TEST(ApplyChange, stream_endpoint_takes_one_queue_pair) {
  EndpointConfig c;
  c.name = "vp0";
  c.mac = net::stable_mac("m", "vp0");
  auto change = parse({"transport=stream", "queues=2"});
  ASSERT_TRUE(change);
  EXPECT_TRUE(fails_with(apply_change(c, *change), "conflicting-settings", {"queues must be 1"}));
}

TEST(EndpointJson, queues_and_socket_permissions_round_trip) {
  EndpointConfig c;
  c.name = "vp3";
  c.mac = net::stable_mac("m", "vp3");
  c.queues = 2;
  c.socket_mode = 0600;
  c.owner = "1000";
  c.group = "kvm";
  auto back = endpoint_from_json(to_json(c));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, c);
}

}  // namespace
}  // namespace vp::control

namespace vp::control {
namespace {

// --- allow=, guest-mac=, lock-mac (access control, issue 6) ----------------------------------

TEST(AccessControl, allow_entries_are_numbers_sorted_and_unique) {
  auto c = parse({"allow=64055:994", "allow=0", "allow=64055:994"});
  ASSERT_TRUE(succeeded(c));
  auto applied = apply_change(base(), *c);
  ASSERT_TRUE(succeeded(applied));
  EXPECT_EQ(applied->allow, (std::vector<std::string>{"0", "64055:994"}));
  // One removed by name, then all.
  auto minus = parse({"-allow=0"});
  ASSERT_TRUE(succeeded(minus));
  auto less = apply_change(*applied, *minus);
  ASSERT_TRUE(succeeded(less));
  EXPECT_EQ(less->allow, (std::vector<std::string>{"64055:994"}));
  auto none = apply_change(*less, *parse({"-allow"}));
  ASSERT_TRUE(succeeded(none));
  EXPECT_TRUE(none->allow.empty());
}

TEST(AccessControl, allow_with_a_name_or_garbage_is_refused_with_an_example) {
  for (const char* bad : {"allow=libvirt-qemu", "allow=", "allow=1:", "allow=:2", "allow=1:2:3",
                          "allow=-1", "-allow=x"}) {
    EXPECT_TRUE(fails_with(parse({bad}), "bad-value", {"allow=", "numbers", "e.g."})) << bad;
  }
}

TEST(AccessControl, guest_mac_and_lock_mac_set_and_clear) {
  auto c = apply_change(base(), *parse({"guest-mac=52:54:00:12:34:56", "lock-mac"}));
  ASSERT_TRUE(succeeded(c));
  EXPECT_EQ(c->guest_mac, mac("52:54:00:12:34:56"));
  EXPECT_TRUE(c->lock_mac);
  EXPECT_EQ(guest_mac_of(*c, "machine"), mac("52:54:00:12:34:56"));
  auto cleared = apply_change(*c, *parse({"-guest-mac", "-lock-mac"}));
  ASSERT_TRUE(succeeded(cleared));
  EXPECT_FALSE(cleared->guest_mac.has_value());
  EXPECT_FALSE(cleared->lock_mac);
  // Back to the derived one: stable for a machine and a name.
  EXPECT_EQ(guest_mac_of(*cleared, "machine"), guest_mac_of(*cleared, "machine"));
  EXPECT_NE(guest_mac_of(*cleared, "machine"), mac("52:54:00:12:34:56"));
}

TEST(AccessControl, guest_mac_must_be_unicast_and_not_the_hosts) {
  EXPECT_TRUE(fails_with(parse({"guest-mac=01:00:5e:00:00:01"}), "invalid-mac", {}));
  const std::vector<std::string> same{"guest-mac=" + base().mac.to_string()};
  EXPECT_TRUE(fails_with(apply_change(base(), *parse_change(same)), "duplicate-mac",
                         {"guest-mac", "own addresses"}));
}

TEST(AccessControl, tap_transport_refuses_lock_mac_and_allow_saying_why) {
  EXPECT_TRUE(fails_with(apply_change(base(), *parse({"transport=tap", "lock-mac"})),
                         "conflicting-settings", {"not in the data path", "owner=/group="}));
  EXPECT_TRUE(fails_with(apply_change(base(), *parse({"transport=tap", "allow=5"})),
                         "conflicting-settings", {"lock-mac and allow="}));
}

TEST(AccessControl, peer_allowed_matches_uid_or_uid_and_gid) {
  EXPECT_TRUE(peer_allowed({}, 1000, 1000)) << "no list: the socket's permissions decide";
  const std::vector<std::string> allow{"64055", "107:994"};
  EXPECT_TRUE(peer_allowed(allow, 64055, 1));
  EXPECT_TRUE(peer_allowed(allow, 107, 994));
  EXPECT_FALSE(peer_allowed(allow, 107, 995)) << "uid right, gid wrong";
  EXPECT_FALSE(peer_allowed(allow, 0, 0)) << "root too is held to the list";
}

TEST(AccessControl, settings_round_trip_through_tokens_and_json) {
  auto c = apply_change(
      base(), *parse({"allow=5:6", "allow=7", "guest-mac=52:54:00:00:00:09", "lock-mac"}));
  ASSERT_TRUE(succeeded(c));
  auto from_tokens = apply_change(base(), *parse_change(to_tokens(*c)));
  ASSERT_TRUE(succeeded(from_tokens));
  EXPECT_EQ(*from_tokens, *c);
  auto from_json = endpoint_from_json(nlohmann::json::parse(to_json(*c).dump()));
  ASSERT_TRUE(succeeded(from_json));
  EXPECT_EQ(*from_json, *c);
  EXPECT_EQ(to_json(*c).at("allow"), (nlohmann::json{"5:6", "7"}));
  EXPECT_EQ(to_json(*c).at("lock_mac"), true);
}

}  // namespace
}  // namespace vp::control
