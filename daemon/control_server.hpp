#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "control/protocol.hpp"
#include "daemon/events.hpp"
#include "daemon/options.hpp"
#include "sys/fd.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

/// Serves the JSON control protocol: one request per line, one response line each, any
/// number of requests per connection. Non-blocking throughout: a client that sends
/// nothing, sends garbage or never reads cannot hold up another.
///
/// A `monitor` request makes its connection a subscriber: after the ok response every event
/// is written to it as one line. A subscriber is never closed for being idle. One that does
/// not read is given at most kMaxSubscriberBacklog bytes of unsent events; the events that do
/// not fit are counted, and once it has read enough for room again it gets one "lost" event
/// with that count before the next ones, so it knows what it missed. Its memory stays bounded
/// and vpd never waits for it.
///
/// It serves several listening sockets, each with its access: a client of a read-only one
/// (control-ro.sock) is answered only the ops that change nothing (control::op::is_read_only);
/// any other request is refused with code "permission" before it reaches the handler, so it
/// changes nothing.
class ControlServer {
 public:
  using Handler = std::function<control::Response(const control::Request&, const PeerCredentials&)>;

  enum class Access { kFull, kReadOnly };
  /// A listening, non-blocking Unix stream socket, the path it is bound to (for messages)
  /// and what its clients may do.
  struct Listener {
    Fd fd;
    std::string path;
    Access access = Access::kFull;
  };

  /// Connections at once, per listening socket.
  static constexpr size_t kMaxClients = 256;
  static constexpr size_t kMaxPendingOutput = 4 * 1024 * 1024;
  static constexpr std::chrono::seconds kIdleTimeout{30};
  /// Subscribers at once, per listening socket; a further `monitor` request is refused
  /// ("busy").
  static constexpr size_t kMaxSubscribers = 16;
  /// Unsent event bytes held for one subscriber (below kMaxPendingOutput, which closes).
  static constexpr size_t kMaxSubscriberBacklog = 1024 * 1024;

  /// Registers every listener with `epoll_fd`. `request_timeout`: how long a request line
  /// may stay without its newline (vpd --request-timeout).
  ControlServer(std::vector<Listener> listeners, int epoll_fd, Handler handler,
                std::chrono::seconds request_timeout = kDefaultRequestTimeout);

  /// True when `fd` is a listener or a client of this server.
  bool owns(int fd) const { return listener_of(fd) != nullptr || clients_.contains(fd); }
  /// Handles readiness `events` (EPOLLIN, ...) on `fd`.
  void on_event(int fd, uint32_t events);
  /// Closes clients idle for longer than kIdleTimeout, and those whose request line has been
  /// incomplete for longer than the request timeout (told so first).
  void sweep_idle();
  /// Writes `event` to every subscriber (control thread).
  void publish(const Event& event);
  /// Tells every subscriber that `count` events were lost before they reached this server.
  void publish_lost(uint64_t count);
  /// Subscribers of every socket (`via` null) or of one.
  size_t subscribers(const Listener* via = nullptr) const;

 private:
  struct Client {
    Fd fd;
    PeerCredentials peer;
    const Listener* via = nullptr;  // the socket it connected to
    std::string in;
    std::string out;
    bool closing = false;     // close once `out` is flushed
    bool subscribed = false;  // a `monitor` request made it a subscriber
    uint64_t lost = 0;        // events that did not fit its backlog, not yet reported
    std::chrono::steady_clock::time_point last_active;
    std::chrono::steady_clock::time_point line_started;  // the first byte of `in` came
  };

  const Listener* listener_of(int fd) const;
  size_t clients_of(const Listener& listener) const;
  void accept_all(const Listener& listener);
  /// The answer to `request` from `c`: refused when `c` came through a read-only socket and
  /// the op changes something.
  control::Response answer(Client& c, const control::Request& request);
  void read_from(Client& c);
  void process_lines(Client& c, bool at_eof);
  void flush(Client& c);
  void close_client(int fd);
  void update_interest(Client& c);
  /// The answer to a `monitor` request; subscribes `c` when it may be.
  control::Response subscribe(Client& c);
  /// Appends `line` (an event) to a subscriber's output, or counts it lost; then flushes.
  void offer(Client& c, const std::string& line);
  /// The "lost" event line for `c`'s missed events; resets its count.
  static std::string lost_line(Client& c);

  std::vector<Listener> listeners_;
  int epoll_fd_;
  Handler handler_;
  std::chrono::seconds request_timeout_;
  std::map<int, Client> clients_;
};

}  // namespace vp::daemon
