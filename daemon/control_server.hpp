#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>

#include "control/protocol.hpp"
#include "daemon/events.hpp"
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
class ControlServer {
 public:
  using Handler = std::function<control::Response(const control::Request&, const PeerCredentials&)>;

  static constexpr size_t kMaxClients = 256;
  static constexpr size_t kMaxPendingOutput = 4 * 1024 * 1024;
  static constexpr std::chrono::seconds kIdleTimeout{30};
  /// How long a request line may stay without its newline, however slowly its bytes come:
  /// a client trickling a byte now and then is never idle, yet must not hold a connection.
  static constexpr std::chrono::seconds kPartialLineTimeout{30};
  /// Subscribers at once; a further `monitor` request is refused ("busy").
  static constexpr size_t kMaxSubscribers = 16;
  /// Unsent event bytes held for one subscriber (below kMaxPendingOutput, which closes).
  static constexpr size_t kMaxSubscriberBacklog = 1024 * 1024;

  /// `listener` is a listening, non-blocking Unix stream socket. Registers it with `epoll_fd`.
  ControlServer(Fd listener, int epoll_fd, Handler handler);

  /// True when `fd` is the listener or a client of this server.
  bool owns(int fd) const { return fd == listener_.get() || clients_.contains(fd); }
  /// Handles readiness `events` (EPOLLIN, ...) on `fd`.
  void on_event(int fd, uint32_t events);
  /// Closes clients idle for longer than kIdleTimeout, and those whose request line has been
  /// incomplete for longer than kPartialLineTimeout (told so first).
  void sweep_idle();
  /// Writes `event` to every subscriber (control thread).
  void publish(const Event& event);
  /// Tells every subscriber that `count` events were lost before they reached this server.
  void publish_lost(uint64_t count);
  size_t subscribers() const;

 private:
  struct Client {
    Fd fd;
    PeerCredentials peer;
    std::string in;
    std::string out;
    bool closing = false;     // close once `out` is flushed
    bool subscribed = false;  // a `monitor` request made it a subscriber
    uint64_t lost = 0;        // events that did not fit its backlog, not yet reported
    std::chrono::steady_clock::time_point last_active;
    std::chrono::steady_clock::time_point line_started;  // the first byte of `in` came
  };

  void accept_all();
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

  Fd listener_;
  int epoll_fd_;
  Handler handler_;
  std::map<int, Client> clients_;
};

}  // namespace vp::daemon
