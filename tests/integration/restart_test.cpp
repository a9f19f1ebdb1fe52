// vpd restarts: `kill -9` and SIGTERM leave the TAP devices in the kernel and a new vpd
// re-adopts them as they were; a corrupt state file is set aside, never overwritten.

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "integration/vpd_fixture.hpp"

namespace vp::test {
namespace {

class Restart : public VpdFixture {
 protected:
  /// The files vpd set aside next to state.json (state.json.corrupt-*), sorted.
  std::vector<std::string> set_aside_files() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& f : std::filesystem::directory_iterator(vpd_state_dir(), ec)) {
      const std::string name = f.path().filename().string();
      if (name.rfind("state.json.corrupt-", 0) == 0) out.push_back(f.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string vpd_state_dir() const { return std::filesystem::path(state_path()).parent_path(); }

  /// A rich setup: vp0 with everything set, vp1 with defaults, vp2 a transport=tap one.
  void populate() {
    ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge && ip link set br0 up"));
    ok({"vp0", "create", "peer=" + path("g1.sock"), "bind=" + path("vp0.sock"),
        "mac=02:00:00:00:00:0a", "mtu=9000", "bridge=br0", "address=192.168.8.1/24",
        "address=fd00:8::1/64", "peerfeats=0x19c3", "-tso6", "-rxcsum", "priority=5", "legacy",
        "up"});
    ok({"vp1", "create"});
    ok({"vp2", "create", "transport=tap", "mtu=2000", "-txcsum"});
  }
};

TEST_F(Restart, kill9_and_restart_readopts_everything) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_NO_FATAL_FAILURE(populate());
  const json kernel_before = kernel_snapshot();
  const json shown_before = vpd().ctl_json({"list"});
  const json state_before = state_json();
  ASSERT_EQ(shown_before.size(), 3u);
  // What the restart must bring back, spelled out.
  const json vp0 = kernel_before["vp0"];
  EXPECT_EQ(vp0["mtu"], 9000);
  EXPECT_EQ(vp0["master"], "br0");
  EXPECT_EQ(vp0["up"], true);
  EXPECT_EQ(vp0["address"], "02:00:00:00:00:0a");
  EXPECT_EQ(vp0["addresses"], json::array({"192.168.8.1/24", "fd00:8::1/64"}));
  EXPECT_EQ(vp0["features"], features_for_tun_offloads("CSUM|TSO4"));

  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("restart " + std::to_string(round + 1));
    vpd().kill9();
    // The TAPs outlive vpd.
    for (const char* name : {"vp0", "vp1", "vp2"}) {
      const json link = link_json(name);
      ASSERT_TRUE(link.is_object()) << name << " vanished with vpd";
      EXPECT_EQ(link["ifindex"], kernel_before[name]["ifindex"]) << name;
    }
    ASSERT_EQ(vpd().start(), "");
    EXPECT_EQ(kernel_snapshot(), kernel_before);
    const json shown = vpd().ctl_json({"list"});
    EXPECT_EQ(shown, shown_before);
    EXPECT_EQ(state_json(), state_before);
    ASSERT_TRUE(shown.is_array() && shown.size() == 3u) << shown.dump();
    const json& e = shown[0];
    EXPECT_EQ(e["peer"], path("g1.sock"));
    EXPECT_EQ(e["bind"], path("vp0.sock"));
    EXPECT_EQ(e["peerfeats"], "0x19c3");
    EXPECT_EQ(e["legacy"], true);
    EXPECT_EQ(e["priority"], 5);
    EXPECT_EQ(e["status"]["tun_offloads"], "CSUM|TSO4");
    EXPECT_EQ(e["status"]["vnet_hdr_len"], 10);
    EXPECT_FALSE(contains_name(e["toggles"], "rxcsum")) << e["toggles"];
    EXPECT_EQ(e["status"]["problems"], json::array());
    EXPECT_EQ(shown[2]["transport"], "tap");
    EXPECT_EQ(shown[2]["bind"], "");
  }
  EXPECT_TRUE(contains(vpd().log(), "re-adopted")) << vpd().log();

  // The re-adopted endpoints are fully under control again.
  ok({"vp0", "mtu=1500", "-bridge", "-address=fd00:8::1/64", "tso6"});
  const json link = link_json("vp0");
  EXPECT_EQ(link.value("mtu", 0), 1500);
  EXPECT_FALSE(link.contains("master"));
  EXPECT_EQ(addresses_of("vp0"), std::vector<std::string>{"192.168.8.1/24"});
  EXPECT_EQ(tap_offload_features("vp0"), features_for_tun_offloads("CSUM|TSO4|TSO6"));
  ok({"vp1", "destroy"});
  EXPECT_TRUE(link_json("vp1").is_null());
}

TEST_F(Restart, sigterm_stop_leaves_the_taps_and_a_restart_adopts_them) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_NO_FATAL_FAILURE(populate());
  const json kernel_before = kernel_snapshot();
  const json shown_before = vpd().ctl_json({"list"});

  EXPECT_EQ(vpd().stop(), 0);
  EXPECT_TRUE(contains(vpd().log(), "TAP devices stay")) << vpd().log();
  for (const char* name : {"vp0", "vp1", "vp2"}) {
    const json link = link_json(name);
    ASSERT_TRUE(link.is_object()) << name << " was removed by a clean stop";
    EXPECT_EQ(link["ifindex"], kernel_before[name]["ifindex"]) << name;
    EXPECT_EQ(link["mtu"], kernel_before[name]["mtu"]) << name;
  }
  EXPECT_EQ(link_json("vp0").value("master", ""), "br0");
  EXPECT_TRUE(has_flag(link_json("vp0"), "UP"));
  EXPECT_EQ(addresses_of("vp0"), kernel_before["vp0"]["addresses"].get<std::vector<std::string>>());

  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(kernel_snapshot(), kernel_before);
  EXPECT_EQ(vpd().ctl_json({"list"}), shown_before);
}

TEST_F(Restart, restart_with_config_declarations_keeps_the_same_endpoints) {
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge"));
  // A named declaration and an unnamed one (which takes the next free name, vp1).
  write_config("vp0 mac=02:00:00:00:00:0a mtu=9000 bridge=br0 address=10.1.0.1/24 up\n" +
               std::string("peer=") + path("g.sock") + " mtu=2000\n");
  ASSERT_EQ(vpd().start(), "");
  ok({"vp5", "create", "mtu=1400"});  // a run-time one beside them
  const json kernel_before = kernel_snapshot();
  const json shown_before = vpd().ctl_json({"list"});
  ASSERT_TRUE(kernel_before.contains("vp0"));
  ASSERT_TRUE(kernel_before.contains("vp1"));
  ASSERT_TRUE(kernel_before.contains("vp5"));
  EXPECT_EQ(kernel_before["vp1"]["mtu"], 2000);
  EXPECT_EQ(show("vp1").value("peer", ""), path("g.sock"));

  vpd().kill9();
  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(kernel_snapshot(), kernel_before);
  EXPECT_EQ(vpd().ctl_json({"list"}), shown_before);
  EXPECT_TRUE(link_json("vp2").is_null()) << "the unnamed declaration made a second endpoint";

  EXPECT_EQ(vpd().stop(), 0);
  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(kernel_snapshot(), kernel_before);
  EXPECT_EQ(vpd().ctl_json({"list"}), shown_before);
}

TEST_F(Restart, generated_mac_is_the_same_after_restart_and_in_a_fresh_state) {
  ASSERT_EQ(vpd().start(), "");
  const std::string mac0 = vpd().ctl_json({"vp0", "create"}).value("mac", "");
  const std::string mac1 = vpd().ctl_json({"create"}).value("mac", "");
  ASSERT_FALSE(mac0.empty());
  vpd().kill9();
  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(show("vp0").value("mac", ""), mac0);
  EXPECT_EQ(link_json("vp0").value("address", ""), mac0);
  ok({"vp0", "destroy"});
  ok({"vp1", "destroy"});
  EXPECT_EQ(vpd().stop(), 0);

  // Another vpd with a state of its own derives the same addresses (machine id + name).
  TempDir other_dir;
  Vpd other(other_dir.path());
  ASSERT_EQ(other.start(), "");
  EXPECT_EQ(other.ctl_json({"vp0", "create"}).value("mac", ""), mac0);
  EXPECT_EQ(other.ctl_json({"vp1", "create"}).value("mac", ""), mac1);
  EXPECT_EQ(link_json("vp1").value("address", ""), mac1);
}

TEST_F(Restart, corrupt_state_file_is_set_aside_reported_and_not_overwritten) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "mtu=9000"});
  EXPECT_EQ(vpd().stop(), 0);
  const std::string good = state_text();
  const std::string truncated = good.substr(0, good.size() / 2);  // a torn write
  write_text(state_path(), truncated);

  ASSERT_EQ(vpd().start(), "");
  auto aside = set_aside_files();
  ASSERT_EQ(aside.size(), 1u) << vpd().log();
  EXPECT_EQ(read_text(aside[0]), truncated);
  const std::string log = vpd().log();
  EXPECT_TRUE(contains(log, "corrupt")) << log;
  EXPECT_TRUE(contains(log, aside[0])) << "the log should say where the file went:\n" << log;
  EXPECT_NE(state_text(), truncated);
  EXPECT_EQ(vpd().ctl_json({"list"}), json::array());
  // vpd does not remove what it no longer knows about.
  EXPECT_TRUE(link_json("vp0").is_object());

  // New state is written next to it; the set-aside copy stays as it was.
  ok({"vp1", "create"});
  EXPECT_EQ(state_json()["endpoints"].size(), 1u) << state_text();
  EXPECT_EQ(read_text(aside[0]), truncated);

  // A second corrupt file (maybe within the same second) does not replace the first.
  EXPECT_EQ(vpd().stop(), 0);
  const std::string wrong_shape = R"({"version":1,"endpoints":[{"name":"vp0"}]})";
  write_text(state_path(), wrong_shape);
  ASSERT_EQ(vpd().start(), "");
  aside = set_aside_files();
  ASSERT_EQ(aside.size(), 2u) << vpd().log();
  std::vector<std::string> contents{read_text(aside[0]).value_or(""),
                                    read_text(aside[1]).value_or("")};
  std::sort(contents.begin(), contents.end());
  std::vector<std::string> expected{truncated, wrong_shape};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(contents, expected);
  EXPECT_TRUE(vpd().alive());
}

TEST_F(Restart, tap_deleted_while_vpd_was_down_is_recreated_as_saved) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge"));
  ok({"vp0", "create", "mac=02:00:00:00:00:0a", "mtu=9000", "bridge=br0", "address=10.3.0.1/24",
      "peerfeats=0x19c3", "up"});
  EXPECT_EQ(vpd().stop(), 0);
  ASSERT_TRUE(sh("ip link del vp0"));

  ASSERT_EQ(vpd().start(), "");
  const json link = link_json("vp0");
  ASSERT_TRUE(link.is_object()) << vpd().log();
  EXPECT_EQ(link["linkinfo"].value("info_kind", ""), "tun");
  EXPECT_EQ(link.value("address", ""), "02:00:00:00:00:0a");
  EXPECT_EQ(link.value("mtu", 0), 9000);
  EXPECT_EQ(link.value("master", ""), "br0");
  EXPECT_TRUE(has_flag(link, "UP"));
  EXPECT_EQ(addresses_of("vp0"), std::vector<std::string>{"10.3.0.1/24"});
  EXPECT_EQ(tap_offload_features("vp0"), features_for_tun_offloads("CSUM|TSO4|TSO6"));
  EXPECT_EQ(show("vp0")["status"]["problems"], json::array());
}

TEST_F(Restart, foreign_interface_in_place_of_an_endpoint_is_not_taken_over) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "mtu=9000", "address=10.2.0.1/24", "up"});
  EXPECT_EQ(vpd().stop(), 0);
  ASSERT_TRUE(sh("ip link del vp0 && ip link add vp0 type bridge && ip link set vp0 mtu 1400"));
  const json foreign = kernel_snapshot();
  const std::string state_before = state_text();

  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(kernel_snapshot(), foreign);
  const json e = show("vp0");
  ASSERT_TRUE(e.is_object());
  ASSERT_FALSE(e["status"]["problems"].empty()) << e.dump(2);
  EXPECT_TRUE(contains(e["status"]["problems"][0].get<std::string>(), "vp0"));
  EXPECT_NE(e["status"]["ifindex"], foreign["vp0"]["ifindex"]);
  EXPECT_TRUE(contains(ok({"list"}).out, "!")) << "vpctl list should flag the endpoint";
  EXPECT_EQ(state_text(), state_before) << "the saved endpoint must not be lost";

  refused({"vp0", "mtu=1500"}, "name-taken");
  EXPECT_EQ(kernel_snapshot(), foreign);
  ok({"vp0", "destroy"});
  EXPECT_EQ(kernel_snapshot(), foreign) << "destroy removed an interface vpd does not own";
}

TEST_F(Restart, endpoint_whose_bridge_vanished_is_kept_and_can_be_repaired_or_destroyed) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge"));
  ok({"vp0", "create", "bridge=br0", "mtu=9000", "address=10.5.0.1/24", "up"});
  ok({"vp1", "create", "bridge=br0"});
  EXPECT_EQ(vpd().stop(), 0);
  ASSERT_TRUE(sh("ip link del br0"));
  const std::string state_before = state_text();
  const int ifindex0 = link_json("vp0").value("ifindex", -1);

  ASSERT_EQ(vpd().start(), "");
  json e = show("vp0");
  ASSERT_FALSE(e["status"]["problems"].empty()) << e.dump(2);
  EXPECT_TRUE(contains(e["status"]["problems"][0].get<std::string>(), "br0"));
  EXPECT_EQ(e["bridge"], "br0");
  EXPECT_EQ(state_text(), state_before) << "the saved bridge= must not be dropped";
  // The TAP is still vpd's endpoint: vpctl reports it, not "absent".
  EXPECT_EQ(e["status"]["ifindex"], ifindex0);

  // Repair: the bridge comes back and the endpoint is told again.
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge"));
  ok({"vp0", "bridge=br0"});
  e = show("vp0");
  EXPECT_EQ(e["status"]["problems"], json::array());
  EXPECT_EQ(link_json("vp0").value("master", ""), "br0");
  EXPECT_EQ(link_json("vp0").value("ifindex", 0), ifindex0);

  // Destroy: the TAP goes too, even though it was never adopted after the restart.
  ASSERT_TRUE(sh("ip link del br0"));
  EXPECT_EQ(vpd().stop(), 0);
  ASSERT_EQ(vpd().start(), "");
  ASSERT_FALSE(show("vp1")["status"]["problems"].empty());
  ok({"vp1", "destroy"});
  EXPECT_TRUE(link_json("vp1").is_null()) << "vpctl vp1 destroy left the TAP in the kernel";
}

TEST_F(Restart, refused_create_over_a_leftover_tap_leaves_it_in_place) {
  // A TAP of an earlier vpd whose state is gone (another state directory here).
  {
    TempDir old_dir;
    Vpd old(old_dir.path());
    ASSERT_EQ(old.start(), "");
    ASSERT_EQ(old.ctl({"vp0", "create", "mtu=9000", "address=10.6.0.1/24"}).status, 0);
    old.kill9();
  }
  ASSERT_TRUE(link_json("vp0").is_object());
  ASSERT_TRUE(sh("echo 1 > /proc/sys/net/ipv6/conf/vp0/disable_ipv6"));
  ASSERT_EQ(vpd().start(), "");
  const json before = snapshot();

  refused({"vp0", "create", "mtu=1400", "address=fd00:6::1/64"}, "system");
  EXPECT_EQ(snapshot(), before);
  EXPECT_TRUE(link_json("vp0").is_object()) << "a refused create deleted an existing TAP";
}

}  // namespace
}  // namespace vp::test
