#include "support/harness.hpp"

#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "net/link.hpp"
#include "sys/unix_socket.hpp"

extern char** environ;

namespace vp::test {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    bool overridden = false;
    for (const auto& x : extra) {
      if (kv.substr(0, kv.find('=') + 1) == x.substr(0, x.find('=') + 1)) overridden = true;
    }
    if (!overridden) env.push_back(kv);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

int wait_status(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return 128 + SIGKILL;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

// Child --------------------------------------------------------------------------------------

Child::Child(const std::vector<std::string>& argv, const ChildIo& io)
    : stop_signal_(io.stop_signal) {
  std::vector<std::string> args = argv;
  std::vector<std::string> env = environment_with(io.extra_env);
  auto c_args = c_strings(args);
  auto c_env = c_strings(env);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (io.stdin_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, io.stdin_fd, 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  if (!io.output.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, io.output.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  if (io.stdout_fd >= 0) posix_spawn_file_actions_adddup2(&actions, io.stdout_fd, 1);
  if (io.stderr_fd >= 0) posix_spawn_file_actions_adddup2(&actions, io.stderr_fd, 2);
  if (::posix_spawnp(&pid_, c_args[0], &actions, nullptr, c_args.data(), c_env.data()) != 0) {
    pid_ = -1;
  }
  posix_spawn_file_actions_destroy(&actions);
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), stop_signal_(other.stop_signal_) {}

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    stop_signal_ = other.stop_signal_;
  }
  return *this;
}

Child::~Child() { stop(); }

void Child::stop() noexcept {
  if (pid_ <= 0) return;
  ::kill(pid_, stop_signal_);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

bool Child::running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

int Child::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  return wait_status(std::exchange(pid_, -1), timeout);
}

int Child::terminate(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  return wait_exit(timeout);
}

std::string enter_private_netns() {
  if (::unshare(CLONE_NEWNET) != 0)
    return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
  auto nl = net::Netlink::open();
  if (!nl) return nl.error().message;
  auto lo = nl->find_link("lo");
  if (!lo || !*lo) return "no lo in the new namespace";
  if (auto ok = nl->set_up((*lo)->ifindex, true); !ok) return ok.error().message;
  return "";
}

Run run(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
        std::chrono::seconds timeout) {
  Run result;
  TempDir tmp;
  const std::string out_path = tmp.path() + "/out";
  const std::string err_path = tmp.path() + "/err";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  std::vector<std::string> args = argv;
  auto env = environment_with(extra_env);
  auto c_args = c_strings(args);
  auto c_env = c_strings(env);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, c_args[0], &actions, nullptr, c_args.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    result.err = std::string("spawn ") + argv[0] + ": " + std::strerror(rc);
    return result;
  }
  result.status = wait_status(pid, timeout);
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

nlohmann::json ip_json(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"ip", "-j"};
  argv.insert(argv.end(), args.begin(), args.end());
  Run r = run(argv);
  if (r.status != 0) return nullptr;
  return nlohmann::json::parse(r.out, nullptr, false);
}

nlohmann::json link_json(const std::string& name) {
  auto j = ip_json({"-d", "link", "show", "dev", name});
  if (!j.is_array() || j.empty()) return nullptr;
  return j[0];
}

std::vector<std::string> addresses_of(const std::string& name) {
  std::vector<std::string> out;
  auto j = ip_json({"addr", "show", "dev", name});
  if (!j.is_array() || j.empty()) return out;
  for (const auto& a : j[0].value("addr_info", nlohmann::json::array())) {
    if (a.value("scope", "") == "link") continue;
    out.push_back(a.value("local", "") + "/" + std::to_string(a.value("prefixlen", 0)));
  }
  return out;
}

Fd packet_socket(const std::string& ifname, int flags) {
  Fd fd(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | flags, htons(ETH_P_ALL)));
  if (!fd) return fd;
  sockaddr_ll where{};
  where.sll_family = AF_PACKET;
  where.sll_protocol = htons(ETH_P_ALL);
  where.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
  if (where.sll_ifindex == 0 ||
      ::bind(fd.get(), reinterpret_cast<sockaddr*>(&where), sizeof where) != 0) {
    return Fd();
  }
  return fd;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool sh(const std::string& command) { return std::system(command.c_str()) == 0; }

TempDir::TempDir() {
  char tmpl[] = "/tmp/vpd-test-XXXXXX";
  const char* p = ::mkdtemp(tmpl);
  path_ = p ? p : "/tmp";
  ::chmod(path_.c_str(), 0755);
}

TempDir::~TempDir() {
  std::error_code ec;
  if (path_ != "/tmp") std::filesystem::remove_all(path_, ec);
}

Vpd::Vpd(const std::string& dir) : dir_(dir) {}

Vpd::~Vpd() {
  if (pid_ > 0) kill9();
}

std::string Vpd::start(const std::vector<std::string>& extra_args,
                       const std::vector<std::string>& extra_env) {
  notes_.clear();
  const std::string notify_path = dir_ + "/notify.sock";
  ::unlink(notify_path.c_str());
  notify_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, notify_path.c_str(), sizeof addr.sun_path - 1);
  if (::bind(notify_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return std::string("bind notify socket: ") + std::strerror(errno);
  }
  std::vector<std::string> args{VPD_BINARY,    "--config",    config_path(), "--runtime-dir",
                                runtime_dir(), "--state-dir", state_dir()};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<std::string> extra{"NOTIFY_SOCKET=" + notify_path};
  extra.insert(extra.end(), extra_env.begin(), extra_env.end());
  auto env = environment_with(extra);
  auto c_args = c_strings(args);
  auto c_env = c_strings(env);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const int rc = ::posix_spawn(&pid_, c_args[0], &actions, nullptr, c_args.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    return std::string("spawn vpd: ") + std::strerror(rc);
  }
  if (wait_notification("READY=1", std::chrono::seconds(20))) return "";
  std::string why = alive() ? "vpd did not send READY=1 within 20 s" : "vpd exited";
  return why + "; its log:\n" + log();
}

int Vpd::stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  const int status = wait_status(pid_, std::chrono::seconds(20));
  pid_ = -1;
  drain_notifications(0);
  return status;
}

void Vpd::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_status(pid_, std::chrono::seconds(20));
  pid_ = -1;
}

bool Vpd::alive() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void Vpd::drain_notifications(int timeout_ms) {
  if (!notify_) return;
  pollfd p{notify_.get(), POLLIN, 0};
  while (::poll(&p, 1, timeout_ms) > 0) {
    char buf[4096];
    const ssize_t n = ::recv(notify_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
    notes_.emplace_back(buf, static_cast<size_t>(n));
    timeout_ms = 0;
  }
}

std::vector<std::string> Vpd::notifications() {
  drain_notifications(0);
  return notes_;
}

bool Vpd::wait_notification(const std::string& needle, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t checked = 0;
  for (;;) {
    for (; checked < notes_.size(); ++checked) {
      if (notes_[checked].find(needle) != std::string::npos) return true;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (!alive() && notes_.size() == checked) {
      drain_notifications(0);
      if (notes_.size() == checked) return false;
      continue;
    }
    drain_notifications(static_cast<int>(std::min<long>(left.count(), 50)));
  }
}

std::string Vpd::log() const { return read_file(log_path()); }

Run Vpd::ctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{VPCTL_BINARY, "--socket", socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

nlohmann::json Vpd::ctl_json(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{"--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  Run r = ctl(argv);
  return nlohmann::json::parse(r.out, nullptr, false);
}

std::string raw_exchange(const std::string& socket, const std::string& bytes,
                         std::chrono::milliseconds timeout, bool shut_write) {
  auto fd = connect_unix(socket);
  if (!fd) return "connect failed: " + fd.error().message;
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd->get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  if (shut_write) ::shutdown(fd->get(), SHUT_WR);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd->get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    const ssize_t n = ::recv(fd->get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace vp::test
