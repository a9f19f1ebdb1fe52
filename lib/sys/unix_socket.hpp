#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>

#include "sys/error.hpp"
#include "sys/fd.hpp"

namespace vp {

/// Listens on a SOCK_STREAM Unix socket at `path` with file mode `mode`, owned by `gid`
/// (-1 keeps the caller's group). A stale socket file nobody answers on is replaced; a
/// live one is refused (code "address-in-use"). Non-blocking, close-on-exec.
Result<Fd> listen_unix(const std::string& path, mode_t mode, gid_t gid = static_cast<gid_t>(-1));

/// Connects (blocking) to the SOCK_STREAM Unix socket at `path`.
Result<Fd> connect_unix(const std::string& path);

/// Credentials of the process at the other end (SO_PEERCRED).
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
};
PeerCredentials peer_credentials(int fd);

/// Who is at the other end of a front-end connection, read once when it connects (never
/// per frame): its credentials, its executable and, for a VMM that has one, the VM's name.
struct PeerProcess {
  PeerCredentials credentials;
  std::string exe;                              // readlink /proc/PID/exe; "" when it cannot be read
  std::string vm_name;                          // QEMU's -name; "" when the command line has none
  std::chrono::system_clock::time_point since;  // wall-clock time of the connection
};
/// SO_PEERCRED of `fd`, then /proc/PID/exe and /proc/PID/cmdline. What cannot be read (the
/// process is gone, another PID namespace, no permission) is left empty; never fails.
PeerProcess describe_peer(int fd);

/// The VM name in a NUL-separated command line (/proc/PID/cmdline): QEMU's `-name NAME`,
/// `-name guest=NAME,...` or `-name=...`, with ",," as an escaped comma. "" without one
/// (cloud-hypervisor has no name option).
std::string vm_name_from_cmdline(std::string_view cmdline);

/// True when `exe` (a /proc/PID/exe path) is a QEMU system emulator: qemu-system-ARCH or
/// qemu-kvm, maybe followed by " (deleted)" after a package upgrade.
bool is_qemu_executable(std::string_view exe);

/// mkdir -p with `mode` for the directories it creates.
Result<void> make_directories(const std::string& path, mode_t mode);

}  // namespace vp
