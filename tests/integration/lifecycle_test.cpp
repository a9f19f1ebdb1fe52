// Endpoint lifecycle against the real kernel: a real vpd and the real vpctl in a private
// network namespace per test. Every change is checked through the kernel (`ip -j`, and
// ETHTOOL_GFEATURES for offloads), not only through vpctl's answer.

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "integration/vpd_fixture.hpp"
#include "net/mac.hpp"

#include <sched.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

namespace vp::test {
namespace {

class Lifecycle : public VpdFixture {};

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<std::string> strings_of(const json& array) {
  std::vector<std::string> out;
  if (!array.is_array()) return out;
  for (const auto& s : array) out.push_back(s.is_string() ? s.get<std::string>() : s.dump());
  return out;
}

/// First byte of "aa:bb:..".
int first_octet(const std::string& mac) { return std::stoi(mac.substr(0, 2), nullptr, 16); }

/// `vpctl vp0` lines "key:   value" as a map.
std::map<std::string, std::string> show_lines(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t eol = std::min(text.find('\n', pos), text.size());
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const size_t value = line.find_first_not_of(' ', colon + 1);
    out[line.substr(0, colon)] = value == std::string::npos ? "" : line.substr(value);
  }
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t eol = std::min(text.find('\n', pos), text.size());
    out.push_back(text.substr(pos, eol - pos));
    pos = eol + 1;
  }
  return out;
}

// ---- create / configure / destroy -----------------------------------------------------------

TEST_F(Lifecycle, create_makes_a_persistent_tap_marked_as_a_vpd_endpoint) {
  ASSERT_EQ(vpd().start(), "");
  Output r = ok({"vp0", "create"});
  EXPECT_EQ(show_lines(r.out)["name"], "vp0") << r.out;

  const json link = link_json("vp0");
  ASSERT_TRUE(link.is_object()) << "vp0 is not in the kernel";
  const json info = link.value("linkinfo", json::object());
  EXPECT_EQ(info.value("info_kind", ""), "tun");
  const json data = info.value("info_data", json::object());
  EXPECT_EQ(data.value("type", ""), "tap");
  EXPECT_EQ(data.value("persist", false), true);
  EXPECT_EQ(data.value("vnet_hdr", false), true);
  EXPECT_EQ(link.value("ifalias", ""), "vpd endpoint");
  EXPECT_FALSE(has_flag(link, "UP"));
  EXPECT_EQ(link.value("mtu", 0), 1500);

  const json e = show("vp0");
  ASSERT_TRUE(e.is_object());
  EXPECT_EQ(e["status"]["ifindex"], link["ifindex"]);
  EXPECT_EQ(e["mac"], link["address"]);
  EXPECT_EQ(e["mtu"], 1500);
  EXPECT_EQ(e["up"], false);
  EXPECT_EQ(e["status"]["link"], "down");
  EXPECT_EQ(e["bind"], vpd().runtime_dir() + "/vp0.sock");
  EXPECT_EQ(e["status"]["problems"], json::array());

  // Saved at once.
  const json state = state_json();
  ASSERT_TRUE(state.is_object()) << state_text();
  ASSERT_EQ(state["endpoints"].size(), 1u) << state_text();
  EXPECT_EQ(state["endpoints"][0]["name"], "vp0");
  EXPECT_EQ(state["endpoints"][0]["mac"], link["address"]);
}

TEST_F(Lifecycle, mtu_mac_bridge_addresses_up_and_down_reach_the_kernel) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge && ip link set br0 up"));
  ok({"vp0", "create"});
  const int ifindex = link_json("vp0").value("ifindex", -1);

  ok({"vp0", "mtu=9000", "mac=02:00:00:00:00:01"});
  json link = link_json("vp0");
  EXPECT_EQ(link.value("mtu", 0), 9000);
  EXPECT_EQ(link.value("address", ""), "02:00:00:00:00:01");
  EXPECT_EQ(link.value("ifindex", 0), ifindex);  // changed in place, not re-created

  ok({"vp0", "bridge=br0"});
  link = link_json("vp0");
  EXPECT_EQ(link.value("master", ""), "br0");
  EXPECT_EQ(show("vp0")["status"]["master"], "br0");

  ok({"vp0", "address=192.168.7.1/24", "address=fd00:7::1/64"});
  EXPECT_EQ(sorted(addresses_of("vp0")),
            (std::vector<std::string>{"192.168.7.1/24", "fd00:7::1/64"}));

  ok({"vp0", "up"});
  link = link_json("vp0");
  EXPECT_TRUE(has_flag(link, "UP"));
  // No guest is attached: no carrier, so the bridge does not forward into a dead port.
  EXPECT_FALSE(has_flag(link, "LOWER_UP"));
  json e = show("vp0");
  EXPECT_EQ(e["status"]["link"], "up");
  EXPECT_EQ(e["status"]["carrier"], false);
  EXPECT_EQ(sorted(addresses_of("vp0")),
            (std::vector<std::string>{"192.168.7.1/24", "fd00:7::1/64"}));

  ok({"vp0", "address=192.168.7.1/16"});  // a new prefix length replaces the old one
  EXPECT_EQ(sorted(addresses_of("vp0")),
            (std::vector<std::string>{"192.168.7.1/16", "fd00:7::1/64"}));
  ok({"vp0", "-address=192.168.7.1"});  // removal ignores the prefix length
  EXPECT_EQ(addresses_of("vp0"), std::vector<std::string>{"fd00:7::1/64"});

  ASSERT_TRUE(sh("ip link add br1 address 02:bb:00:00:00:02 type bridge"));
  ok({"vp0", "bridge=br1"});  // straight from one bridge to another
  EXPECT_EQ(link_json("vp0").value("master", ""), "br1");

  ok({"vp0", "mtu=1400"});  // while up and bridged
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1400);

  ok({"vp0", "-bridge"});
  link = link_json("vp0");
  EXPECT_FALSE(link.contains("master")) << link.dump();
  EXPECT_EQ(show("vp0")["status"]["master"], "");

  ok({"vp0", "down"});
  link = link_json("vp0");
  EXPECT_FALSE(has_flag(link, "UP"));
  EXPECT_EQ(show("vp0")["status"]["link"], "down");
  EXPECT_EQ(link.value("ifindex", 0), ifindex);

  // The saved state says what the kernel shows.
  const json saved = state_json()["endpoints"][0];
  EXPECT_EQ(saved["mtu"], 1400);
  EXPECT_EQ(saved["mac"], "02:00:00:00:00:01");
  EXPECT_EQ(saved["bridge"], "");
  EXPECT_EQ(saved["up"], false);
  EXPECT_EQ(saved["addresses"], json::array({"fd00:7::1/64"}));
}

TEST_F(Lifecycle, down_keeps_the_addresses_that_vpctl_lists) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "address=192.168.5.1/24", "address=fd00:5::1/64", "up"});
  const std::vector<std::string> both{"192.168.5.1/24", "fd00:5::1/64"};
  ASSERT_EQ(sorted(addresses_of("vp0")), both);

  ok({"vp0", "down"});
  const json e = show("vp0");
  ASSERT_EQ(strings_of(e["addresses"]), both);
  // Whatever vpctl lists must be in the kernel, or vpctl must say that it is not.
  EXPECT_TRUE(sorted(addresses_of("vp0")) == both || !e["status"]["problems"].empty())
      << "after `vpctl vp0 down` the kernel has " << ::testing::PrintToString(addresses_of("vp0"))
      << " but vpctl lists " << e["addresses"].dump() << " with no problem reported";

  ok({"vp0", "up"});
  EXPECT_EQ(sorted(addresses_of("vp0")), both);
}

TEST_F(Lifecycle, mtu_below_1280_keeps_or_reports_the_ipv6_addresses) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "address=192.168.5.1/24", "address=fd00:5::1/64", "up"});
  const std::vector<std::string> both{"192.168.5.1/24", "fd00:5::1/64"};
  ASSERT_EQ(sorted(addresses_of("vp0")), both);

  // IPv6 needs an MTU of 1280; below it the kernel drops the device's IPv6 addresses.
  // vpd may refuse the change, or make it, but then what vpctl lists must hold.
  Output r = vpd().ctl({"vp0", "mtu=1200"});
  const json e = show("vp0");
  if (r.status == 0) {
    EXPECT_TRUE(sorted(addresses_of("vp0")) == strings_of(e["addresses"]) ||
                !e["status"]["problems"].empty())
        << "after `vpctl vp0 mtu=1200` the kernel has "
        << ::testing::PrintToString(addresses_of("vp0")) << " but vpctl lists "
        << e["addresses"].dump() << " with no problem reported";
  } else {
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_EQ(sorted(addresses_of("vp0")), both);
    EXPECT_EQ(link_json("vp0").value("mtu", 0), 1500);
  }
}

TEST_F(Lifecycle, destroy_removes_the_tap_and_the_saved_endpoint) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge"));
  ok({"vp0", "create", "bridge=br0", "address=10.0.0.1/24", "up"});
  ok({"vp1", "create"});
  ASSERT_TRUE(link_json("vp0").is_object());

  Output r = ok({"vp0", "destroy"});
  EXPECT_TRUE(contains(r.out, "vp0 destroyed")) << r.out;
  EXPECT_TRUE(link_json("vp0").is_null()) << "vp0 is still in the kernel";
  EXPECT_TRUE(link_json("vp1").is_object());
  EXPECT_TRUE(link_json("br0").is_object()) << "the bridge is not vpd's to remove";

  const json state = state_json();
  ASSERT_EQ(state["endpoints"].size(), 1u) << state_text();
  EXPECT_EQ(state["endpoints"][0]["name"], "vp1");
  refused({"vp0"}, "no-such-endpoint");
  refused({"vp0", "destroy"}, "no-such-endpoint");

  ok({"vp1", "destroy"});
  EXPECT_EQ(link_names(), (std::vector<std::string>{"lo", "br0"}));
  EXPECT_EQ(state_json()["endpoints"], json::array());
  EXPECT_EQ(vpd().ctl_json({"list"}), json::array());
}

TEST_F(Lifecycle, create_picks_the_next_free_name_and_name_prefix) {
  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(vpd().ctl_json({"create"}).value("name", ""), "vp0");
  EXPECT_EQ(vpd().ctl_json({"create", "mtu=2000"}).value("name", ""), "vp1");
  EXPECT_EQ(link_json("vp1").value("mtu", 0), 2000);
  ok({"vp0", "destroy"});
  EXPECT_EQ(vpd().ctl_json({"create"}).value("name", ""), "vp0");  // the lowest free one
  EXPECT_EQ(vpd().ctl_json({"create"}).value("name", ""), "vp2");

  EXPECT_EQ(vpd().ctl_json({"create", "name=guest"}).value("name", ""), "guest0");
  EXPECT_EQ(vpd().ctl_json({"create", "name=guest"}).value("name", ""), "guest1");
  for (const char* name : {"vp0", "vp1", "vp2", "guest0", "guest1"}) {
    const json link = link_json(name);
    ASSERT_TRUE(link.is_object()) << name;
    EXPECT_EQ(link["linkinfo"].value("info_kind", ""), "tun") << name;
  }
  // Plain text output names the endpoint it made.
  EXPECT_EQ(show_lines(ok({"create"}).out)["name"], "vp3");
}

TEST_F(Lifecycle, foreign_interface_named_vp0_is_refused_left_untouched_and_skipped) {
  ASSERT_EQ(vpd().start(), "");
  struct Foreign {
    const char* kind;
    const char* create;
    bool optional;  // the kernel may lack the driver (no dummy module)
  };
  const Foreign kinds[] = {
      {"dummy", "ip link add vp0 type dummy", true},
      {"bridge", "ip link add vp0 type bridge", false},
      {"veth", "ip link add vp0 type veth peer name vp0peer", false},
      {"tap", "ip tuntap add dev vp0 mode tap", false},
  };
  int tried = 0;
  for (const auto& f : kinds) {
    SCOPED_TRACE(f.kind);
    if (!sh(std::string(f.create) + " 2>/dev/null")) {
      EXPECT_TRUE(f.optional) << "cannot create a " << f.kind;
      continue;
    }
    ++tried;
    ASSERT_TRUE(sh("ip link set vp0 mtu 1400 && ip addr add 10.9.9.9/24 dev vp0"));
    const json before = kernel_snapshot();
    const std::string state_before = state_text();

    Output r = refused({"vp0", "create"}, "name-taken");
    EXPECT_TRUE(contains(r.err, "vp0")) << r.err;
    EXPECT_EQ(kernel_snapshot(), before);
    EXPECT_EQ(state_text(), state_before);
    refused({"vp0", "create", "mtu=9000", "up"}, "name-taken");
    EXPECT_EQ(kernel_snapshot(), before);
    refused({"vp0", "mtu=9000"}, "no-such-endpoint");
    refused({"vp0", "destroy"}, "no-such-endpoint");
    EXPECT_EQ(kernel_snapshot(), before);
    EXPECT_EQ(state_text(), state_before);

    // `vpctl create` goes past it.
    const json made = vpd().ctl_json({"create"});
    EXPECT_EQ(made.value("name", ""), "vp1");
    EXPECT_EQ(link_json("vp1")["linkinfo"].value("info_kind", ""), "tun");
    ok({"vp1", "destroy"});
    EXPECT_EQ(kernel_snapshot(), before);
    EXPECT_EQ(state_json()["endpoints"], json::array()) << state_text();
    ASSERT_TRUE(sh("ip link del vp0"));
  }
  EXPECT_GE(tried, 3);
}

// ---- MAC rules --------------------------------------------------------------------------------

TEST_F(Lifecycle, generated_mac_is_local_unicast_and_stable_across_destroy_and_create) {
  ASSERT_EQ(vpd().start(), "");
  const std::string mac0 = vpd().ctl_json({"vp0", "create"}).value("mac", "");
  const std::string mac1 = vpd().ctl_json({"vp1", "create"}).value("mac", "");
  ASSERT_EQ(mac0.size(), 17u);
  EXPECT_NE(first_octet(mac0) & 0x02, 0) << mac0 << " is not locally administered";
  EXPECT_EQ(first_octet(mac0) & 0x01, 0) << mac0 << " is multicast";
  EXPECT_NE(mac0, mac1);
  EXPECT_EQ(link_json("vp0").value("address", ""), mac0);
  EXPECT_EQ(link_json("vp1").value("address", ""), mac1);

  ok({"vp0", "destroy"});
  ok({"vp1", "destroy"});
  ok({"vp1", "create"});
  ok({"vp0", "create"});
  EXPECT_EQ(show("vp0").value("mac", ""), mac0);
  EXPECT_EQ(show("vp1").value("mac", ""), mac1);
  EXPECT_EQ(link_json("vp0").value("address", ""), mac0);
  EXPECT_EQ(link_json("vp1").value("address", ""), mac1);
}

TEST_F(Lifecycle, duplicate_mac_is_refused_in_every_notation) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "mac=02:00:00:00:00:0a"});
  json before = snapshot();
  for (const char* mac : {"mac=02:00:00:00:00:0a", "mac=02-00-00-00-00-0A", "mac=02000000000a"}) {
    Output r = refused({"vp1", "create", mac}, "duplicate-mac");
    EXPECT_TRUE(contains(r.err, "vp0")) << "the refusal should name the owner: " << r.err;
    EXPECT_TRUE(link_json("vp1").is_null()) << mac;
    EXPECT_EQ(snapshot(), before) << mac;
    refused({"create", mac}, "duplicate-mac");
    EXPECT_EQ(snapshot(), before) << mac;
  }

  ok({"vp1", "create"});
  before = snapshot();
  refused({"vp1", "mac=02:00:00:00:00:0A"}, "duplicate-mac");
  refused({"vp1", "mtu=9000", "up", "mac=02:00:00:00:00:0a"}, "duplicate-mac");
  EXPECT_EQ(snapshot(), before);
  // Its own address again is no duplicate.
  ok({"vp0", "mac=02:00:00:00:00:0a"});
  EXPECT_EQ(snapshot(), before);
}

TEST_F(Lifecycle, mac_without_local_bit_is_accepted_with_a_warning) {
  ASSERT_EQ(vpd().start(), "");
  Output r = ok({"vp0", "create", "mac=00:11:22:33:44:55"});
  EXPECT_TRUE(contains(r.err, "warning")) << r.err;
  EXPECT_TRUE(contains(r.err, "locally administered")) << r.err;
  EXPECT_EQ(link_json("vp0").value("address", ""), "00:11:22:33:44:55");

  r = ok({"vp0", "mac=a0b0c0d0e0f0"});
  EXPECT_TRUE(contains(r.err, "locally administered")) << r.err;
  EXPECT_EQ(link_json("vp0").value("address", ""), "a0:b0:c0:d0:e0:f0");
  EXPECT_EQ(state_json()["endpoints"][0]["mac"], "a0:b0:c0:d0:e0:f0");

  r = ok({"vp0", "mac=02:11:22:33:44:55"});
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(link_json("vp0").value("address", ""), "02:11:22:33:44:55");
}

// ---- offloads ---------------------------------------------------------------------------------

TEST_F(Lifecycle, peerfeats_and_toggles_set_the_tap_offload_features) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge && ip link set br0 up"));
  ok({"vp0", "create", "bridge=br0", "up"});

  // status.tun_offloads must be exactly what the TAP does (read back with ETHTOOL_GFEATURES).
  auto expect_tap = [&](const std::string& step, const std::string& tun_offloads) {
    const json e = show("vp0");
    const std::string shown = e["status"].value("tun_offloads", "?");
    if (!tun_offloads.empty()) {
      EXPECT_EQ(shown, tun_offloads) << step;
    }
    EXPECT_EQ(tap_offload_features("vp0"), features_for_tun_offloads(shown)) << step;
    return e;
  };

  json e = expect_tap("default", "");
  const std::string all = e["status"]["tun_offloads"];
  EXPECT_TRUE(contains(all, "CSUM|TSO4|TSO6|TSO_ECN")) << all;  // everything by default

  ok({"vp0", "peerfeats=0x19c3"});

  e = expect_tap("peerfeats=0x19c3", "CSUM|TSO4|TSO6");
  EXPECT_EQ(e["peerfeats"], "0x19c3");
  EXPECT_EQ(e["status"]["features_hex"], "0x1983");
  EXPECT_EQ(feature_active("vp0", "tx-tcp6-segmentation"), true);

  ok({"vp0", "-tso6"});

  e = expect_tap("-tso6", "CSUM|TSO4");
  EXPECT_EQ(e["status"]["features_hex"], "0x883");
  EXPECT_EQ(feature_active("vp0", "tx-tcp6-segmentation"), false);
  EXPECT_EQ(feature_active("vp0", "tx-tcp-segmentation"), true);
  EXPECT_FALSE(contains_name(e["toggles"], "tso6")) << e["toggles"];

  ok({"vp0", "-tso4"});

  expect_tap("-tso4", "CSUM");
  EXPECT_EQ(feature_active("vp0", "tx-tcp-segmentation"), false);
  EXPECT_EQ(feature_active("vp0", "tx-checksum-ip-generic"), true);

  ok({"vp0", "tso4", "tso6", "-txcsum"});

  expect_tap("tso4 tso6 -txcsum", "none");
  EXPECT_EQ(feature_active("vp0", "tx-checksum-ip-generic"), false);

  // rxcsum is about frames from the guest: it changes the features offered, not the TAP.
  ok({"vp0", "txcsum", "-rxcsum"});
  e = expect_tap("txcsum -rxcsum", "CSUM|TSO4|TSO6");
  EXPECT_EQ(e["status"]["features_hex"], "0x182");

  ok({"vp0", "peerfeats=0"});

  expect_tap("peerfeats=0", "none");
  ok({"vp0", "-peerfeats", "rxcsum"});
  e = expect_tap("-peerfeats rxcsum", "");
  EXPECT_EQ(e["status"]["tun_offloads"], all);
  EXPECT_TRUE(e["peerfeats"].is_null()) << e["peerfeats"];
  EXPECT_EQ(feature_active("vp0", "tx-tcp-ecn-segmentation"), true);

  // Still a bridge port, still up, the same device.
  const json link = link_json("vp0");
  EXPECT_EQ(link.value("master", ""), "br0");
  EXPECT_TRUE(has_flag(link, "UP"));
}

// ---- refusals are atomic ----------------------------------------------------------------------

TEST_F(Lifecycle, refused_requests_leave_kernel_and_state_file_as_before) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge && ip link set br0 up"));
  ASSERT_TRUE(sh("ip link add br1 address 02:bb:00:00:00:02 type bridge"));
  ASSERT_TRUE(sh("ip link add notbr type veth peer name notbr-p"));
  ok({"vp0", "create", "mac=02:00:00:00:00:01", "mtu=9000", "bridge=br0", "address=192.168.5.1/24",
      "address=fd00:5::1/64", "peerfeats=0x19c3", "-tso6", "up"});
  ok({"vp1", "create", "mac=02:00:00:00:00:02"});
  const std::string vp1_bind = show("vp1").value("bind", "");
  ASSERT_FALSE(vp1_bind.empty());

  const json before = snapshot();
  ASSERT_TRUE(before["kernel"].contains("vp0"));
  struct Case {
    std::vector<std::string> args;
    const char* code;
  };
  const Case cases[] = {
      {{"vp0", "mac=01:00:5e:00:00:01"}, "invalid-mac"},
      {{"vp0", "mac=zz"}, "invalid-mac"},
      {{"vp0", "mac=00:00:00:00:00:00"}, "invalid-mac"},
      {{"vp0", "mtu=1400", "-bridge", "down", "mac=zz"}, "invalid-mac"},
      {{"vp0", "bridge=nosuchbr"}, "no-such-bridge"},
      {{"vp0", "bridge=notbr"}, "no-such-bridge"},
      {{"vp0", "mtu=1400", "address=10.7.7.7/24", "bridge=nosuchbr"}, "no-such-bridge"},
      {{"vp1", "mac=02:00:00:00:00:01"}, "duplicate-mac"},
      {{"vp1", "mtu=2000", "bridge=br1", "up", "mac=02-00-00-00-00-01"}, "duplicate-mac"},
      {{"vp2", "create", "mac=02:00:00:00:00:01"}, "duplicate-mac"},
      {{"vp2", "create", "bridge=nosuchbr"}, "no-such-bridge"},
      {{"vp0", "mtu=65522"}, "bad-value"},
      {{"vp0", "mtu=67"}, "bad-value"},
      {{"vp0", "mtu=0"}, "bad-value"},
      {{"vp0", "-tso4", "mtu=100000"}, "bad-value"},
      {{"vp0", "bind=" + vp1_bind}, "duplicate-path"},
      {{"vp0", "create"}, "endpoint-exists"},
      {{"vp0", "create", "mtu=1400"}, "endpoint-exists"},
      {{"vp9", "mtu=1400"}, "no-such-endpoint"},
      {{"vp0", "up", "down"}, "conflicting-settings"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(joined(c.args));
    refused(c.args, c.code);
    EXPECT_EQ(snapshot(), before);
  }
  // vpd is still fine afterwards.
  ok({"vp0", "mtu=1400"});
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1400);
}

TEST_F(Lifecycle, change_refused_by_the_kernel_is_rolled_back) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge && ip link set br0 up"));
  ASSERT_TRUE(sh("ip link add br1 address 02:bb:00:00:00:02 type bridge && ip link set br1 up"));
  ok({"vp0", "create", "mac=02:00:00:00:00:01", "bridge=br0", "address=192.168.5.1/24",
      "peerfeats=0x19c3", "up"});
  // With IPv6 off on vp0 the kernel refuses (EACCES) any IPv6 address: the last step of
  // the change below, after offloads, MAC, MTU and bridge have been changed.
  ASSERT_TRUE(sh("echo 1 > /proc/sys/net/ipv6/conf/vp0/disable_ipv6"));
  const json before = snapshot();

  Output r = refused({"vp0", "-tso4", "mac=02:00:00:00:00:09", "mtu=9000", "bridge=br1",
                      "address=fd00:99::1/64", "-address=192.168.5.1", "down"},
                     "system");
  EXPECT_TRUE(contains(r.err, "fd00:99::1")) << "the refusal should name the step: " << r.err;
  EXPECT_EQ(snapshot(), before);
  EXPECT_EQ(show("vp0")["status"]["problems"], json::array());

  // The same change without the refused part goes through.
  ok({"vp0", "-tso4", "mac=02:00:00:00:00:09", "mtu=9000", "bridge=br1"});
  const json link = link_json("vp0");
  EXPECT_EQ(link.value("mtu", 0), 9000);
  EXPECT_EQ(link.value("master", ""), "br1");
  EXPECT_EQ(link.value("address", ""), "02:00:00:00:00:09");
  EXPECT_EQ(feature_active("vp0", "tx-tcp-segmentation"), false);
}

TEST_F(Lifecycle, create_refused_by_the_kernel_leaves_no_tap) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create"});
  // New interfaces get IPv6 off, so the kernel refuses an IPv6 address on a new TAP.
  ASSERT_TRUE(sh("echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"));
  const json before = snapshot();

  refused({"vp1", "create", "mtu=9000", "address=10.1.1.1/24", "address=fd00:1::1/64"}, "system");
  EXPECT_TRUE(link_json("vp1").is_null()) << "the refused create left vp1 in the kernel";
  EXPECT_EQ(snapshot(), before);

  refused({"create", "address=fd00:1::1/64", "up"}, "system");
  EXPECT_EQ(snapshot(), before);

  // And the names are still free.
  EXPECT_EQ(vpd().ctl_json({"create"}).value("name", ""), "vp1");
}

TEST_F(Lifecycle, change_that_cannot_be_saved_is_undone) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge"));
  ok({"vp0", "create", "mac=02:00:00:00:00:01", "address=10.0.0.1/24", "up"});
  // vpd appends every change to state.json.journal; a directory in its place makes every
  // save fail, even for root. The journal so far waits beside it.
  const std::string tmp = control::journal_path(state_path());
  ASSERT_TRUE(sh("mv " + tmp + " " + tmp + ".aside && mkdir " + tmp));
  const json before = snapshot();

  refused({"vp0", "mtu=9000", "bridge=br0", "address=10.0.0.2/24", "-tso4", "down"},
          "state-write-failed");
  EXPECT_EQ(snapshot(), before);
  refused({"vp1", "create", "mtu=9000"}, "state-write-failed");
  EXPECT_TRUE(link_json("vp1").is_null()) << "vp1 was left in the kernel";
  EXPECT_EQ(snapshot(), before);
  refused({"vp0", "destroy"}, "state-write-failed");
  EXPECT_EQ(snapshot(), before);

  ASSERT_TRUE(sh("rmdir " + tmp + " && mv " + tmp + ".aside " + tmp));
  ok({"vp0", "mtu=9000"});
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 9000);
  EXPECT_EQ(state_json()["endpoints"][0]["mtu"], 9000);
}

// ---- vpctl ------------------------------------------------------------------------------------

TEST_F(Lifecycle, vpctl_exit_codes) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create"});

  // 0: done.
  EXPECT_EQ(vpd().ctl({"list"}).status, 0);
  EXPECT_EQ(vpd().ctl({"vp0"}).status, 0);
  EXPECT_EQ(vpd().ctl({"vp0", "mtu=1400"}).status, 0);

  // 1: refused, with a sentence and the code in parentheses on stderr.
  Output r = vpd().ctl({"vp9", "mtu=1400"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "(no-such-endpoint)")) << r.err;
  EXPECT_TRUE(contains(r.err, "vp9")) << r.err;
  EXPECT_EQ(r.out, "");
  r = vpd().ctl({"vp0", "mac=zz"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "(invalid-mac)")) << r.err;

  // 2: usage errors, found before vpd is asked (the socket does not matter).
  for (const std::string& socket : {vpd().socket(), path("nowhere.sock")}) {
    SCOPED_TRACE(socket);
    const std::vector<std::vector<std::string>> usage{
        {}, {"--bogus", "list"}, {"mtu=9000"}, {"-rxcsum"}, {"list", "extra"}};
    for (const auto& args : usage) {
      std::vector<std::string> argv{VPCTL_BINARY, "--socket", socket};
      argv.insert(argv.end(), args.begin(), args.end());
      Output u = run(argv);
      EXPECT_EQ(u.status, 2) << joined(args) << ": " << u.err;
      EXPECT_TRUE(contains(u.err, "vpctl")) << u.err;
    }
  }
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1400);  // `vpctl mtu=9000` changed nothing

  // 3: not reachable; the message names the socket and how to start vpd.
  const std::string nowhere = path("nowhere.sock");
  r = run({VPCTL_BINARY, "--socket", nowhere, "list"});
  EXPECT_EQ(r.status, 3);
  EXPECT_TRUE(contains(r.err, nowhere)) << r.err;
  EXPECT_TRUE(contains(r.err, "systemctl start vpd")) << r.err;

  EXPECT_EQ(vpd().stop(), 0);
  r = vpd().ctl({"vp0", "up"});
  EXPECT_EQ(r.status, 3);
  EXPECT_TRUE(contains(r.err, vpd().socket())) << r.err;
  EXPECT_FALSE(has_flag(link_json("vp0"), "UP"));
}

TEST_F(Lifecycle, vpctl_honours_VPD_SOCKET) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create"});
  Output r = run({VPCTL_BINARY, "list"}, {"VPD_SOCKET=" + vpd().socket()});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "vp0")) << r.out;

  r = run({VPCTL_BINARY, "vp0", "mtu=1600"}, {"VPD_SOCKET=" + vpd().socket()});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1600);

  const std::string elsewhere = path("elsewhere.sock");
  r = run({VPCTL_BINARY, "list"}, {"VPD_SOCKET=" + elsewhere});
  EXPECT_EQ(r.status, 3);
  EXPECT_TRUE(contains(r.err, elsewhere)) << r.err;

  // --socket wins over the environment.
  r = run({VPCTL_BINARY, "--socket", vpd().socket(), "list"}, {"VPD_SOCKET=" + elsewhere});
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST_F(Lifecycle, vpctl_list_show_version_and_json_output) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 type bridge"));
  EXPECT_TRUE(contains(ok({"list"}).out, "no endpoints")) << "an empty list says so";
  ok({"vp0", "create", "mac=02:00:00:00:00:0a", "mtu=9000", "bridge=br0", "address=192.168.1.1/24",
      "up", "peerfeats=0x19c3"});
  ok({"vp1", "create"});

  // The table: a header and one row per endpoint.
  const auto table = lines_of(ok({"list"}).out);
  ASSERT_EQ(table.size(), 3u) << ok({"list"}).out;
  for (const char* column :
       {"NAME", "TRANSPORT", "STATE", "MAC", "MTU", "BRIDGE", "ADDRESSES", "SOCKET"}) {
    EXPECT_TRUE(contains(table[0], column)) << table[0];
  }
  EXPECT_EQ(table[1].rfind("vp0 ", 0), 0u) << table[1];
  for (const char* cell :
       {"vhost-user", " up ", "02:00:00:00:00:0a", "9000", "br0", "192.168.1.1/24"}) {
    EXPECT_TRUE(contains(table[1], cell)) << cell << " not in: " << table[1];
  }
  EXPECT_EQ(table[2].rfind("vp1 ", 0), 0u) << table[2];
  EXPECT_TRUE(contains(table[2], " down ")) << table[2];

  // One endpoint, line by line.
  auto lines = show_lines(ok({"vp0"}).out);
  EXPECT_EQ(lines["name"], "vp0");
  EXPECT_EQ(lines["mac"], "02:00:00:00:00:0a");
  EXPECT_EQ(lines["mtu"], "9000");
  EXPECT_EQ(lines["bridge"], "br0");
  EXPECT_EQ(lines["addresses"], "192.168.1.1/24");
  EXPECT_EQ(lines["admin state"], "up");
  EXPECT_EQ(lines["peerfeats"], "0x19c3");
  EXPECT_EQ(lines["tun offloads"], "CSUM|TSO4|TSO6");
  EXPECT_EQ(lines["ifindex"], std::to_string(link_json("vp0").value("ifindex", -1)));
  EXPECT_EQ(lines["bind"], vpd().runtime_dir() + "/vp0.sock");
  EXPECT_TRUE(contains(lines["link"], "up")) << lines["link"];
  EXPECT_EQ(show_lines(ok({"vp1", "show"}).out)["name"], "vp1");

  // Versions of both sides.
  Output v = ok({"version"});
  EXPECT_TRUE(contains(v.out, "vpctl ")) << v.out;
  EXPECT_TRUE(contains(v.out, "vpd ")) << v.out;
  EXPECT_TRUE(contains(v.out, "2 endpoints")) << v.out;

  // --json parses, and says the same as the kernel.
  const json list = vpd().ctl_json({"list"});
  ASSERT_TRUE(list.is_array());
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["name"], "vp0");
  EXPECT_EQ(list[0]["status"]["kernel_mtu"], link_json("vp0")["mtu"]);
  EXPECT_EQ(list[1]["status"]["kernel_mac"], link_json("vp1")["address"]);
  const json hello = vpd().ctl_json({"version"});
  EXPECT_EQ(hello.value("daemon", ""), "vpd");
  EXPECT_EQ(hello.value("endpoints", 0), 2);
  Output j = vpd().ctl({"--json", "vp9"});
  EXPECT_EQ(j.status, 1);
  const json error = json::parse(j.out, nullptr, false);
  ASSERT_TRUE(error.is_object()) << j.out;
  EXPECT_EQ(error["error"]["code"], "no-such-endpoint");
  const json changed = vpd().ctl_json({"vp1", "mtu=1280"});
  EXPECT_EQ(changed.value("mtu", 0), 1280);
  EXPECT_EQ(link_json("vp1").value("mtu", 0), 1280);
}

}  // namespace
}  // namespace vp::test

namespace vp::test {
namespace {

TEST_F(Lifecycle, qemu_args_name_the_bind_socket_and_a_stable_guest_mac) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create"});
  const std::string first = ok({"vp0", "qemu-args"}).out;
  const std::string sock = vpd().runtime_dir() + "/vp0.sock";
  EXPECT_TRUE(contains(first, "-chardev socket,id=vp0,path=" + sock + ",reconnect=1")) << first;
  EXPECT_TRUE(contains(first, "share=on")) << first;
  const size_t at = first.find("virtio-net-pci,netdev=vp0,mac=");
  ASSERT_NE(at, std::string::npos) << first;
  const std::string guest_mac = first.substr(at + 30, 17);
  auto parsed = vp::net::parse_mac(guest_mac);
  ASSERT_TRUE(parsed) << guest_mac;
  EXPECT_TRUE(parsed->is_locally_administered());
  EXPECT_NE(guest_mac, show("vp0").value("mac", "")) << "guest and host ends differ";
  // The same after a restart.
  vpd().kill9();
  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(ok({"vp0", "qemu-args"}).out, first);
}

}  // namespace
}  // namespace vp::test

namespace vp::test {
namespace {

TEST_F(Lifecycle, bind_socket_gets_the_mode_owner_and_group_asked_for) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "mode=0640", "owner=65534", "group=65534"});
  const std::string sock = vpd().runtime_dir() + "/vp0.sock";
  struct stat st {};
  ASSERT_EQ(::stat(sock.c_str(), &st), 0) << "vpd listens on the default bind socket";
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_gid, 65534u);
  // Changing the mode re-creates the socket with it.
  ok({"vp0", "mode=0600"});
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // A user that does not exist is refused before anything changes.
  const std::string state = state_text();
  test::Run r = vpd().ctl({"vp0", "owner=no-such-user-here"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "(bad-value)")) << r.err;
  EXPECT_EQ(state_text(), state);
  // destroy removes the socket file with the endpoint.
  ok({"vp0", "destroy"});
  EXPECT_NE(::stat(sock.c_str(), &st), 0);
}

}  // namespace
}  // namespace vp::test

namespace vp::test {
namespace {

// (policy, rt_priority) of every thread of `pid`, from /proc/PID/task/*/stat.
std::vector<std::pair<int, int>> thread_scheduling(pid_t pid) {
  std::vector<std::pair<int, int>> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
    std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
    // Fields 40 (rt_priority) and 41 (policy), counted from 1; f[0] is field 3.
    if (f.size() > 38) out.emplace_back(std::stoi(f[38]), std::stoi(f[37]));
  }
  return out;
}

TEST_F(Lifecycle, priority_puts_the_endpoints_data_path_thread_in_sched_fifo) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "priority=10"});
  auto fifo_10 = [&] {
    for (const auto& [policy, prio] : thread_scheduling(vpd().pid())) {
      if (policy == SCHED_FIFO && prio == 10) return true;
    }
    return false;
  };
  EXPECT_TRUE(fifo_10()) << vpd().log();
  ok({"vp0", "priority=0"});
  EXPECT_FALSE(fifo_10());
  for (const auto& [policy, prio] : thread_scheduling(vpd().pid())) {
    EXPECT_EQ(policy, SCHED_OTHER) << "priority=0 is normal scheduling";
  }
}

}  // namespace
}  // namespace vp::test
