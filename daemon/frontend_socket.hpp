#pragma once

// The front-end's side of an endpoint, the same for every transport: the bind= socket vpd
// listens on (allow= admission, one session at a time) and the peer= socket it dials, with a
// redial timer backing off from 100 ms to 5 s while the VMM is absent.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>

#include "control/endpoint.hpp"
#include "daemon/log_limiter.hpp"
#include "daemon/worker.hpp"
#include "sys/fd.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

class EventQueue;

/// "uid 0 pid 1234, /usr/bin/qemu-system-x86_64, VM g1": the process for log lines and events.
std::string describe_process(const PeerProcess& who);

class FrontendSocket {
 public:
  /// Refused connections logged one by one per interval; the rest of the interval are
  /// counted and logged as one line when it ends (a local process looping connect() must
  /// not flood the journal). The refused_peers counter and the events count every one.
  static constexpr uint32_t kRefusalLogBurst = 5;
  static constexpr std::chrono::seconds kRefusalLogInterval{10};

  /// `connected(conn, who)` starts a session on a connection that may be served (accepted or
  /// dialled); `who` is the process at the other end, read once as it connects. `config` and
  /// `connected` must outlive this object; `what` names the frontend in log lines
  /// ("frontend", "stream frontend"). A refused connection is also published to `events`
  /// (may be null).
  FrontendSocket(const control::EndpointConfig& config, std::string_view what,
                 std::function<void(Fd, PeerProcess)> connected, EventQueue* events = nullptr);
  /// Logs the refusals still held back: the summary timer goes with this object.
  ~FrontendSocket();
  FrontendSocket(const FrontendSocket&) = delete;
  FrontendSocket& operator=(const FrontendSocket&) = delete;

  /// Watches `listener` (bind=, may be invalid) and, with peer=, creates the redial timer.
  /// The epoll tags are the owner's kListener, kRedial and kRefusalSummary events.
  void open(int epoll, Fd listener, uint64_t listener_tag, uint64_t redial_tag,
            uint64_t summary_tag);

  /// Accepts every connection waiting on the bind socket: the first that may be served
  /// while no session runs (`busy` false) is started, the others are refused and logged.
  /// True if allow= refused one (refused_peers() changed).
  bool accept(bool busy);
  /// Dials peer=: starts a session when the VMM answers, else arms the redial timer.
  void dial();
  /// The redial timer fired: dials again unless a session runs by now.
  void on_redial_timer(bool busy);
  /// The refusal summary timer fired: logs how many refusals were not logged one by one.
  void on_summary_timer();

  bool listening() const { return listener_.valid(); }
  bool dials() const { return redial_.valid(); }
  uint64_t refused_peers() const { return refused_peers_; }
  /// The socket path shown for the endpoint: bind= if set, else peer=.
  std::string_view socket() const;

 private:
  /// allow=: true if the peer on a bind socket may be served; otherwise logs and counts it.
  bool admit(const PeerCredentials& peer);
  void arm_redial();
  /// Logs a refusal unless the limiter holds it back (then the summary timer is armed).
  void log_refusal(const std::string& why);
  void log_summary(uint64_t held);
  /// Publishes a frontend-refused event: `reason` "allow" or "busy".
  void publish_refusal(const PeerCredentials& peer, std::string_view reason, std::string message);

  const control::EndpointConfig& config_;
  std::string_view what_;
  std::function<void(Fd, PeerProcess)> connected_;
  EventQueue* events_;
  Fd listener_;
  Fd redial_;
  Interest listener_interest_;
  Interest redial_interest_;
  int backoff_ms_ = 0;
  uint64_t refused_peers_ = 0;
  LogLimiter refusal_log_{kRefusalLogBurst, kRefusalLogInterval};
  OneShotTimer
      summary_timer_;  // created when a refusal is held back, closed once the summary is out
};

}  // namespace vp::daemon
