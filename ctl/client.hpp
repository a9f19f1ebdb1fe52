#pragma once

// vpctl's side of the control socket: connecting (with the read-only fallback to
// control-ro.sock), one request and its answer, and vpctl's exit codes.

#include <string>

#include "control/protocol.hpp"
#include "sys/error.hpp"
#include "sys/fd.hpp"

namespace vp::ctl {

// Exit codes (vpctl(8)).
inline constexpr int kDone = 0;
inline constexpr int kRefused = 1;
inline constexpr int kUsage = 2;
inline constexpr int kUnreachable = 3;

/// Prints "vpctl: MESSAGE" and the hint to --help on stderr; returns kUsage.
int usage_error(const std::string& message);

/// Prints why vpd is not reachable at `socket_path` and how to start it, on stderr.
void print_unreachable(const std::string& socket_path, const std::string& why);

/// An answer from vpd: `status` is the exit code it means (kDone, kRefused, kUnreachable;
/// `response` is set unless kUnreachable).
struct Reply {
  int status = kDone;
  control::Response response;
};

/// Connects to vpd's control socket `socket_path`. When its file is control.sock, this user
/// may not use it (EACCES) and `read_only` (the request changes nothing), control-ro.sock in
/// the same directory is used instead: members of group vpd-ro may list, show and watch
/// endpoints there. `socket_path` becomes the socket used.
Result<Fd> connect_control(std::string& socket_path, bool read_only);

/// Sends `request` and waits for its answer (at most 30 s each way); an unreachable vpd is
/// said on stderr.
Reply call(std::string socket_path, const control::Request& request);

}  // namespace vp::ctl
