#include "sys/unix_socket.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "sys/str.hpp"

namespace vp {
namespace {

Result<sockaddr_un> address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return fail("bad-value",
                str("socket path '", path, "' must be 1-", sizeof addr.sun_path - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

Result<Fd> connect_unix(const std::string& path) {
  auto addr = address_of(path);
  if (!addr) return std::unexpected(addr.error());
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return sys_fail("socket", errno);
  while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
    if (errno == EINTR) continue;
    return sys_fail(str("connect ", path), errno);
  }
  return fd;
}

Result<Fd> listen_unix(const std::string& path, mode_t mode, gid_t gid) {
  auto addr = address_of(path);
  if (!addr) return std::unexpected(addr.error());
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return fail("address-in-use", str(path,
                                        " exists and is not a socket; remove it or pick "
                                        "another path"));
    }
    if (connect_unix(path)) {
      return fail("address-in-use", str("another process is serving ", path));
    }
    ::unlink(path.c_str());
  }
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return sys_fail("socket", errno);
  // Bind with no permissions at all, then open up: no window where others can connect.
  const mode_t old_umask = ::umask(0777);
  const int rc = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr);
  const int bind_errno = errno;
  ::umask(old_umask);
  if (rc != 0) return sys_fail(str("bind ", path), bind_errno);
  // From here on a failure removes the socket file it leaves behind (mode 0000: useless).
  auto undo = [&](std::string_view step) {
    const int e = errno;
    ::unlink(path.c_str());
    return sys_fail(str(step, " ", path), e);
  };
  if (gid != static_cast<gid_t>(-1) && ::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) {
    return undo("chown");
  }
  if (::chmod(path.c_str(), mode) != 0) return undo("chmod");
  if (::listen(fd.get(), 128) != 0) return undo("listen");
  return fd;
}

PeerCredentials peer_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  PeerCredentials out;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    out.pid = cred.pid;
    out.uid = cred.uid;
    out.gid = cred.gid;
  }
  return out;
}

namespace {

// QEMU's option value split at its commas; ",," is an escaped comma.
std::vector<std::string> option_parts(std::string_view value) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != ',') {
      parts.back() += value[i];
    } else if (i + 1 < value.size() && value[i + 1] == ',') {
      parts.back() += ',';
      ++i;
    } else {
      parts.emplace_back();
    }
  }
  return parts;
}

// The NAME of a `-name` value: "guest=NAME,..." or the implied first part "NAME,...".
std::string name_of(std::string_view value) {
  const std::vector<std::string> parts = option_parts(value);
  for (const auto& part : parts) {
    if (part.starts_with("guest=")) return part.substr(6);
  }
  return parts.front().find('=') == std::string::npos ? parts.front() : std::string();
}

}  // namespace

bool is_qemu_executable(std::string_view exe) {
  const size_t slash = exe.rfind('/');
  std::string_view base = slash == std::string_view::npos ? exe : exe.substr(slash + 1);
  if (base.ends_with(" (deleted)")) base.remove_suffix(10);
  return (base.starts_with("qemu-system-") && base.size() > 12) || base == "qemu-kvm";
}

std::string vm_name_from_cmdline(std::string_view cmdline) {
  std::vector<std::string_view> args;
  while (!cmdline.empty()) {
    const size_t nul = cmdline.find('\0');
    args.push_back(cmdline.substr(0, nul));
    if (nul == std::string_view::npos) break;
    cmdline.remove_prefix(nul + 1);
  }
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    // QEMU takes both -opt and --opt, and -opt=value.
    if (a.starts_with("--")) a.remove_prefix(1);
    if (a == "-name" && i + 1 < args.size()) return name_of(args[i + 1]);
    if (a.starts_with("-name=")) return name_of(a.substr(6));
  }
  return "";
}

PeerProcess describe_peer(int fd) {
  PeerProcess out;
  out.since = std::chrono::system_clock::now();
  out.credentials = peer_credentials(fd);
  if (out.credentials.pid <= 0) return out;
  const std::string proc = str("/proc/", out.credentials.pid);
  char exe[4096];
  const ssize_t n = ::readlink(str(proc, "/exe").c_str(), exe, sizeof exe);
  if (n > 0 && static_cast<size_t>(n) < sizeof exe) out.exe.assign(exe, static_cast<size_t>(n));
  std::ifstream cmdline(str(proc, "/cmdline"), std::ios::binary);
  if (cmdline) {
    // A command line is at most ARG_MAX; QEMU's fits in a few KiB.
    std::string text;
    text.reserve(4096);
    char buf[4096];
    while (cmdline.read(buf, sizeof buf) || cmdline.gcount() > 0) {
      text.append(buf, static_cast<size_t>(cmdline.gcount()));
      if (text.size() > 1024 * 1024) break;
    }
    out.vm_name = vm_name_from_cmdline(text);
  }
  return out;
}

Result<void> make_directories(const std::string& path, mode_t mode) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    const std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      return sys_fail(str("mkdir ", prefix), errno);
    }
  }
  return {};
}

}  // namespace vp
