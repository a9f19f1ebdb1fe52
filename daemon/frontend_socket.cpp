#include "daemon/frontend_socket.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>

#include "daemon/events.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

// "uid 0 pid 1234, /usr/bin/qemu-system-x86_64, VM g1" for the log.
std::string describe_process(const PeerProcess& who) {
  std::string out = str("uid ", who.credentials.uid, " pid ", who.credentials.pid);
  if (!who.exe.empty()) out += str(", ", who.exe);
  if (!who.vm_name.empty()) out += str(", VM ", who.vm_name);
  return out;
}

FrontendSocket::FrontendSocket(const control::EndpointConfig& config, std::string_view what,
                               std::function<void(Fd, PeerProcess)> connected, EventQueue* events)
    : config_(config), what_(what), connected_(std::move(connected)), events_(events) {}

FrontendSocket::~FrontendSocket() {
  if (const uint64_t held = refusal_log_.take_held(); held > 0) {
    log::warning(config_.name, ": ", held, " more refused connection", held == 1 ? "" : "s", " on ",
                 config_.name, " before its front-end socket closed (not logged one by one)");
  }
}

void FrontendSocket::publish_refusal(const PeerCredentials& peer, std::string_view reason,
                                     std::string message) {
  if (!events_) return;
  events_->publish(EventType::kFrontendRefused, config_.name, std::move(message),
                   {{"reason", std::string(reason)},
                    {"peer", {{"pid", peer.pid}, {"uid", peer.uid}, {"gid", peer.gid}}}});
}

void FrontendSocket::open(int epoll, Fd listener, uint64_t listener_tag, uint64_t redial_tag,
                          uint64_t summary_tag) {
  summary_timer_ = OneShotTimer(epoll, summary_tag);
  listener_ = std::move(listener);
  if (listener_) {
    listener_interest_ = Interest(epoll, listener_.get(), listener_tag);
    listener_interest_.set(EPOLLIN);
  }
  if (!config_.peer.empty()) {
    redial_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    redial_interest_ = Interest(epoll, redial_.get(), redial_tag);
    redial_interest_.set(EPOLLIN);
  }
}

std::string_view FrontendSocket::socket() const {
  return !config_.bind.empty() ? config_.bind : config_.peer;
}

bool FrontendSocket::admit(const PeerCredentials& peer) {
  if (control::peer_allowed(config_.allow, peer.uid, peer.gid)) return true;
  ++refused_peers_;
  const std::string why = str("refused a ", what_, " on ", config_.bind, " (uid ", peer.uid,
                              " gid ", peer.gid, " pid ", peer.pid, "): not in allow=");
  log_refusal(why);
  publish_refusal(peer, "allow", why);
  return false;
}

bool FrontendSocket::accept(bool busy) {
  bool refused = false;
  for (;;) {
    Fd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!conn) return refused;
    const auto peer = peer_credentials(conn.get());
    if (busy) {
      // One session at a time: a second frontend would fight the first over the endpoint.
      const std::string why = str("refused a second ", what_, " on ", config_.bind, " (uid ",
                                  peer.uid, " pid ", peer.pid, "): one is connected");
      log_refusal(why);
      publish_refusal(peer, "busy", why);
      continue;
    }
    if (!admit(peer)) {
      refused = true;
      continue;
    }
    PeerProcess who = describe_peer(conn.get());
    log::notice(config_.name, ": ", what_, " connected on ", config_.bind, " (",
                describe_process(who), ")");
    busy = true;
    connected_(std::move(conn), std::move(who));
  }
}

void FrontendSocket::log_refusal(const std::string& why) {
  const LogLimiter::Decision d = refusal_log_.admit(LogLimiter::Clock::now());
  if (d.summary > 0) log_summary(d.summary);
  if (d.log) {
    log::warning(config_.name, ": ", why);
    return;
  }
  // Held back: the summary goes out when the interval ends, even if no refusal follows.
  // Without a timer the summary comes with the next refusal.
  const auto due = refusal_log_.summary_due();
  if (!due) return;
  (void)summary_timer_.arm(std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::max(*due - LogLimiter::Clock::now(), LogLimiter::Clock::duration(1))));
}

void FrontendSocket::log_summary(uint64_t held) {
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(refusal_log_.interval()).count();
  log::warning(config_.name, ": ", held, " more refused connection", held == 1 ? "" : "s", " on ",
               config_.name, " in the last ", seconds, " s (not logged one by one)");
}

void FrontendSocket::on_summary_timer() {
  summary_timer_.consume();
  if (const uint64_t held = refusal_log_.take_summary(LogLimiter::Clock::now()); held > 0) {
    log_summary(held);
  }
  // Made again by the next flood: an endpoint nobody floods holds no fd for it.
  if (!refusal_log_.summary_due()) {
    summary_timer_.close();
  }
}

void FrontendSocket::arm_redial() {
  backoff_ms_ = backoff_ms_ == 0 ? 100 : std::min(backoff_ms_ * 2, 5000);
  itimerspec t{};
  t.it_value.tv_sec = backoff_ms_ / 1000;
  t.it_value.tv_nsec = static_cast<long>(backoff_ms_ % 1000) * 1'000'000;
  ::timerfd_settime(redial_.get(), 0, &t, nullptr);
}

void FrontendSocket::dial() {
  auto fd = connect_unix(config_.peer);
  if (!fd) {
    arm_redial();
    return;
  }
  backoff_ms_ = 0;
  ::fcntl(fd->get(), F_SETFL, ::fcntl(fd->get(), F_GETFL) | O_NONBLOCK);
  // The VMM serving peer= is a process too: SO_PEERCRED names it as it does on bind=.
  PeerProcess who = describe_peer(fd->get());
  log::notice(config_.name, ": connected to ", what_, " at ", config_.peer, " (",
              describe_process(who), ")");
  connected_(std::move(*fd), std::move(who));
}

void FrontendSocket::on_redial_timer(bool busy) {
  uint64_t expirations = 0;
  (void)!::read(redial_.get(), &expirations, sizeof expirations);
  if (!busy) dial();
}

}  // namespace vp::daemon
