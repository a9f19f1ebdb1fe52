// vpctl vp0 libvirt-xml: the elements for each transport, from the endpoint's JSON.

#include "ctl/libvirt_xml.hpp"

#include <gtest/gtest.h>

namespace vp::ctl {
namespace {

using nlohmann::json;

json endpoint(std::string transport) {
  return json{{"name", "vp0"},
              {"transport", std::move(transport)},
              {"bind", "/run/vpd/vp0.sock"},
              {"peer", ""},
              {"queues", 1},
              {"mtu", 1500},
              {"guest_mac", "52:54:00:12:34:56"}};
}

TEST(LibvirtXml, vhost_user_bind_gives_a_client_interface_and_shared_memory) {
  auto x = libvirt_xml(endpoint("vhost-user"));
  ASSERT_TRUE(x) << x.error().message;
  EXPECT_EQ(x->interface,
            "<interface type='vhostuser'>\n"
            "  <mac address='52:54:00:12:34:56'/>\n"
            "  <model type='virtio'/>\n"
            "  <source type='unix' path='/run/vpd/vp0.sock' mode='client'>\n"
            "    <reconnect enabled='yes' timeout='1'/>\n"
            "  </source>\n"
            "</interface>\n");
  EXPECT_EQ(x->memory_backing,
            "<memoryBacking>\n  <source type='memfd'/>\n  <access mode='shared'/>\n"
            "</memoryBacking>\n");
  EXPECT_NE(x->note.find("owner=libvirt-qemu group=kvm"), std::string::npos) << x->note;
}

TEST(LibvirtXml, peer_gives_a_server_interface_with_queues_and_mtu) {
  json e = endpoint("vhost-user");
  e["bind"] = "";
  e["peer"] = "/run/qemu/g1.sock";
  e["queues"] = 4;
  e["mtu"] = 9000;
  auto x = libvirt_xml(e);
  ASSERT_TRUE(x);
  EXPECT_NE(x->interface.find("path='/run/qemu/g1.sock' mode='server'"), std::string::npos)
      << x->interface;
  EXPECT_NE(x->interface.find("<driver queues='4'/>"), std::string::npos);
  EXPECT_NE(x->interface.find("<mtu size='9000'/>"), std::string::npos);
}

TEST(LibvirtXml, tap_gives_an_unmanaged_ethernet_interface_without_shared_memory) {
  auto x = libvirt_xml(endpoint("tap"));
  ASSERT_TRUE(x);
  EXPECT_NE(x->interface.find("<interface type='ethernet'>"), std::string::npos);
  EXPECT_NE(x->interface.find("<target dev='vp0' managed='no'/>"), std::string::npos);
  EXPECT_EQ(x->memory_backing, "");
}

TEST(LibvirtXml, stream_is_refused_with_what_to_use_instead) {
  auto x = libvirt_xml(endpoint("stream"));
  ASSERT_FALSE(x);
  EXPECT_EQ(x.error().code, "unsupported");
  EXPECT_NE(x.error().message.find("transport=vhost-user"), std::string::npos);
}

TEST(LibvirtXml, attribute_values_are_escaped_and_comments_stay_valid) {
  json e = endpoint("vhost-user");
  e["bind"] = "/run/a'b&c--d.sock";
  auto x = libvirt_xml(e);
  ASSERT_TRUE(x);
  EXPECT_NE(x->interface.find("path='/run/a&apos;b&amp;c--d.sock'"), std::string::npos);
  const std::string out = format_libvirt_xml(*x);
  const size_t comment = out.rfind("<!-- ");
  ASSERT_NE(comment, std::string::npos);
  EXPECT_EQ(out.find("--", comment + 4), out.size() - 4) << "only the comment's end: " << out;
}

}  // namespace
}  // namespace vp::ctl
