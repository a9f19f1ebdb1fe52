// Declared endpoints: vpd.conf (checked with --check-config, applied at start and on
// SIGHUP) and the io-pkt style command line `peer=…,bind=…,mac=…,peer=…`.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "integration/vpd_fixture.hpp"

namespace vp::test {
namespace {

class Config : public VpdFixture {
 protected:
  Output check_config(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv{VPD_BINARY, "--check-config", "--config", vpd().config_path()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv);
  }
};

TEST_F(Config, check_config_accepts_a_good_file_and_touches_nothing) {
  write_config(
      "# endpoints of this host\n"
      "\n"
      "vp0 mac=02:00:00:00:00:0a mtu=9000 bridge=br0 address=192.168.1.1/24 up   # uplink\n"
      "name=guest peer=/run/qemu/g1/p2p.sock peerfeats=0x19c3 -tso6\n"
      "vp5 transport=tap legacy priority=10\n"
      "vp6 transport=stream bind=/run/vpd/s.sock peerfeats=0\n");
  Output r = check_config();
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, vpd().config_path())) << r.out;
  EXPECT_TRUE(contains(r.out, "4 endpoint declarations")) << r.out;
  // Only a check: no interface, no state, no socket.
  EXPECT_EQ(link_names(), std::vector<std::string>{"lo"});
  EXPECT_FALSE(read_text(state_path()).has_value());
  EXPECT_FALSE(read_text(vpd().socket()).has_value());
}

TEST_F(Config, check_config_refuses_a_bad_file_naming_file_and_line) {
  struct Case {
    std::string text;
    int line;
  };
  const Case cases[] = {
      {"vp0 mtu=9000\n# fine so far\nvp1 bogus=1\n", 3},
      {"\n\nvp0 mac=01:00:00:00:00:01\n", 3},
      {"vp0 mac=02:00:00:00:00:01\nvp1 mac=zz\n", 2},
      {"vp0 mtu=9000\nvp1 mtu=1400\nvp0 up\n", 3},  // vp0 a second time
      {"vp0 transport=stream peerfeats=0x3\n", 1},
      {"# a\n# b\n# c\nvp0 create mtu=9000\n", 4},
      {"vp0 mtu=70000\n", 1},
      {"vp0 mtu=1500\n   \nvp1 peer=relative.sock\n", 3},
      {"vp0 name=guest\n", 1},
      {"vp0 peer=/x/a.sock bind=/x/a.sock\n", 1},
      {"vp0 up down\n", 1},
      {"vp0 address=300.1.1.1/24\n", 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    write_config(c.text);
    Output r = check_config();
    EXPECT_NE(r.status, 0);
    const std::string where = vpd().config_path() + ":" + std::to_string(c.line) + ":";
    EXPECT_TRUE(contains(r.err, where)) << "expected " << where << " in: " << r.err;
    EXPECT_FALSE(contains(r.out, "no errors")) << r.out;
    // And vpd does not start with it.
    write_text(vpd().log_path(), "");
    const std::string why = vpd().start();
    EXPECT_NE(why, "") << "vpd started with a bad config";
    EXPECT_TRUE(contains(why, where)) << why;
    vpd().kill9();
    EXPECT_EQ(link_names(), std::vector<std::string>{"lo"});
  }
}

TEST_F(Config, declarations_create_endpoints_at_start) {
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge"));
  const std::string config =
      "vp0 mac=02:00:00:00:00:0a mtu=9000 bridge=br0 address=10.1.0.1/24 address=fd00:1::1/64 "
      "up\n"
      "peer=" +
      path("g.sock") +
      " peerfeats=0x19c3\n"
      "vp7 transport=tap -tso4\n";
  write_config(config);
  ASSERT_EQ(vpd().start(), "");

  const json vp0 = link_json("vp0");
  ASSERT_TRUE(vp0.is_object()) << vpd().log();
  EXPECT_EQ(vp0["linkinfo"].value("info_kind", ""), "tun");
  EXPECT_EQ(vp0.value("address", ""), "02:00:00:00:00:0a");
  EXPECT_EQ(vp0.value("mtu", 0), 9000);
  EXPECT_EQ(vp0.value("master", ""), "br0");
  EXPECT_TRUE(has_flag(vp0, "UP"));
  EXPECT_EQ(addresses_of("vp0"), (std::vector<std::string>{"10.1.0.1/24", "fd00:1::1/64"}));
  EXPECT_EQ(show("vp0")["status"]["declared"],
            "vp0 mac=02:00:00:00:00:0a mtu=9000 bridge=br0 address=10.1.0.1/24 "
            "address=fd00:1::1/64 up");

  // The unnamed line takes the next free name.
  const json vp1 = show("vp1");
  ASSERT_TRUE(vp1.is_object()) << vpd().log();
  EXPECT_EQ(vp1["peer"], path("g.sock"));
  EXPECT_EQ(vp1["status"]["tun_offloads"], "CSUM|TSO4|TSO6");
  EXPECT_EQ(tap_offload_features("vp1"), features_for_tun_offloads("CSUM|TSO4|TSO6"));
  EXPECT_TRUE(link_json("vp1").is_object());

  const json vp7 = show("vp7");
  ASSERT_TRUE(vp7.is_object());
  EXPECT_EQ(vp7["transport"], "tap");
  EXPECT_EQ(feature_active("vp7", "tx-tcp-segmentation"), false);
  EXPECT_EQ(feature_active("vp7", "tx-tcp6-segmentation"), true);

  EXPECT_EQ(state_json()["endpoints"].size(), 3u) << state_text();
  std::string ready;
  for (const auto& note : vpd().notifications()) {
    if (contains(note, "READY=1")) ready = note;
  }
  EXPECT_TRUE(contains(ready, "STATUS=3 endpoints")) << ready;
}

TEST_F(Config, name_prefix_declaration_creates_prefix0) {
  write_config("name=guest mtu=2000\nname=guest\n");
  ASSERT_EQ(check_config().status, 0);
  ASSERT_EQ(vpd().start(), "");
  const json guest0 = link_json("guest0");
  ASSERT_TRUE(guest0.is_object()) << vpd().log();
  EXPECT_EQ(guest0.value("mtu", 0), 2000);
  EXPECT_TRUE(link_json("guest1").is_object()) << vpd().log();
  EXPECT_EQ(vpd().ctl_json({"list"}).size(), 2u);
}

TEST_F(Config, unchanged_declaration_keeps_run_time_changes_and_changed_one_is_applied) {
  ASSERT_TRUE(sh("ip link add br0 address 02:bb:00:00:00:01 type bridge"));
  write_config("vp0 mtu=9000 address=10.1.0.1/24\n");
  ASSERT_EQ(vpd().start(), "");
  ASSERT_EQ(link_json("vp0").value("mtu", 0), 9000);
  ok({"vp0", "mtu=1400", "up", "bridge=br0", "address=10.1.0.2/24"});
  const json changed = kernel_snapshot()["vp0"];
  EXPECT_EQ(changed["mtu"], 1400);

  // Same declaration: the run-time changes survive kill -9 and a clean stop.
  vpd().kill9();
  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(kernel_snapshot()["vp0"], changed);
  EXPECT_EQ(vpd().stop(), 0);
  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(kernel_snapshot()["vp0"], changed);
  EXPECT_EQ(show("vp0")["mtu"], 1400);

  // A changed declaration is applied (what it says), on top of the run-time changes.
  vpd().kill9();
  write_config("vp0 mtu=8000 address=10.1.0.1/24\n");
  ASSERT_EQ(vpd().start(), "");
  json link = link_json("vp0");
  EXPECT_EQ(link.value("mtu", 0), 8000);
  EXPECT_EQ(link.value("ifindex", 0), changed["ifindex"]);
  EXPECT_TRUE(has_flag(link, "UP"));
  EXPECT_EQ(link.value("master", ""), "br0");
  EXPECT_EQ(addresses_of("vp0"), (std::vector<std::string>{"10.1.0.1/24", "10.1.0.2/24"}));
  EXPECT_EQ(show("vp0")["status"]["declared"], "vp0 mtu=8000 address=10.1.0.1/24");

  // ... once: a later run-time change survives the next restart again.
  ok({"vp0", "mtu=1300"});
  EXPECT_EQ(vpd().stop(), 0);
  ASSERT_EQ(vpd().start(), "");
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1300);
}

TEST_F(Config, sighup_rereads_the_config) {
  write_config("vp0 mtu=9000\n");
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "up", "address=10.4.0.1/24"});
  const json vp0_before = kernel_snapshot()["vp0"];

  // A new line makes a new endpoint; the running one is left alone.
  write_config("vp0 mtu=9000\nvp1 mtu=2000\n");
  ASSERT_TRUE(reload()) << vpd().log();
  const json vp1 = link_json("vp1");
  ASSERT_TRUE(vp1.is_object()) << vpd().log();
  EXPECT_EQ(vp1["linkinfo"].value("info_kind", ""), "tun");
  EXPECT_EQ(vp1.value("mtu", 0), 2000);
  EXPECT_EQ(kernel_snapshot()["vp0"], vp0_before);
  EXPECT_EQ(state_json()["endpoints"].size(), 2u) << state_text();

  // A bad file is refused as a whole: nothing changes, vpd keeps running.
  const json before = snapshot();
  write_config("vp0 mtu=9000\nvp1 mtu=2100\nvp2 bogus=1\n");
  ASSERT_TRUE(reload()) << vpd().log();
  EXPECT_TRUE(vpd().alive());
  EXPECT_TRUE(contains(vpd().log(), "reload refused")) << vpd().log();
  EXPECT_TRUE(contains(vpd().log(), vpd().config_path() + ":3:")) << vpd().log();
  EXPECT_EQ(snapshot(), before);
  EXPECT_TRUE(link_json("vp2").is_null());

  // A changed line is applied; an unchanged one still is not.
  write_config("vp0 mtu=9000\nvp1 mtu=2100\n");
  ASSERT_TRUE(reload()) << vpd().log();
  EXPECT_EQ(link_json("vp1").value("mtu", 0), 2100);
  EXPECT_EQ(kernel_snapshot()["vp0"], vp0_before);

  // A line that goes away leaves its endpoint running, as a run-time one.
  const json vp1_before = kernel_snapshot()["vp1"];
  write_config("vp0 mtu=9000\n");
  ASSERT_TRUE(reload()) << vpd().log();
  EXPECT_EQ(kernel_snapshot()["vp1"], vp1_before);
  EXPECT_EQ(show("vp1")["status"]["declared"], "");
  EXPECT_EQ(kernel_snapshot()["vp0"], vp0_before);
  ok({"list"});
}

TEST_F(Config, io_pkt_command_line_creates_one_endpoint_per_peer) {
  const std::string a = path("a.sock"), b = path("b.sock"), c = path("c.sock"), d = path("d.sock");
  const std::string spec =
      "peer=" + a + ",bind=" + b + ",mac=02:00:00:00:00:0a,peer=" + c + ",bind=" + d;
  Output checked = check_config({spec});
  EXPECT_EQ(checked.status, 0) << checked.err;
  EXPECT_TRUE(contains(checked.out, "2 endpoint declarations")) << checked.out;

  ASSERT_EQ(vpd().start({spec}), "");
  const json vp0 = show("vp0");
  const json vp1 = show("vp1");
  ASSERT_TRUE(vp0.is_object() && vp1.is_object()) << vpd().log();
  EXPECT_EQ(vp0["peer"], a);
  EXPECT_EQ(vp0["bind"], b);
  EXPECT_EQ(vp0["mac"], "02:00:00:00:00:0a");
  EXPECT_EQ(vp1["peer"], c);
  EXPECT_EQ(vp1["bind"], d);
  EXPECT_NE(vp1["mac"], "02:00:00:00:00:0a");
  EXPECT_EQ(link_json("vp0").value("address", ""), "02:00:00:00:00:0a");
  EXPECT_EQ(link_json("vp1").value("address", ""), vp1["mac"]);
  EXPECT_EQ(link_names(), (std::vector<std::string>{"lo", "vp0", "vp1"}));

  // The same command line again: the same two endpoints, no new ones.
  const json kernel_before = kernel_snapshot();
  vpd().kill9();
  ASSERT_EQ(vpd().start({spec}), "");
  EXPECT_EQ(kernel_snapshot(), kernel_before);
  EXPECT_EQ(vpd().ctl_json({"list"}).size(), 2u);

  // Split over several arguments, as a shell user might write it.
  vpd().kill9();
  ASSERT_EQ(
      vpd().start({"peer=" + a + ",bind=" + b, "mac=02:00:00:00:00:0a,peer=" + c, "bind=" + d}),
      "");
  EXPECT_EQ(link_names(), (std::vector<std::string>{"lo", "vp0", "vp1"}));
  EXPECT_EQ(show("vp0").value("mac", ""), "02:00:00:00:00:0a");
  EXPECT_EQ(show("vp1").value("bind", ""), d);
}

TEST_F(Config, changed_unnamed_declaration_is_applied_to_its_endpoint) {
  // io-pkt style: the first peer= group is vp0, the second vp1; editing a group changes
  // that endpoint (here: a MAC is added to the first one).
  const std::string a = path("a.sock"), b = path("b.sock"), c = path("c.sock");
  ASSERT_EQ(vpd().start({"peer=" + a + ",bind=" + b + ",peer=" + c}), "");
  const int ifindex = link_json("vp0").value("ifindex", -1);
  ASSERT_TRUE(link_json("vp1").is_object()) << vpd().log();
  vpd().kill9();

  ASSERT_EQ(vpd().start({"peer=" + a + ",bind=" + b + ",mac=02:00:00:00:00:0a,mtu=9000,peer=" + c}),
            "");
  const json link = link_json("vp0");
  EXPECT_EQ(link.value("ifindex", 0), ifindex);
  EXPECT_EQ(link.value("address", ""), "02:00:00:00:00:0a") << vpd().log();
  EXPECT_EQ(link.value("mtu", 0), 9000) << vpd().log();
  EXPECT_EQ(show("vp0").value("peer", ""), a);
  EXPECT_EQ(link_names(), (std::vector<std::string>{"lo", "vp0", "vp1"}));
  EXPECT_EQ(vpd().ctl_json({"list"}).size(), 2u);
  EXPECT_FALSE(contains(vpd().log(), "error")) << vpd().log();

  // The same in vpd.conf: an unnamed line that gains a setting.
  vpd().kill9();
  write_config("peer=" + path("e.sock") + "\n");
  ASSERT_EQ(vpd().start(), "");
  const std::string declared_as = vpd().ctl_json({"list"}).back().value("name", "");
  ASSERT_EQ(declared_as, "vp2") << vpd().log();
  write_config("peer=" + path("e.sock") + " mtu=2000\n");
  ASSERT_TRUE(reload());
  EXPECT_EQ(link_json("vp2").value("mtu", 0), 2000) << vpd().log();
  EXPECT_TRUE(link_json("vp3").is_null()) << vpd().log();
}

TEST_F(Config, io_pkt_command_line_with_name_prefix) {
  const std::string spec = "peer=" + path("a.sock") + ",name=guest,peer=" + path("c.sock");
  ASSERT_EQ(check_config({spec}).status, 0);
  ASSERT_EQ(vpd().start({spec}), "");
  EXPECT_TRUE(link_json("guest0").is_object()) << vpd().log();
  EXPECT_TRUE(link_json("vp0").is_object()) << vpd().log();
  EXPECT_EQ(show("guest0").value("peer", ""), path("a.sock"));
}

}  // namespace
}  // namespace vp::test
