// End-to-end tier: libvirt runs the guest. Debian's libvirtd in session mode, started by the
// test as an unprivileged user (nobody) with its home, configuration and runtime directories
// in the test's directory — never the host's libvirt — defines a type='qemu' (TCG) domain with
// direct kernel boot, shared memfd memory and an <interface type='vhostuser'>, and QEMU runs
// as that user. Case one: vpd listens (bind=, owner=/allow= for that user, no mode=0666) and
// libvirt's QEMU dials (mode='client' with reconnect); the guest pings the bridge, virsh
// domiflist names the interface, and traffic resumes after vpd is killed and restarted under
// the running domain. Case two: QEMU listens (mode='server') and vpd dials (peer=).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "support/guest.hpp"
#include "support/harness.hpp"

namespace vp::test {
namespace {

constexpr uid_t kUser = 65534;  // nobody: libvirt's QEMU runs as this user
constexpr gid_t kGroup = 65534;
constexpr const char* kGuestMac = "52:54:00:00:00:02";

class LibvirtE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(guest_image_dir().empty())
        << "VPD_E2E_IMAGE_DIR is not set (see tests/CMakeLists.txt)";
    ASSERT_EQ(enter_private_netns(), "");
    ASSERT_TRUE(
        sh("ip link add br0 type bridge && ip link set br0 up && "
           "ip addr add 10.99.0.1/24 dev br0"));
    const std::string d = dir_.path();
    // The user's own directories; the guest's kernel and initramfs where it can read them.
    home_ = d + "/home";
    for (const std::string& sub : {home_, d + "/xdg-run"}) {
      ASSERT_EQ(::mkdir(sub.c_str(), 0700), 0) << sub;
      ASSERT_EQ(::chown(sub.c_str(), kUser, kGroup), 0) << sub;
    }
    for (const char* f : {"vmlinuz", "initramfs.cpio.gz"}) {
      std::filesystem::copy_file(guest_image_dir() + "/" + f, d + "/" + f);
      ::chmod((d + "/" + f).c_str(), 0644);
    }
    env_ = {"HOME=" + home_, "XDG_RUNTIME_DIR=" + d + "/xdg-run",
            "XDG_CONFIG_HOME=" + home_ + "/.config", "XDG_CACHE_HOME=" + home_ + "/.cache",
            "XDG_DATA_HOME=" + home_ + "/.local/share"};
    const vp::test::Run started = as_user({"libvirtd", "--timeout", "600", "--daemon"});
    ASSERT_EQ(started.status, 0) << "libvirtd (Debian's libvirt-daemon): " << started.err;
    vpd_ = std::make_unique<Vpd>(d + "/vpd");
    ASSERT_TRUE(sh("mkdir -p " + d + "/vpd && chmod 755 " + d + "/vpd"));
    ASSERT_EQ(vpd_->start(), "");
  }

  void TearDown() override {
    (void)virsh({"destroy", "vpdguest"});
    // libvirtd, and the virtlogd it started for the domain's log.
    for (const char* daemon : {"libvirtd", "virtlogd"}) {
      const std::string pid =
          file_text(dir_.path() + "/xdg-run/libvirt/" + std::string(daemon) + ".pid");
      if (!pid.empty()) ::kill(std::stoi(pid), SIGTERM);
    }
    if (HasFailure()) {
      std::cerr << "---- console ----\n"
                << file_text(home_ + "/console") << "---- QEMU log ----\n"
                << file_text(home_ + "/.cache/libvirt/qemu/log/vpdguest.log");
      if (vpd_) std::cerr << "---- vpd log ----\n" << vpd_->log();
    }
  }

  /// Runs `argv` as the unprivileged user, with its environment.
  vp::test::Run as_user(const std::vector<std::string>& argv) {
    std::vector<std::string> a{"setpriv", "--reuid=" + std::to_string(kUser),
                               "--regid=" + std::to_string(kGroup), "--clear-groups", "env"};
    a.insert(a.end(), env_.begin(), env_.end());
    a.insert(a.end(), argv.begin(), argv.end());
    return run(a, {}, std::chrono::seconds(120));
  }
  vp::test::Run virsh(std::vector<std::string> args) {
    args.insert(args.begin(), {"virsh", "-c", "qemu:///session"});
    return as_user(args);
  }

  /// The documented domain, with `source` as the vhostuser interface's <source> element.
  /// QEMU 7.2 under TCG needs vectors=0 on a vhost-user NIC, hence the <qemu:override>.
  std::string domain_xml(const std::string& source, int pingloop) const {
    const std::string d = dir_.path();
    return "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
           "  <name>vpdguest</name>\n"
           "  <memory unit='MiB'>256</memory>\n"
           "  <vcpu>1</vcpu>\n"
           "  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n"
           "  <os><type arch='x86_64' machine='pc'>hvm</type>\n"
           "    <kernel>" +
           d + "/vmlinuz</kernel><initrd>" + d +
           "/initramfs.cpio.gz</initrd>\n"
           "    <cmdline>console=ttyS0 quiet panic=-1 vp.ip=10.99.0.2/24 vp.peer=10.99.0.1 "
           "VP_PINGLOOP=" +
           std::to_string(pingloop) +
           "</cmdline>\n"
           "  </os>\n"
           "  <on_poweroff>destroy</on_poweroff>\n"
           "  <devices>\n"
           "    <interface type='vhostuser'>\n"
           "      <mac address='" +
           kGuestMac +
           "'/>\n"
           "      " +
           source +
           "\n"
           "      <model type='virtio'/>\n"
           "      <rom enabled='no'/>\n"
           "      <alias name='ua-net0'/>\n"
           "    </interface>\n"
           "    <serial type='file'><source path='" +
           home_ +
           "/console'/>"
           "<target port='0'/></serial>\n"
           "    <memballoon model='none'/>\n"
           "  </devices>\n"
           "  <qemu:override>\n"
           "    <qemu:device alias='ua-net0'>\n"
           "      <qemu:frontend><qemu:property name='vectors' type='unsigned' value='0'/>"
           "</qemu:frontend>\n"
           "    </qemu:device>\n"
           "  </qemu:override>\n"
           "</domain>\n";
  }

  void start_domain(const std::string& source, int pingloop) {
    const std::string path = home_ + "/vpdguest.xml";
    {
      std::ofstream out(path);
      out << domain_xml(source, pingloop);
    }
    ASSERT_EQ(::chown(path.c_str(), kUser, kGroup), 0);
    const vp::test::Run r = virsh({"create", path});
    ASSERT_EQ(r.status, 0) << "virsh create: " << r.err << r.out;
  }

  /// Waits for `needle` in the guest's console after byte `from`.
  bool console_shows(const std::string& needle, size_t from, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string c = file_text(home_ + "/console");
      if (c.size() > from && c.find(needle, from) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  TempDir dir_;
  std::string home_;
  std::vector<std::string> env_;
  std::unique_ptr<Vpd> vpd_;
};

TEST_F(LibvirtE2E, domain_dials_vpd_pings_the_bridge_and_resumes_after_vpd_restarts) {
  // The socket is the QEMU user's, not world-writable; allow= checks the peer too.
  ASSERT_EQ(vpd_->ctl({"vp0", "create", "bridge=br0", "owner=65534", "group=65534", "allow=65534",
                       std::string("guest-mac=") + kGuestMac, "up"})
                .status,
            0)
      << vpd_->log();
  const std::string sock = vpd_->runtime_dir() + "/vp0.sock";
  struct stat st {};
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_uid, kUser);
  start_domain("<source type='unix' path='" + sock +
                   "' mode='client'><reconnect enabled='yes' timeout='1'/></source>",
               90);
  ASSERT_TRUE(console_shows("VP-E2E-RESULT:", 0, std::chrono::seconds(120)))
      << file_text(home_ + "/console");
  EXPECT_TRUE(console_shows("VP-E2E-RESULT: ok", 0, std::chrono::seconds(1)));

  const vp::test::Run list = virsh({"domiflist", "vpdguest"});
  EXPECT_NE(list.out.find("vhostuser"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find(kGuestMac), std::string::npos) << list.out;
  const auto status = vpd_->ctl_json({"vp0"})["status"];
  EXPECT_EQ(status.value("guest", ""), "connected") << status.dump(2);
  EXPECT_GT(status["counters"].value("rx_packets", 0u), 2u);

  // vpd killed and started again under the running domain: QEMU reconnects, pings resume.
  vpd_->kill9();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ASSERT_EQ(vpd_->start(), "");
  const size_t mark = file_text(home_ + "/console").size();
  EXPECT_TRUE(console_shows("VP-E2E-PING: ok", mark, std::chrono::seconds(60)))
      << file_text(home_ + "/console").substr(mark) << vpd_->log();
}

TEST_F(LibvirtE2E, domain_serves_the_socket_and_vpd_dials_it) {
  // vpd dials first and redials until the socket exists: QEMU waits for its back-end
  // before the guest starts.
  const std::string sock = home_ + "/vp0-server.sock";
  ASSERT_EQ(vpd_->ctl({"vp0", "create", "bridge=br0", "peer=" + sock,
                       std::string("guest-mac=") + kGuestMac, "up"})
                .status,
            0)
      << vpd_->log();
  start_domain("<source type='unix' path='" + sock + "' mode='server'/>", 0);
  ASSERT_TRUE(console_shows("VP-E2E-RESULT:", 0, std::chrono::seconds(120)))
      << file_text(home_ + "/console");
  EXPECT_TRUE(console_shows("VP-E2E-RESULT: ok", 0, std::chrono::seconds(1)))
      << file_text(home_ + "/console");
}

}  // namespace
}  // namespace vp::test
