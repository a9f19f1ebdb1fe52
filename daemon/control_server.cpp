#include "daemon/control_server.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "sys/log.hpp"
#include "sys/str.hpp"
#include "vp/version.hpp"

namespace vp::daemon {

namespace {

std::string event_line(const Event& event) {
  return nlohmann::ordered_json{{"version", kProtocolVersion}, {"event", event_json(event)}}
             .dump() +
         "\n";
}

}  // namespace

std::string ControlServer::lost_line(Client& c) {
  const uint64_t n = std::exchange(c.lost, 0);
  return event_line({std::chrono::system_clock::now(),
                     "",
                     EventType::kLost,
                     str(n, " event", n == 1 ? " was" : "s were",
                         " not sent because this monitor did not read in time"),
                     {{"count", n}}});
}

ControlServer::ControlServer(std::vector<Listener> listeners, int epoll_fd, Handler handler,
                             std::chrono::seconds request_timeout)
    : listeners_(std::move(listeners)),
      epoll_fd_(epoll_fd),
      handler_(std::move(handler)),
      request_timeout_(request_timeout) {
  for (const Listener& l : listeners_) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = l.fd.get();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, l.fd.get(), &ev);
  }
}

const ControlServer::Listener* ControlServer::listener_of(int fd) const {
  for (const Listener& l : listeners_) {
    if (l.fd.get() == fd) return &l;
  }
  return nullptr;
}

void ControlServer::on_event(int fd, uint32_t events) {
  if (const Listener* l = listener_of(fd)) {
    accept_all(*l);
    return;
  }
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = it->second;
  if (events & EPOLLOUT) flush(c);
  if (!clients_.contains(fd)) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_from(c);
}

void ControlServer::accept_all(const Listener& listener) {
  for (;;) {
    Fd fd(::accept4(listener.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN) log::warning("control socket: accept: ", std::strerror(errno));
      return;
    }
    // Counted per socket: clients of control-ro.sock cannot crowd out those of control.sock.
    if (clients_of(listener) >= kMaxClients) {
      static constexpr char kBusy[] =
          "{\"version\":1,\"ok\":false,\"error\":{\"code\":\"busy\",\"message\":\"vpd has too "
          "many control connections open; try again\"}}\n";
      (void)!::send(fd.get(), kBusy, sizeof kBusy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      continue;
    }
    const int raw = fd.get();
    Client c;
    c.peer = peer_credentials(raw);
    c.via = &listener;
    c.fd = std::move(fd);
    c.last_active = std::chrono::steady_clock::now();
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = raw;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, raw, &ev) != 0) continue;
    clients_.emplace(raw, std::move(c));
  }
}

void ControlServer::read_from(Client& c) {
  const int fd = c.fd.get();
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      c.last_active = std::chrono::steady_clock::now();
      if (c.in.empty()) c.line_started = c.last_active;
      if (!c.closing) c.in.append(buf, static_cast<size_t>(n));
      process_lines(c, false);
      if (!clients_.contains(fd)) return;
      continue;
    }
    if (n == 0) {  // the client finished sending
      process_lines(c, true);
      if (!clients_.contains(fd)) return;
      c.closing = true;
      flush(c);
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) close_client(fd);
    return;
  }
}

void ControlServer::process_lines(Client& c, bool at_eof) {
  const int fd = c.fd.get();
  for (;;) {
    if (c.closing) {
      c.in.clear();
      break;
    }
    size_t nl = c.in.find('\n');
    if (nl == std::string::npos) {
      if (c.in.size() > control::kMaxRequestBytes) {
        c.out += control::encode(control::error_response(
            {"request-too-large", "the request is longer than 64 KiB; vpd closed the connection"}));
        c.closing = true;
        c.in.clear();
        break;
      }
      if (!at_eof || c.in.find_first_not_of(" \t\r") == std::string::npos) break;
      nl = c.in.size();  // the last request may end at EOF instead of a newline
    }
    if (nl > control::kMaxRequestBytes) {
      c.out += control::encode(control::error_response(
          {"request-too-large", "the request is longer than 64 KiB; vpd closed the connection"}));
      c.closing = true;
      c.in.clear();
      break;
    }
    std::string line = c.in.substr(0, nl);
    c.in.erase(0, nl + 1 > c.in.size() ? c.in.size() : nl + 1);
    // What follows the newline begins the next line: it came with the bytes just read.
    c.line_started = c.last_active;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto request = control::decode_request(line);
    c.out +=
        control::encode(request ? answer(c, *request) : control::error_response(request.error()));
  }
  flush(c);
  (void)fd;
}

control::Response ControlServer::answer(Client& c, const control::Request& request) {
  if (c.via->access == Access::kReadOnly && !control::op::is_read_only(request.op)) {
    const std::string who = str("uid ", c.peer.uid, " pid ", c.peer.pid);
    log::info(request.endpoint.empty() ? "vpctl" : request.endpoint, ": refused ", request.op,
              " (permission) from ", who, ": it came through the read-only ", c.via->path);
    return control::error_response(
        {"permission", str(request.op, " is refused: this control socket (", c.via->path,
                           ") is read-only; run vpctl as root or as a member of group vpd "
                           "to create, change or destroy endpoints")});
  }
  if (request.op == control::op::kMonitor) return subscribe(c);
  return handler_(request, c.peer);
}

void ControlServer::flush(Client& c) {
  const int fd = c.fd.get();
  for (;;) {
    if (c.out.empty() && c.subscribed && c.lost > 0 && !c.closing) {
      // It read everything it had: say what it missed, without waiting for the next event.
      c.out += lost_line(c);
    }
    if (c.out.empty()) break;
    const ssize_t n = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    close_client(fd);
    return;
  }
  if (c.out.size() > kMaxPendingOutput) {
    log::warning("control socket: closing a client (pid ", c.peer.pid,
                 ") that does not read its responses");
    close_client(fd);
    return;
  }
  if (c.out.empty() && c.closing) {
    close_client(fd);
    return;
  }
  update_interest(c);
}

void ControlServer::update_interest(Client& c) {
  epoll_event ev{};
  ev.events = (c.closing ? 0u : static_cast<uint32_t>(EPOLLIN)) |
              (c.out.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
  ev.data.fd = c.fd.get();
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd.get(), &ev);
}

void ControlServer::close_client(int fd) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  clients_.erase(fd);
}

void ControlServer::sweep_idle() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<int> idle;
  std::vector<int> stalled;
  for (const auto& [fd, c] : clients_) {
    if (!c.closing && !c.in.empty() && now - c.line_started > request_timeout_) {
      stalled.push_back(fd);
      continue;
    }
    // A subscriber waits for events, however long: it is not idle.
    if (!c.subscribed && now - c.last_active > kIdleTimeout) idle.push_back(fd);
  }
  for (int fd : idle) close_client(fd);
  for (int fd : stalled) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) continue;
    Client& c = it->second;
    log::info("control socket: closing a client (pid ", c.peer.pid, ") whose request stayed ",
              "without its newline for ", request_timeout_.count(), " s");
    c.in.clear();
    c.out += control::encode(control::error_response(
        {"request-timeout", str("the request line stayed incomplete for ", request_timeout_.count(),
                                " s; vpd closed the connection (end each request with a "
                                "newline, and send it whole)")}));
    c.closing = true;
    flush(c);  // closes it once the answer is out (or at once if it cannot be sent)
  }
}

size_t ControlServer::subscribers(const Listener* via) const {
  size_t n = 0;
  for (const auto& [fd, c] : clients_) {
    n += c.subscribed && !c.closing && (!via || c.via == via) ? 1 : 0;
  }
  return n;
}

size_t ControlServer::clients_of(const Listener& listener) const {
  size_t n = 0;
  for (const auto& [fd, c] : clients_) n += c.via == &listener ? 1 : 0;
  return n;
}

control::Response ControlServer::subscribe(Client& c) {
  if (c.subscribed) {
    return control::error_response(
        {"bad-request", "this connection already receives events; send monitor once"});
  }
  if (subscribers(c.via) >= kMaxSubscribers) {
    return control::error_response({"busy", str("vpd already has ", kMaxSubscribers,
                                                " monitors; stop one (or try again later)")});
  }
  c.subscribed = true;
  control::Response r;
  r.result = {{"subscribed", true}};
  return r;
}

void ControlServer::offer(Client& c, const std::string& line) {
  if (c.out.size() + line.size() > kMaxSubscriberBacklog) {
    ++c.lost;
    return;
  }
  if (c.lost > 0) c.out += lost_line(c);  // what it missed comes before what follows
  c.out += line;
  flush(c);
}

void ControlServer::publish(const Event& event) {
  const std::string line = event_line(event);
  std::vector<int> fds;
  for (const auto& [fd, c] : clients_) {
    if (c.subscribed && !c.closing) fds.push_back(fd);
  }
  for (int fd : fds) {
    auto it = clients_.find(fd);  // an earlier flush may have closed it
    if (it != clients_.end()) offer(it->second, line);
  }
}

void ControlServer::publish_lost(uint64_t count) {
  Event lost{std::chrono::system_clock::now(),
             "",
             EventType::kLost,
             str(count, " event", count == 1 ? " was" : "s were",
                 " dropped because vpd's event queue was full"),
             {{"count", count}}};
  publish(lost);
}

}  // namespace vp::daemon
