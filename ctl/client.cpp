#include "ctl/client.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "sys/str.hpp"
#include "sys/unix_socket.hpp"

namespace vp::ctl {

namespace {

bool permission_denied(const Error& error) {
  return error.message.ends_with(std::strerror(EACCES));
}

}  // namespace

int usage_error(const std::string& message) {
  std::fprintf(stderr, "vpctl: %s\nTry 'vpctl --help'.\n", message.c_str());
  return kUsage;
}

void print_unreachable(const std::string& socket_path, const std::string& why) {
  std::fprintf(stderr,
               "vpctl: cannot reach vpd at %s: %s.\n"
               "Start it with `systemctl start vpd` (or run `vpd` as root), or point --socket "
               "or VPD_SOCKET at its control socket.\n",
               socket_path.c_str(), why.c_str());
}

Result<Fd> connect_control(std::string& socket_path, bool read_only) {
  auto fd = connect_unix(socket_path);
  if (fd || !permission_denied(fd.error())) return fd;
  const std::string suffix = str("/", control::kSocketName);
  if (read_only && (socket_path.ends_with(suffix) || socket_path == control::kSocketName)) {
    const std::string ro = socket_path.substr(0, socket_path.size() - control::kSocketName.size()) +
                           std::string(control::kReadOnlySocketName);
    auto second = connect_unix(ro);
    if (second) {
      socket_path = ro;
      return second;
    }
    if (permission_denied(second.error())) {
      return fail(fd.error().code,
                  str(fd.error().message, ", and ", ro,
                      " too (run vpctl as root or as a member of group vpd, or of group "
                      "vpd-ro to only list, show and watch endpoints)"));
    }
  }
  return fail(
      fd.error().code,
      str(fd.error().message, " (run vpctl as root or as a member of group vpd",
          read_only ? ", or of group vpd-ro to only list, show and watch endpoints" : "", ")"));
}

Reply call(std::string socket_path, const control::Request& request) {
  Reply reply;
  auto unreachable = [&](const std::string& why) {
    print_unreachable(socket_path, why);
    reply.status = kUnreachable;
    return reply;
  };
  auto fd = connect_control(socket_path, control::op::is_read_only(request.op));
  if (!fd) return unreachable(fd.error().message);
  timeval timeout{30, 0};
  ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd->get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  const std::string line = control::encode(request);
  size_t sent = 0;
  while (sent < line.size()) {
    const ssize_t n = ::send(fd->get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      // vpd may have answered and closed before reading (e.g. "busy"): read that answer.
      if (errno == EPIPE || errno == ECONNRESET) break;
      return unreachable(std::strerror(errno));
    }
    sent += static_cast<size_t>(n);
  }
  std::string in;
  char buf[65536];
  while (in.find('\n') == std::string::npos) {
    const ssize_t n = ::recv(fd->get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return unreachable("vpd did not answer within 30 seconds");
    }
    if (n <= 0) return unreachable("vpd closed the connection without an answer");
    in.append(buf, static_cast<size_t>(n));
  }
  auto response = control::decode_response(in.substr(0, in.find('\n')));
  if (!response) return unreachable("vpd's answer was not understood: " + response.error().message);
  reply.response = std::move(*response);
  reply.status = reply.response.ok ? kDone : kRefused;
  return reply;
}

}  // namespace vp::ctl
