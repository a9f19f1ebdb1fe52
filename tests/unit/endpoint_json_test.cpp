#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "control/endpoint.hpp"
#include "control/grammar.hpp"
#include "net/offloads.hpp"
#include "unit_expect.hpp"

namespace vp::control {
namespace {

using nlohmann::json;
using unit::fails_with;
using unit::succeeded;

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

EndpointConfig default_config() {
  EndpointConfig c;
  c.name = "vp0";
  c.mac = mac("02:00:00:00:00:01");
  return c;
}

// Every field away from its default.
EndpointConfig full_config() {
  EndpointConfig c;
  c.name = "vp7";
  c.transport = Transport::kStream;
  c.peer = "/run/qemu/g1/p2p.sock";
  c.bind = "/run/vpd/vp7.sock";
  c.mac = mac("02:12:34:56:78:9a");
  c.peerfeats = 0;
  c.legacy = true;
  c.priority = 10;
  c.mtu = 9000;
  c.bridge = "br0";
  c.addresses = {address("192.168.1.1/24"), address("fd00::1/64")};
  c.toggles = net::toggle::kAll & ~(net::toggle::kTso4 | net::toggle::kTso6);
  c.up = true;
  return c;
}

// A vhost-user endpoint with an explicit, non-zero peerfeats.
EndpointConfig vhost_config_with_peerfeats() {
  EndpointConfig c = default_config();
  c.name = "vp3";
  c.peerfeats = 0x19c3;
  c.bind = "/run/vpd/vp3.sock";
  c.toggles = net::toggle::kAll & ~net::toggle::kRxcsum6;
  return c;
}

// ---- to_json ---------------------------------------------------------------------------

TEST(ToJson, default_config_fields) {
  const json j = to_json(default_config());
  EXPECT_EQ(j.at("name"), "vp0");
  EXPECT_EQ(j.at("transport"), "vhost-user");
  EXPECT_EQ(j.at("peer"), "");
  EXPECT_EQ(j.at("bind"), "");
  EXPECT_EQ(j.at("mac"), "02:00:00:00:00:01");
  EXPECT_TRUE(j.at("peerfeats").is_null());
  EXPECT_EQ(j.at("legacy"), false);
  EXPECT_EQ(j.at("priority"), 0);
  EXPECT_EQ(j.at("mtu"), 1500);
  EXPECT_EQ(j.at("bridge"), "");
  EXPECT_EQ(j.at("addresses"), json::array());
  EXPECT_EQ(j.at("toggles"),
            "rxcsum,txcsum,rxcsum6,txcsum6,tcp4csum,udp4csum,tcp6csum,udp6csum,tso4,tso6");
  EXPECT_EQ(j.at("up"), false);
}

TEST(ToJson, full_config_fields) {
  const json j = to_json(full_config());
  EXPECT_EQ(j.at("transport"), "stream");
  EXPECT_EQ(j.at("peer"), "/run/qemu/g1/p2p.sock");
  EXPECT_EQ(j.at("bind"), "/run/vpd/vp7.sock");
  EXPECT_EQ(j.at("mac"), "02:12:34:56:78:9a");
  EXPECT_EQ(j.at("peerfeats"), "0x0");
  EXPECT_EQ(j.at("legacy"), true);
  EXPECT_EQ(j.at("priority"), 10);
  EXPECT_EQ(j.at("mtu"), 9000);
  EXPECT_EQ(j.at("bridge"), "br0");
  EXPECT_EQ(j.at("addresses"), (json{"192.168.1.1/24", "fd00::1/64"}));
  EXPECT_EQ(j.at("toggles"), "rxcsum,txcsum,rxcsum6,txcsum6,tcp4csum,udp4csum,tcp6csum,udp6csum");
  EXPECT_EQ(j.at("up"), true);
}

TEST(ToJson, peerfeats_is_hex_text) {
  EXPECT_EQ(to_json(vhost_config_with_peerfeats()).at("peerfeats"), "0x19c3");
}

TEST(PeerfeatsText, unset_is_default_and_set_is_hex) {
  EXPECT_EQ(peerfeats_text(std::nullopt), "default");
  EXPECT_EQ(peerfeats_text(0), "0x0");
  EXPECT_EQ(peerfeats_text(0x19c3), "0x19c3");
  EXPECT_EQ(peerfeats_text(1ull << 56 | 1), "0x100000000000001");
}

TEST(TransportName, names_round_trip) {
  for (Transport t : {Transport::kVhostUser, Transport::kStream, Transport::kTap}) {
    EXPECT_EQ(transport_by_name(transport_name(t)), t);
  }
  EXPECT_EQ(transport_by_name("socket"), std::nullopt);
  EXPECT_EQ(transport_by_name(""), std::nullopt);
}

// ---- round trips -------------------------------------------------------------------------

TEST(EndpointJson, default_config_round_trips) {
  auto back = endpoint_from_json(to_json(default_config()));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, default_config());
}

TEST(EndpointJson, full_config_round_trips) {
  auto back = endpoint_from_json(to_json(full_config()));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, full_config());
}

TEST(EndpointJson, vhost_config_with_peerfeats_round_trips) {
  auto back = endpoint_from_json(to_json(vhost_config_with_peerfeats()));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, vhost_config_with_peerfeats());
}

TEST(EndpointJson, all_toggles_off_round_trips) {
  EndpointConfig c = default_config();
  c.toggles = 0;
  const json j = to_json(c);
  EXPECT_EQ(j.at("toggles"), "");
  auto back = endpoint_from_json(j);
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(back->toggles, 0u);
  EXPECT_EQ(*back, c);
}

TEST(EndpointJson, tap_transport_round_trips) {
  EndpointConfig c = default_config();
  c.transport = Transport::kTap;
  auto back = endpoint_from_json(to_json(c));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, c);
}

TEST(EndpointJson, round_trip_survives_text_serialisation) {
  auto back = endpoint_from_json(json::parse(to_json(full_config()).dump()));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, full_config());
}

TEST(EndpointJson, extra_fields_are_ignored) {
  json j = to_json(default_config());
  j["declared"] = "vp0 mtu=1500";
  j["status"] = json{{"link", "up"}};
  auto back = endpoint_from_json(j);
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, default_config());
}

// ---- from_json errors ----------------------------------------------------------------------

TEST(EndpointFromJson, not_an_object) {
  EXPECT_TRUE(fails_with(endpoint_from_json(json::array()), "bad-request", {"JSON object"}));
  EXPECT_TRUE(fails_with(endpoint_from_json(json("vp0")), "bad-request", {"JSON object"}));
}

TEST(EndpointFromJson, every_missing_field_is_named) {
  for (const char* field : {"name", "transport", "peer", "bind", "mac", "legacy", "priority", "mtu",
                            "bridge", "toggles", "up", "addresses"}) {
    json j = to_json(default_config());
    j.erase(field);
    EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {field})) << field;
  }
}

TEST(EndpointFromJson, missing_peerfeats_means_default) {
  json j = to_json(vhost_config_with_peerfeats());
  j.erase("peerfeats");
  auto back = endpoint_from_json(j);
  ASSERT_TRUE(succeeded(back));
  EXPECT_FALSE(back->peerfeats.has_value());
}

TEST(EndpointFromJson, string_field_with_a_number) {
  json j = to_json(default_config());
  j["mac"] = 42;
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {"'mac'", "not a string"}));
}

TEST(EndpointFromJson, number_field_with_a_string) {
  json j = to_json(default_config());
  j["mtu"] = "1500";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {"'mtu'", "not a number"}));
}

TEST(EndpointFromJson, number_field_with_a_fraction) {
  json j = to_json(default_config());
  j["priority"] = 1.5;
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {"'priority'"}));
}

TEST(EndpointFromJson, boolean_field_with_a_number) {
  json j = to_json(default_config());
  j["up"] = 1;
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {"'up'", "true/false"}));
}

TEST(EndpointFromJson, peerfeats_as_a_number) {
  json j = to_json(default_config());
  j["peerfeats"] = 6595;
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {"'peerfeats'"}));
}

TEST(EndpointFromJson, addresses_not_a_list) {
  json j = to_json(default_config());
  j["addresses"] = "10.0.0.1/8";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {"'addresses'"}));
}

TEST(EndpointFromJson, address_not_a_string) {
  json j = to_json(default_config());
  j["addresses"] = json{1, 2};
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {"address"}));
}

TEST(EndpointFromJson, invalid_mac) {
  json j = to_json(default_config());
  j["mac"] = "zz:zz:zz:zz:zz:zz";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "invalid-mac", {"zz:zz:zz:zz:zz:zz"}));
}

TEST(EndpointFromJson, multicast_mac) {
  json j = to_json(default_config());
  j["mac"] = "01:00:5e:00:00:01";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "invalid-mac", {"multicast"}));
}

TEST(EndpointFromJson, unknown_toggle) {
  json j = to_json(default_config());
  j["toggles"] = "rxcsum,turbo";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-request", {"unknown offload toggle 'turbo'"}));
}

TEST(EndpointFromJson, unknown_transport) {
  json j = to_json(default_config());
  j["transport"] = "carrier-pigeon";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-value", {"transport=carrier-pigeon"}));
}

TEST(EndpointFromJson, mtu_out_of_range) {
  json j = to_json(default_config());
  j["mtu"] = 70000;
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-value", {"mtu=70000"}));
}

TEST(EndpointFromJson, negative_priority) {
  json j = to_json(default_config());
  j["priority"] = -3;
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-value", {"priority=-3"}));
}

TEST(EndpointFromJson, invalid_address) {
  json j = to_json(default_config());
  j["addresses"] = json{"10.0.0.1/40"};
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "invalid-address", {"10.0.0.1/40"}));
}

TEST(EndpointFromJson, invalid_peerfeats_text) {
  json j = to_json(default_config());
  j["peerfeats"] = "0x8000";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-peerfeats", {"bit 15"}));
}

TEST(EndpointFromJson, invalid_name) {
  json j = to_json(default_config());
  j["name"] = "vp/0";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "invalid-name"));
  j["name"] = "";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "invalid-name"));
  j["name"] = "abcdefghijklmnop";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "name-too-long"));
}

TEST(EndpointFromJson, relative_bind_path) {
  json j = to_json(default_config());
  j["bind"] = "vp0.sock";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-value", {"absolute path"}));
}

TEST(EndpointFromJson, stream_with_peerfeats_is_refused) {
  json j = to_json(full_config());
  j["peerfeats"] = "0x3";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "bad-peerfeats", {"virtio-net header"}));
}

TEST(EndpointFromJson, bridge_equal_to_name_is_refused) {
  json j = to_json(default_config());
  j["bridge"] = "vp0";
  EXPECT_TRUE(fails_with(endpoint_from_json(j), "conflicting-settings", {"own bridge"}));
}

// ---- to_tokens ---------------------------------------------------------------------------

TEST(ToTokens, default_config) {
  EXPECT_EQ(to_tokens(default_config()),
            (std::vector<std::string>{"mac=02:00:00:00:00:01", "mtu=1500", "down"}));
}

TEST(ToTokens, full_config) {
  EXPECT_EQ(
      to_tokens(full_config()),
      (std::vector<std::string>{
          "transport=stream", "peer=/run/qemu/g1/p2p.sock", "bind=/run/vpd/vp7.sock",
          "mac=02:12:34:56:78:9a", "peerfeats=0x0", "legacy", "priority=10", "mtu=9000",
          "bridge=br0", "address=192.168.1.1/24", "address=fd00::1/64", "-tso4", "-tso6", "up"}));
}

TEST(ToTokens, parse_back_to_the_same_config) {
  for (const EndpointConfig& c : {default_config(), full_config(), vhost_config_with_peerfeats()}) {
    const std::vector<std::string> tokens = to_tokens(c);
    auto change = parse_change(tokens);
    ASSERT_TRUE(succeeded(change)) << c.name;
    EndpointConfig start;
    start.name = c.name;
    auto back = apply_change(start, *change);
    ASSERT_TRUE(succeeded(back)) << c.name;
    EXPECT_EQ(*back, c) << c.name;
  }
}

// ---- validate ----------------------------------------------------------------------------

TEST(Validate, default_config_is_valid) { EXPECT_TRUE(succeeded(validate(default_config()))); }

TEST(Validate, full_config_is_valid) { EXPECT_TRUE(succeeded(validate(full_config()))); }

TEST(Validate, empty_name) {
  EndpointConfig c = default_config();
  c.name = "";
  EXPECT_TRUE(fails_with(validate(c), "invalid-name"));
}

TEST(Validate, zero_mac) {
  EndpointConfig c = default_config();
  c.mac = {};
  EXPECT_TRUE(fails_with(validate(c), "invalid-mac", {"vp0", "00:00:00:00:00:00"}));
}

TEST(Validate, multicast_mac) {
  EndpointConfig c = default_config();
  c.mac = net::Mac{{0x01, 0, 0x5e, 0, 0, 1}};
  EXPECT_TRUE(fails_with(validate(c), "invalid-mac", {"01:00:5e:00:00:01"}));
}

TEST(Validate, mtu_bounds) {
  EndpointConfig c = default_config();
  c.mtu = 67;
  EXPECT_TRUE(fails_with(validate(c), "bad-value", {"mtu=67"}));
  c.mtu = 65522;
  EXPECT_TRUE(fails_with(validate(c), "bad-value", {"mtu=65522"}));
  c.mtu = 68;
  EXPECT_TRUE(succeeded(validate(c)));
  c.mtu = 65521;
  EXPECT_TRUE(succeeded(validate(c)));
}

TEST(Validate, priority_bounds) {
  EndpointConfig c = default_config();
  c.priority = -1;
  EXPECT_TRUE(fails_with(validate(c), "bad-value", {"priority=-1"}));
  c.priority = 100;
  EXPECT_TRUE(fails_with(validate(c), "bad-value", {"priority=100"}));
  c.priority = 99;
  EXPECT_TRUE(succeeded(validate(c)));
}

TEST(Validate, stream_with_peerfeats) {
  EndpointConfig c = full_config();
  c.peerfeats = 0x1;
  EXPECT_TRUE(fails_with(validate(c), "bad-peerfeats", {"vp7", "virtio-net header"}));
}

TEST(Validate, tap_with_socket) {
  EndpointConfig c = default_config();
  c.transport = Transport::kTap;
  c.peer = "/run/p.sock";
  EXPECT_TRUE(fails_with(validate(c), "conflicting-settings", {"transport=tap"}));
}

TEST(Validate, peer_equal_to_bind) {
  EndpointConfig c = default_config();
  c.peer = c.bind = "/run/same.sock";
  EXPECT_TRUE(fails_with(validate(c), "conflicting-settings", {"same path"}));
}

TEST(EndpointSettings, vnet_header_length_follows_legacy) {
  EndpointConfig c = default_config();
  EXPECT_EQ(c.vnet_hdr_len(), 12);
  c.legacy = true;
  EXPECT_EQ(c.vnet_hdr_len(), 10);
}

TEST(EndpointSettings, features_are_capped_by_peerfeats) {
  EndpointConfig c = vhost_config_with_peerfeats();
  c.toggles = net::toggle::kAll;
  // 0x19c3 less the legacy GSO bit, which is never offered.
  EXPECT_EQ(c.features(), 0x19c3u & ~net::feature::kGso);
}

// A stream endpoint has no virtio-net header, so it can negotiate no offload.
// validate() accepts it without peerfeats= (treating "unset" as 0), so features() must
// be 0 too: the registry sets the TAP's TUNSETOFFLOAD from features(), and a TAP with
// TSO/CSUM on would hand the stream transport frames it cannot carry.
TEST(EndpointSettings, stream_without_peerfeats_offers_no_offloads) {
  EndpointConfig c = default_config();
  c.transport = Transport::kStream;
  ASSERT_TRUE(succeeded(validate(c)));
  EXPECT_EQ(c.features(), 0u) << net::feature_names(c.features());
  EXPECT_EQ(net::tun_offloads_for(c.features()), 0u);
}

}  // namespace
}  // namespace vp::control
