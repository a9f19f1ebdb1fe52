// The VM name vpd shows for a front-end, read from its /proc/PID/cmdline at connect.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <initializer_list>
#include <string>

#include "sys/unix_socket.hpp"

namespace vp {
namespace {

// argv words joined the way /proc/PID/cmdline has them: each ends with a NUL.
std::string cmdline(std::initializer_list<std::string> words) {
  std::string out;
  for (const auto& w : words) out += w + '\0';
  return out;
}

TEST(VmNameFromCmdline, qemu_name_guest_key_as_libvirt_writes_it) {
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"/usr/bin/qemu-system-x86_64", "-name",
                                          "guest=web1,debug-threads=on", "-m", "1024"})),
            "web1");
}

TEST(VmNameFromCmdline, qemu_name_as_a_plain_value) {
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"qemu-system-x86_64", "-m", "256M", "-name", "g1"})),
            "g1");
}

TEST(VmNameFromCmdline, qemu_name_first_part_with_other_keys) {
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"qemu", "-name", "db,process=qemu-db"})), "db");
}

TEST(VmNameFromCmdline, double_dash_and_equals_forms) {
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"qemu", "--name", "g2"})), "g2");
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"qemu", "-name=guest=g3"})), "g3");
}

TEST(VmNameFromCmdline, doubled_comma_is_part_of_the_name) {
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"qemu", "-name", "guest=a,,b,debug-threads=on"})), "a,b");
}

TEST(VmNameFromCmdline, cloud_hypervisor_has_no_name) {
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"cloud-hypervisor", "--kernel", "vmlinux", "--net",
                                          "vhost_user=true,socket=/run/vpd/vp0.sock"})),
            "");
}

TEST(VmNameFromCmdline, name_without_a_value_or_empty_cmdline) {
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"qemu", "-name"})), "");
  EXPECT_EQ(vm_name_from_cmdline(""), "");
  // Only keys, none of them guest=: no name.
  EXPECT_EQ(vm_name_from_cmdline(cmdline({"qemu", "-name", "debug-threads=on"})), "");
}

TEST(DescribePeer, a_socketpair_names_this_process) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  const PeerProcess who = describe_peer(fds[0]);
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_EQ(who.credentials.pid, ::getpid());
  EXPECT_EQ(who.credentials.uid, ::getuid());
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self);
  ASSERT_GT(n, 0);
  EXPECT_EQ(who.exe, std::string(self, static_cast<size_t>(n)));
  EXPECT_EQ(who.vm_name, "");
  EXPECT_LE(std::chrono::system_clock::now() - who.since, std::chrono::seconds(5));
}

TEST(IsQemuExecutable, names_of_qemu_system_emulators) {
  EXPECT_TRUE(is_qemu_executable("/usr/bin/qemu-system-x86_64"));
  EXPECT_TRUE(is_qemu_executable("/usr/bin/qemu-system-aarch64 (deleted)"));
  EXPECT_TRUE(is_qemu_executable("/usr/libexec/qemu-kvm"));
  EXPECT_TRUE(is_qemu_executable("qemu-system-x86_64"));
}

TEST(IsQemuExecutable, other_front_ends_and_look_alikes_are_not) {
  EXPECT_FALSE(is_qemu_executable("/usr/bin/cloud-hypervisor"));
  EXPECT_FALSE(is_qemu_executable("/usr/bin/dpdk-testpmd"));
  EXPECT_FALSE(is_qemu_executable("/usr/bin/crosvm"));
  EXPECT_FALSE(is_qemu_executable("/usr/bin/qemu-system-"));
  EXPECT_FALSE(is_qemu_executable("/opt/qemu-system-x86_64/bin/vmm"));
  EXPECT_FALSE(is_qemu_executable("/usr/bin/qemu-img"));
  EXPECT_FALSE(is_qemu_executable(""));
}

}  // namespace
}  // namespace vp
