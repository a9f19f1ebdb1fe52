#include "sys/unix_socket.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
