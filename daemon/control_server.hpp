#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>

#include "control/protocol.hpp"
#include "sys/fd.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

/// Serves the JSON control protocol: one request per line, one response line each, any
/// number of requests per connection. Non-blocking throughout: a client that sends
/// nothing, sends garbage or never reads cannot hold up another.
class ControlServer {
 public:
  using Handler = std::function<control::Response(const control::Request&, const PeerCredentials&)>;

  static constexpr size_t kMaxClients = 256;
  static constexpr size_t kMaxPendingOutput = 4 * 1024 * 1024;
  static constexpr std::chrono::seconds kIdleTimeout{30};

  /// `listener` is a listening, non-blocking Unix stream socket. Registers it with `epoll_fd`.
  ControlServer(Fd listener, int epoll_fd, Handler handler);

  /// True when `fd` is the listener or a client of this server.
  bool owns(int fd) const { return fd == listener_.get() || clients_.contains(fd); }
  /// Handles readiness `events` (EPOLLIN, ...) on `fd`.
  void on_event(int fd, uint32_t events);
  /// Closes clients idle for longer than kIdleTimeout.
  void sweep_idle();

 private:
  struct Client {
    Fd fd;
    PeerCredentials peer;
    std::string in;
    std::string out;
    bool closing = false;  // close once `out` is flushed
    std::chrono::steady_clock::time_point last_active;
  };

  void accept_all();
  void read_from(Client& c);
  void process_lines(Client& c, bool at_eof);
  void flush(Client& c);
  void close_client(int fd);
  void update_interest(Client& c);

  Fd listener_;
  int epoll_fd_;
  Handler handler_;
  std::map<int, Client> clients_;
};

}  // namespace vp::daemon
