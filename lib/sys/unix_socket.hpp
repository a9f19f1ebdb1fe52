#pragma once

#include <sys/types.h>

#include <string>

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

/// mkdir -p with `mode` for the directories it creates.
Result<void> make_directories(const std::string& path, mode_t mode);

}  // namespace vp
