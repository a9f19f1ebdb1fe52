// vpctl vp0 libvirt-xml against a real vpd: the elements it prints, put into a domain, pass
// libvirt's own schema check (virt-xml-validate, Debian's libvirt-clients), for each socket
// direction and for transport=tap; --json gives the same as data; stream is refused.

#include <gtest/gtest.h>

#include "vpd_fixture.hpp"

namespace vp::test {
namespace {

class LibvirtXmlCli : public VpdFixture {
 protected:
  void SetUp() override {
    VpdFixture::SetUp();
    ASSERT_EQ(vpd().start(), "");
  }

  // A minimal domain around what vpctl printed; true when libvirt's schema accepts it.
  ::testing::AssertionResult validates(const std::string& name) {
    const json x = vpd().ctl_json({name, "libvirt-xml"});
    if (!x.is_object()) return ::testing::AssertionFailure() << "no JSON from libvirt-xml";
    const std::string domain =
        "<domain type='qemu'>\n  <name>g</name>\n  <memory unit='MiB'>256</memory>\n" +
        x.value("memory_backing", "") +
        "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <devices>\n" +
        x.value("interface", "") + "  </devices>\n</domain>\n";
    const std::string file = path("domain.xml");
    write_text(file, domain);
    const vp::test::Run r = run({"virt-xml-validate", file, "domain"});
    if (r.status != 0) {
      return ::testing::AssertionFailure() << domain << r.out << r.err;
    }
    return ::testing::AssertionSuccess();
  }
};

TEST_F(LibvirtXmlCli, printed_elements_pass_libvirts_schema_for_each_transport) {
  ok({"vp0", "create", "queues=2", "mtu=9000", "guest-mac=52:54:00:12:34:56"});
  const Output text = ok({"vp0", "libvirt-xml"});
  EXPECT_TRUE(contains(text.out, "<interface type='vhostuser'>")) << text.out;
  EXPECT_TRUE(contains(text.out, "path='" + vpd().runtime_dir() + "/vp0.sock' mode='client'"));
  EXPECT_TRUE(contains(text.out, "<mac address='52:54:00:12:34:56'/>"));
  EXPECT_TRUE(contains(text.out, "<access mode='shared'/>"));
  EXPECT_TRUE(validates("vp0"));

  ok({"vp1", "create", "peer=/run/qemu/g1.sock", "-bind"});
  EXPECT_TRUE(contains(ok({"vp1", "libvirt-xml"}).out, "mode='server'"));
  EXPECT_TRUE(validates("vp1"));

  ok({"vp2", "create", "transport=tap", "owner=65534"});
  EXPECT_TRUE(contains(ok({"vp2", "libvirt-xml"}).out, "<target dev='vp2' managed='no'/>"));
  EXPECT_TRUE(validates("vp2"));

  ok({"vp3", "create", "transport=stream"});
  const Output r = vpd().ctl({"vp3", "libvirt-xml"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "(unsupported)")) << r.err;
}

}  // namespace
}  // namespace vp::test
