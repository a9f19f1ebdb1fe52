// Changes made behind vpd's back, with ip(8) in the test's namespace: vpd puts back what an
// endpoint's settings say (up/down, MTU, MAC, bridge port, a deleted TAP re-created), records
// as the endpoint's problem what it cannot (the bridge is gone, the TAP was renamed), and
// clears it when the kernel lets it match again. The saved state never changes.

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <thread>

#include "vpd_fixture.hpp"

namespace vp::test {
namespace {

class LinkWatch : public VpdFixture {
 protected:
  void SetUp() override {
    VpdFixture::SetUp();
    ASSERT_TRUE(sh("ip link add br0 type bridge && ip link set br0 up"));
    ASSERT_EQ(vpd().start(), "");
    ok({"vp0", "create", "bridge=br0", "mtu=1400", "mac=52:54:00:aa:00:01", "address=10.93.0.1/24",
        "up"});
    saved_ = state_text();
  }

  /// Waits up to 5 s for `done`.
  static bool eventually(const std::function<bool()>& done) {
    for (int i = 0; i < 500; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  /// vp0 as its settings say: up, MTU 1400, the MAC, on br0, with its address.
  static bool as_configured() {
    const json l = link_json("vp0");
    return l.is_object() && has_flag(l, "UP") && l.value("mtu", 0) == 1400 &&
           l.value("address", "") == "52:54:00:aa:00:01" && l.value("master", "") == "br0" &&
           addresses_of("vp0") == std::vector<std::string>{"10.93.0.1/24"};
  }

  json problems() { return show("vp0")["status"].value("problems", json::array()); }

  std::string saved_;
};

TEST_F(LinkWatch, settings_changed_with_ip_are_put_back) {
  for (const char* change :
       {"ip link set vp0 down", "ip link set vp0 mtu 9000",
        "ip link set vp0 address 52:54:00:bb:00:02", "ip link set vp0 nomaster"}) {
    ASSERT_TRUE(sh(change)) << change;
    EXPECT_TRUE(eventually(as_configured)) << change << ": " << link_json("vp0").dump();
  }
  EXPECT_TRUE(contains(vpd().log(), "vp0: changed behind vpd's back (down)")) << vpd().log();
  EXPECT_TRUE(contains(vpd().log(), "(mtu 9000)"));
  EXPECT_EQ(problems().size(), 0u);
  EXPECT_EQ(state_text(), saved_);
}

TEST_F(LinkWatch, a_deleted_tap_is_re_created_with_everything_vpd_owns) {
  const int ifindex = link_json("vp0").value("ifindex", 0);
  ASSERT_TRUE(sh("ip link del vp0"));
  EXPECT_TRUE(eventually([&] {
    const json l = link_json("vp0");
    return l.is_object() && l.value("ifindex", 0) != ifindex && as_configured();
  })) << link_json("vp0").dump()
      << vpd().log();
  EXPECT_TRUE(contains(vpd().log(), "was deleted")) << vpd().log();
  EXPECT_EQ(show("vp0")["status"].value("ifindex", 0), link_json("vp0").value("ifindex", -1));
  EXPECT_EQ(problems().size(), 0u);
  // The new TAP serves guests: vpd listens on the endpoint's socket again.
  EXPECT_EQ(show("vp0")["status"].value("guest", ""), "listening");
  EXPECT_TRUE(contains(show("vp0")["status"].value("socket", ""), "vp0"));
  EXPECT_EQ(state_text(), saved_);
}

TEST_F(LinkWatch, a_deleted_bridge_is_a_problem_until_it_comes_back) {
  ASSERT_TRUE(sh("ip link del br0"));
  ASSERT_TRUE(eventually([&] { return !problems().empty(); })) << show("vp0").dump(2);
  EXPECT_TRUE(contains(problems().dump(), "br0")) << problems().dump();
  EXPECT_TRUE(contains(ok({"vp0"}).out, "br0")) << "vpctl vp0 says why";
  EXPECT_TRUE(contains(vpd().log(), "bridge br0 is gone")) << vpd().log();
  // The operator re-creates it: vpd puts the port back and the problem goes.
  ASSERT_TRUE(sh("ip link add br0 type bridge && ip link set br0 up"));
  EXPECT_TRUE(eventually(as_configured)) << link_json("vp0").dump();
  EXPECT_TRUE(eventually([&] { return problems().empty(); })) << problems().dump();
  EXPECT_TRUE(contains(vpd().log(), "vp0: matches its settings again"));
  EXPECT_EQ(state_text(), saved_);
}

TEST_F(LinkWatch, a_renamed_tap_is_a_problem_until_it_is_renamed_back) {
  ASSERT_TRUE(sh("ip link set vp0 down && ip link set vp0 name other0"));
  ASSERT_TRUE(eventually([&] { return !problems().empty(); })) << show("vp0").dump(2);
  EXPECT_TRUE(contains(problems().dump(), "renamed to other0")) << problems().dump();
  EXPECT_TRUE(link_json("other0").is_object()) << "vpd does not fight the rename";
  ASSERT_TRUE(sh("ip link set other0 name vp0"));
  EXPECT_TRUE(eventually(as_configured)) << link_json("vp0").dump();
  EXPECT_TRUE(eventually([&] { return problems().empty(); })) << problems().dump();
  EXPECT_EQ(state_text(), saved_);
}

}  // namespace
}  // namespace vp::test
