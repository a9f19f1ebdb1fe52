// vpd: gives each guest a host-side network interface vpN and is its virtio-net peer.

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "control/config_file.hpp"
#include "control/state_file.hpp"
#include "daemon/control_server.hpp"
#include "daemon/dataplane.hpp"
#include "daemon/events.hpp"
#include "daemon/options.hpp"
#include "daemon/registry.hpp"
#include "net/link_events.hpp"
#include "net/mac.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"
#include "sys/unix_socket.hpp"
#include "vp/version.hpp"

namespace vp::daemon {
namespace {

/// Sends STOPPING=1 however run() ends.
struct StoppingGuard {
  ~StoppingGuard() { sd_notify(0, "STOPPING=1"); }
};

/// The control sockets vpd serves: control.sock (full access) and control-ro.sock (read-only).
struct ControlSockets {
  std::vector<ControlServer::Listener> listeners;
  std::vector<std::string> own;  // the paths vpd bound itself, removed when it stops
  bool activated = false;        // systemd passed at least one of them
};

/// The path a listening Unix socket is bound to ("" when it has none).
std::string bound_path(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      addr.sun_family != AF_UNIX || len <= offsetof(sockaddr_un, sun_path) ||
      addr.sun_path[0] == '\0') {
    return "";
  }
  return std::string(addr.sun_path, strnlen(addr.sun_path, sizeof addr.sun_path));
}

/// The control sockets: those systemd passed (socket activation), then our own for each it
/// did not pass. A passed socket is read-only when its FileDescriptorName= is "control-ro"
/// or its file is named control-ro.sock; either is enough, so that a read-only socket is
/// never served with full access by mistake. Our own sockets are mode 0660 with group vpd
/// (control.sock) or vpd-ro (control-ro.sock) when that group exists, else root only.
Result<ControlSockets> control_sockets(const std::string& runtime_dir) {
  using Access = ControlServer::Access;
  ControlSockets out;
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(1, &names);
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    const std::string name = names && names[i] ? names[i] : "";
    if (sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0) <= 0) continue;
    std::string path = bound_path(fd);
    const bool read_only = name == "control-ro" || path == control::kReadOnlySocketName ||
                           std::string_view(path).ends_with(str("/", control::kReadOnlySocketName));
    const Access access = read_only ? Access::kReadOnly : Access::kFull;
    const bool taken = std::any_of(out.listeners.begin(), out.listeners.end(),
                                   [&](const auto& l) { return l.access == access; });
    if (taken) {
      log::warning("systemd passed a second ", read_only ? "read-only " : "", "control socket (",
                   path.empty() ? name : path, "); vpd serves only the first");
      continue;
    }
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    out.activated = true;
    out.listeners.push_back({Fd(fd), path.empty() ? name : std::move(path), access});
  }
  if (names) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  struct Own {
    Access access;
    std::string_view file;
    const char* group;
  };
  for (const Own& own : {Own{Access::kFull, control::kSocketName, "vpd"},
                         Own{Access::kReadOnly, control::kReadOnlySocketName, "vpd-ro"}}) {
    const bool passed = std::any_of(out.listeners.begin(), out.listeners.end(),
                                    [&](const auto& l) { return l.access == own.access; });
    if (passed) continue;
    const std::string path = str(runtime_dir, "/", own.file);
    const group* g = ::getgrnam(own.group);
    if (!g && own.access == Access::kReadOnly) {
      log::notice("group vpd-ro does not exist, so the read-only control socket ", path,
                  " is for root only (mode 0600); add the group (groupadd --system vpd-ro) and "
                  "restart vpd to let its members list and watch endpoints");
    }
    auto fd = g ? listen_unix(path, 0660, g->gr_gid) : listen_unix(path, 0600);
    if (!fd) {
      for (const auto& made : out.own) ::unlink(made.c_str());  // no socket left half made
      return fail(fd.error().code, str(own.file, ": ", fd.error().message));
    }
    out.own.push_back(path);
    out.listeners.push_back({std::move(*fd), path, own.access});
  }
  return out;
}

/// Reads and checks every declaration: the config file, then the command line.
Result<std::vector<control::ConfigEntry>> read_declarations(const Options& o) {
  auto entries = control::read_config_file(o.config);
  if (!entries) return entries;
  auto cmdline = control::parse_command_line_specs(o.endpoint_specs);
  if (!cmdline) return cmdline;
  for (auto& e : *cmdline) {
    for (const auto& f : *entries) {
      if (!e.name.empty() && e.name == f.name) {
        return fail("conflicting-settings",
                    str(e.origin, ": ", e.name, " is also declared at ", f.origin));
      }
    }
    entries->push_back(std::move(e));
  }
  // Each declaration must also make a valid endpoint on its own.
  for (const auto& e : *entries) {
    control::EndpointConfig probe;
    probe.name = e.name.empty() ? "vp0" : e.name;
    probe.mac = net::stable_mac("check", probe.name);
    if (auto ok = control::apply_change(probe, e.change); !ok) {
      return fail(ok.error().code, str(e.origin, ": ", ok.error().message));
    }
  }
  return entries;
}

std::string status_line(const Registry& r, const std::string& socket) {
  std::string s = str("STATUS=", r.size(), " endpoint", r.size() == 1 ? "" : "s");
  if (const size_t t = r.troubled()) s += str(" (", t, " with problems, see vpctl list)");
  s += str("; control socket ", socket);
  return s;
}

/// Blocks the signals vpd reads from its signalfd. Called before any thread starts, so that
/// every data-path worker inherits the mask and none of them takes SIGTERM's default action.
sigset_t block_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  return signals;
}

/// One vpd per state directory: an exclusive lock on STATE_DIR/vpd.lock, held while the
/// returned fd is open.
Result<Fd> lock_state_dir(const Options& o) {
  for (const auto* dir : {&o.runtime_dir, &o.state_dir}) {
    if (auto ok = make_directories(*dir, 0755); !ok) return std::unexpected(ok.error());
  }
  const std::string lock_path = o.state_dir + "/vpd.lock";
  Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    return fail("locked", str("another vpd is already running with state directory ", o.state_dir,
                              " (", lock_path, " is locked)"));
  }
  return lock;
}

/// The saved endpoints. A corrupt state file is set aside (never overwritten) and vpd
/// starts from the declared endpoints only; one that cannot be set aside stops vpd.
Result<control::State> load_saved_state(const std::string& path) {
  auto state = control::load_state(path);
  if (state || state.error().code != "state-corrupt") return state;
  auto aside = control::set_aside(path);
  if (!aside) {
    return fail("state-corrupt", str("the state file is corrupt (", state.error().message,
                                     ") and could not be set aside: ", aside.error().message,
                                     "; vpd will not overwrite it, so it stops here"));
  }
  log::error("the state file is corrupt (", state.error().message, "); kept it as ", *aside,
             " and started from the declared endpoints only");
  return control::State{};
}

/// Raises the soft limit on open files to the hard limit: every endpoint holds several fds
/// (its TAP queues, the bind socket and a session, a kick and a call eventfd per ring, the
/// guest's memory regions), and the usual soft limit of 1024 stops vpd at about a hundred
/// endpoints. Says once when even the hard limit is short of about 8 fds per endpoint in
/// `endpoints` plus a margin.
void raise_fd_limit(size_t endpoints) {
  constexpr rlim_t kFdsPerEndpoint = 8;
  constexpr rlim_t kMargin = 64;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur != limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      limit = raised;
    } else {
      log::warning("could not raise the open-file limit from ", limit.rlim_cur, " to ",
                   limit.rlim_max, ": ", std::strerror(errno));
    }
  }
  const rlim_t need = static_cast<rlim_t>(endpoints) * kFdsPerEndpoint + kMargin;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < need) {
    log::warning("the open-file limit is ", limit.rlim_cur, ", short of the about ", need, " that ",
                 endpoints, " endpoint", endpoints == 1 ? "" : "s",
                 " may need; raise LimitNOFILE= (or ulimit -Hn)");
  }
}

/// Registers `fd` for EPOLLIN with its own number as the tag.
void watch_readable(int epoll, int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev);
}

/// The control thread once vpd is ready: signals, a periodic tick and the control clients,
/// in one epoll.
class ControlLoop {
 public:
  ControlLoop(const Options& options, const sigset_t& signals, Registry& registry,
              Dataplane& dataplane, EventQueue& events, std::string socket_path)
      : options_(options),
        registry_(registry),
        dataplane_(dataplane),
        events_(events),
        socket_path_(std::move(socket_path)),
        epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        sigfd_(::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC)) {}

  /// Serves until a stop signal (0) or a failure (1) on the control sockets.
  int run(ControlSockets sockets) {
    if (!epoll_ || !sigfd_) {
      log::error("control loop: ", std::strerror(errno));
      return 1;
    }
    std::string read_only;
    for (const auto& l : sockets.listeners) {
      if (l.access == ControlServer::Access::kReadOnly) read_only = l.path;
    }
    const bool activated = sockets.activated;
    ControlServer server(
        std::move(sockets.listeners), epoll_.get(),
        [&](const control::Request& request, const PeerCredentials& peer) {
          return handle(request, peer);
        },
        options_.request_timeout);
    start_tick();
    watch_readable(epoll_.get(), sigfd_.get());
    watch_readable(epoll_.get(), timer_.get());
    watch_readable(epoll_.get(), events_.fd());
    // Changes behind vpd's back: without the subscription vpd still works, but no longer
    // notices them (said once).
    std::optional<net::LinkEvents> links;
    if (auto opened = net::LinkEvents::open()) {
      links.emplace(std::move(*opened));
      watch_readable(epoll_.get(), links->fd());
    } else {
      log::warning("not watching link changes: ", opened.error().message,
                   "; changes made behind vpd's back go unnoticed");
    }
    log::notice("vpd ", kVersion, " ready: ", registry_.size(), " endpoint",
                registry_.size() == 1 ? "" : "s", ", control socket ", socket_path_, ", read-only ",
                read_only, activated ? " (from systemd)" : "");
    log::info("bounds: a front-end message arrives whole within ", options_.message_timeout.count(),
              " s (--message-timeout), a control request line within ",
              options_.request_timeout.count(), " s (--request-timeout)");
    sd_notify(0, str("READY=1\n", status_line(registry_, socket_path_)).c_str());
    if (watchdog_) pet_watchdog();

    for (;;) {
      epoll_event events[32];
      const int n = ::epoll_wait(epoll_.get(), events, 32, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        log::error("epoll_wait: ", std::strerror(errno));
        return 1;
      }
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == sigfd_.get()) {
          if (!on_signals()) return 0;
        } else if (fd == timer_.get()) {
          uint64_t ticks = 0;
          (void)!::read(timer_.get(), &ticks, sizeof ticks);
          if (watchdog_) pet_watchdog();
          server.sweep_idle();
        } else if (links && fd == links->fd()) {
          if (!links->drain([&](const net::LinkEvent& ev) { registry_.on_link_event(ev); })) {
            registry_.mark_all();
          }
          registry_.reconcile_marked();
        } else if (fd == events_.fd()) {
          uint64_t lost = 0;
          for (const Event& event : events_.drain(lost)) server.publish(event);
          if (lost > 0) server.publish_lost(lost);
        } else if (server.owns(fd)) {
          server.on_event(fd, events[i].events);
        }
      }
    }
  }

 private:
  control::Response handle(const control::Request& request, const PeerCredentials& peer) {
    const Caller caller{str("uid ", peer.uid, " pid ", peer.pid)};
    control::Response response = registry_.handle(request, caller);
    const bool change = request.op == control::op::kCreate || request.op == control::op::kSet ||
                        request.op == control::op::kDestroy;
    if (change && !response.ok) {
      log::info(request.endpoint.empty() ? "vpctl" : request.endpoint, ": refused ", request.op,
                " (", response.error.code, ") from ", caller.who, ": ", response.error.message);
    }
    return response;
  }

  /// One periodic tick: the watchdog (at half its interval) and idle-client sweeping.
  void start_tick() {
    watchdog_ = sd_watchdog_enabled(0, &watchdog_usec_) > 0;
    // Often enough that a request line is closed within half its timeout past the bound.
    uint64_t tick_usec = std::min<uint64_t>(
        5'000'000, static_cast<uint64_t>(options_.request_timeout.count()) * 1'000'000 / 2);
    if (watchdog_)
      tick_usec = std::min<uint64_t>(tick_usec, std::max<uint64_t>(watchdog_usec_ / 2, 1000));
    timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    itimerspec spec{};
    spec.it_interval.tv_sec = static_cast<time_t>(tick_usec / 1'000'000);
    spec.it_interval.tv_nsec = static_cast<long>(tick_usec % 1'000'000 * 1000);
    spec.it_value = spec.it_interval;
    ::timerfd_settime(timer_.get(), 0, &spec, nullptr);
  }

  /// WATCHDOG=1 only while the control thread runs (this call) and every data-path worker
  /// answers a probe: a wedged worker must let systemd restart vpd. The probe waits at most a
  /// quarter of the watchdog interval (and 1 s), so the control thread keeps serving.
  void pet_watchdog() {
    const auto timeout =
        std::chrono::milliseconds(std::clamp<uint64_t>(watchdog_usec_ / 4000, 1, 1000));
    const bool answered = dataplane_.responsive(timeout);
    if (!answered && !withheld_) {
      log::error("a data-path worker does not answer within ", timeout.count(),
                 " ms; WATCHDOG=1 is withheld so that systemd restarts vpd");
    } else if (answered && withheld_) {
      log::notice("every data-path worker answers again; WATCHDOG=1 resumes");
    }
    withheld_ = !answered;
    if (answered) sd_notify(0, "WATCHDOG=1");
  }

  /// Reads the pending signals: SIGHUP reloads the configuration, the others stop vpd.
  /// False when vpd is to stop.
  bool on_signals() {
    signalfd_siginfo si{};
    while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
      if (si.ssi_signo != SIGHUP) {
        log::notice("stopping on signal ", static_cast<int>(si.ssi_signo),
                    "; TAP devices stay for the next start");
        return false;
      }
      sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
      auto again = read_declarations(options_);
      if (!again) {
        log::error("reload refused, endpoints left as they are: ", again.error().message);
      } else {
        registry_.apply_declarations(*again);
        log::notice("configuration reloaded from ", options_.config);
      }
      sd_notify(0, str("READY=1\n", status_line(registry_, socket_path_)).c_str());
    }
    return true;
  }

  const Options& options_;
  Registry& registry_;
  Dataplane& dataplane_;
  EventQueue& events_;
  std::string socket_path_;
  Fd epoll_;
  Fd sigfd_;
  Fd timer_;
  bool watchdog_ = false;
  bool withheld_ = false;  // the last probe found a worker that did not answer
  uint64_t watchdog_usec_ = 0;
};

/// A control socket vpd made itself goes when vpd goes; systemd's stays with systemd.
struct UnlinkOnExit {
  std::vector<std::string> paths;
  ~UnlinkOnExit() {
    for (const auto& path : paths) ::unlink(path.c_str());
  }
};

/// Start-up: declarations, the state directory, the saved state, netlink, the data-path
/// workers and the registry; then the control loop until vpd stops.
int run(const Options& o) {
  if (o.verbose) log::set_threshold(log::Level::kDebug);
  auto declarations = read_declarations(o);
  if (!declarations) {
    log::error(declarations.error().message);
    return 1;
  }
  if (o.check_config) {
    std::printf("%s: %zu endpoint declaration%s, no errors\n", o.config.c_str(),
                declarations->size(), declarations->size() == 1 ? "" : "s");
    return 0;
  }
  if (::geteuid() != 0) {
    log::warning("vpd is not running as root; creating TAP devices needs CAP_NET_ADMIN");
  }
  const sigset_t signals = block_signals();
  StoppingGuard stopping;
  auto lock = lock_state_dir(o);
  if (!lock) {
    log::error(lock.error().message);
    return 1;
  }
  const std::string state_path = o.state_dir + "/state.json";
  auto state = load_saved_state(state_path);
  if (!state) {
    log::error(state.error().message);
    return 1;
  }
  raise_fd_limit(state->endpoints.size() + declarations->size());
  auto netlink = net::Netlink::open();
  if (!netlink) {
    log::error(netlink.error().message);
    return 1;
  }
  // Events for `vpctl monitor`, from the registry and the workers; outlives both.
  EventQueue events;
  // Data-path workers: --workers N, or one per core, at most 4. Each owns whole endpoints;
  // a vhost-user endpoint's queue pairs beyond the first run on the others.
  const unsigned workers =
      o.workers ? o.workers : std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
  Dataplane dataplane(workers, o.io_uring, &events, o.message_timeout);
  Registry registry(std::move(*netlink), {o.runtime_dir, state_path}, net::read_machine_id(),
                    dataplane, &events);
  sd_notify(0, "STATUS=restoring saved endpoints");
  registry.restore(*state);
  registry.apply_declarations(*declarations);

  auto sockets = control_sockets(o.runtime_dir);
  if (!sockets) {
    log::error("control socket ", sockets.error().message);
    return 1;
  }
  UnlinkOnExit unlink_sockets{sockets->own};
  std::string socket_path = str(o.runtime_dir, "/", control::kSocketName);
  for (const auto& l : sockets->listeners) {
    if (l.access == ControlServer::Access::kFull) socket_path = l.path;
  }
  ControlLoop loop(o, signals, registry, dataplane, events, socket_path);
  return loop.run(std::move(*sockets));
}

}  // namespace
}  // namespace vp::daemon

int main(int argc, char** argv) {
  auto options = vp::daemon::parse_options(argc, argv);
  if (!options) {
    std::fprintf(stderr, "vpd: %s\n", options.error().message.c_str());
    return 2;
  }
  if (options->help) {
    std::fputs(vp::daemon::kUsage, stdout);
    return 0;
  }
  if (options->version) {
    std::printf("vpd %s (control protocol %d)\n", vp::kVersion, vp::kProtocolVersion);
    return 0;
  }
  return vp::daemon::run(*options);
}
