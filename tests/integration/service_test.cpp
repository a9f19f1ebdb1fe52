// vpd as a service: readiness, stopping, watchdog and reload notifications on a test
// NOTIFY_SOCKET, socket activation through systemd-socket-activate, the fallback control
// socket's permissions, one vpd per state directory, the command line, and who asked for
// a change. Each test runs in a network namespace of its own, so it needs root.

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/journal.hpp"
#include "support/harness.hpp"
#include "sys/fd.hpp"
#include "sys/unix_socket.hpp"

extern char** environ;

namespace vp {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Generous bounds for waiting only; no test asserts how long anything took.
constexpr std::chrono::milliseconds kWait = 20s;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// Names of the endpoints in a `vpctl --json list` answer.
std::vector<std::string> endpoint_names(const json& list) {
  std::vector<std::string> names;
  if (!list.is_array()) return names;
  for (const auto& e : list) names.push_back(e.value("name", ""));
  std::sort(names.begin(), names.end());
  return names;
}

/// Index of the first notification at or after `from` that contains `needle`.
std::optional<size_t> find_note(const std::vector<std::string>& notes, const std::string& needle,
                                size_t from = 0) {
  for (size_t i = from; i < notes.size(); ++i) {
    if (contains(notes[i], needle)) return i;
  }
  return std::nullopt;
}

/// Waits until a notification at or after `from` contains `needle`; returns its index.
std::optional<size_t> wait_note(test::Vpd& vpd, const std::string& needle, size_t from = 0) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  for (;;) {
    if (auto i = find_note(vpd.notifications(), needle, from)) return i;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(20ms);
  }
}

size_t count_notes(const std::vector<std::string>& notes, const std::string& needle) {
  return static_cast<size_t>(std::count_if(notes.begin(), notes.end(),
                                           [&](const auto& n) { return contains(n, needle); }));
}

void expect_no_crash(const std::string& log) {
  for (const char* crash : {"terminate called", "Segmentation fault", "Aborted", "AddressSanitizer",
                            "runtime error:", "Assertion"}) {
    EXPECT_FALSE(contains(log, crash)) << "vpd's log shows a crash:\n" << log;
  }
}

/// Inode numbers (the N of "socket:[N]") of the listening Unix sockets bound to `path`,
/// from /proc/net/unix of this network namespace.
std::vector<unsigned long> listening_socket_inodes(const std::string& path) {
  std::vector<unsigned long> out;
  std::ifstream in("/proc/net/unix");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string num, refcount, protocol, flags, type, state, path_field;
    unsigned long inode = 0;
    fields >> num >> refcount >> protocol >> flags >> type >> state >> inode >> path_field;
    constexpr unsigned long kAcceptConnections = 0x10000;  // __SO_ACCEPTCON
    if (path_field == path && (std::stoul(flags, nullptr, 16) & kAcceptConnections)) {
      out.push_back(inode);
    }
  }
  return out;
}

/// Whether process `pid` holds the socket with inode `inode` among its descriptors.
bool holds_socket(pid_t pid, unsigned long inode) {
  const std::string want = "socket:[" + std::to_string(inode) + "]";
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code link_ec;
    if (std::filesystem::read_symlink(e.path(), link_ec).string() == want) return true;
  }
  return false;
}

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
class NotifyListener {
 public:
  explicit NotifyListener(const std::string& path) : path_(path) {
    ::unlink(path.c_str());
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fd_.reset();
  }
  bool ok() const { return fd_.valid(); }
  const std::string& path() const { return path_; }

  /// Waits until a notification contains `needle`.
  bool wait(const std::string& needle, std::chrono::milliseconds timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (find_note(notes_, needle)) return true;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 100))) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) notes_.emplace_back(buf, static_cast<size_t>(n));
    }
  }
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  std::string path_;
  Fd fd_;
  std::vector<std::string> notes_;
};

class Service : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(test::enter_private_netns(), "");
    vpd_ = std::make_unique<test::Vpd>(dir_.path());
  }

  void TearDown() override {
    if (!vpd_) return;
    if (vpd_->alive()) {
      EXPECT_EQ(vpd_->stop(), 0) << vpd_->log();
    }
    expect_no_crash(vpd_->log());
  }

  std::string state_path() const { return vpd_->state_dir() + "/state.json"; }
  /// What vpd saved: state.json's bytes and its journal's.
  std::string saved_bytes() const {
    return read_file(state_path()) + read_file(control::journal_path(state_path()));
  }

  test::TempDir dir_;
  std::unique_ptr<test::Vpd> vpd_;
};

// ---- sd_notify ----------------------------------------------------------------------------

TEST_F(Service, ready_comes_with_status_after_saved_endpoints_are_restored) {
  ASSERT_EQ(vpd_->start(), "");
  {
    const auto notes = vpd_->notifications();
    const auto ready = find_note(notes, "READY=1");
    ASSERT_TRUE(ready);
    EXPECT_TRUE(contains(notes[*ready], "\nSTATUS=0 endpoints")) << notes[*ready];
  }
  const std::vector<std::string> names{"vp0", "vp1", "vp2", "vp3", "vp4", "vp5", "vp6", "vp7"};
  for (const auto& n : names) {
    test::Run r = vpd_->ctl({n, "create", "mtu=1400"});
    ASSERT_EQ(r.status, 0) << r.err;
  }
  test::Run r = vpd_->ctl({"vp0", "address=10.7.0.1/24", "up"});
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(vpd_->stop(), 0);
  // Without their TAPs, vpd has to create every one again before it is ready.
  for (const auto& n : names) ASSERT_TRUE(test::sh("ip link del " + n)) << n;

  ASSERT_EQ(vpd_->start(), "");
  // READY=1 has arrived: the endpoints exist already, and the socket answers.
  for (const auto& n : names) {
    const json link = test::link_json(n);
    ASSERT_TRUE(link.is_object()) << n << " did not exist when READY=1 arrived";
    EXPECT_EQ(link.value("mtu", 0), 1400) << n;
  }
  EXPECT_EQ(test::addresses_of("vp0"), std::vector<std::string>{"10.7.0.1/24"});
  r = vpd_->ctl({"list"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(endpoint_names(vpd_->ctl_json({"list"})), names);

  const auto notes = vpd_->notifications();
  const auto ready = find_note(notes, "READY=1");
  ASSERT_TRUE(ready);
  EXPECT_TRUE(contains(notes[*ready], "\nSTATUS=8 endpoints")) << notes[*ready];
  EXPECT_TRUE(contains(notes[*ready], vpd_->socket())) << notes[*ready];
  const auto restoring = find_note(notes, "STATUS=restoring");
  ASSERT_TRUE(restoring) << "no STATUS= while restoring";
  EXPECT_LT(*restoring, *ready);
  EXPECT_EQ(count_notes(notes, "READY=1"), 1u);
}

TEST_F(Service, sigterm_sends_stopping) {
  ASSERT_EQ(vpd_->start(), "");
  ASSERT_EQ(vpd_->ctl({"vp0", "create"}).status, 0);
  EXPECT_EQ(vpd_->stop(), 0);
  const auto notes = vpd_->notifications();
  const auto ready = find_note(notes, "READY=1");
  const auto stopping = find_note(notes, "STOPPING=1");
  ASSERT_TRUE(ready);
  ASSERT_TRUE(stopping) << "no STOPPING=1 on SIGTERM";
  EXPECT_GT(*stopping, *ready);
  EXPECT_TRUE(contains(vpd_->log(), "stopping on signal 15")) << vpd_->log();
  // The TAP stays for the next start.
  EXPECT_TRUE(test::link_json("vp0").is_object());

  // SIGINT (Ctrl-C in a terminal) stops it the same way.
  ASSERT_EQ(vpd_->start(), "");
  ASSERT_EQ(::kill(vpd_->pid(), SIGINT), 0);
  ASSERT_TRUE(wait_note(*vpd_, "STOPPING=1")) << vpd_->log();
  EXPECT_EQ(vpd_->stop(), 0);
}

TEST_F(Service, watchdog_pings_when_watchdog_usec_is_set) {
  // sd_watchdog_enabled() ignores WATCHDOG_USEC when WATCHDOG_PID names another process.
  ::unsetenv("WATCHDOG_PID");
  ::unsetenv("WATCHDOG_USEC");
  test::TempDir other_dir;
  test::Vpd other(other_dir.path());
  ASSERT_EQ(other.start({}, {"WATCHDOG_USEC=2000000", "WATCHDOG_PID=1"}), "");

  ASSERT_EQ(vpd_->start({}, {"WATCHDOG_USEC=2000000"}), "");
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (count_notes(vpd_->notifications(), "WATCHDOG=1") < 3 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  const auto notes = vpd_->notifications();
  EXPECT_GE(count_notes(notes, "WATCHDOG=1"), 3u) << "vpd does not ping the watchdog";
  const auto ready = find_note(notes, "READY=1");
  const auto first_ping = find_note(notes, "WATCHDOG=1");
  ASSERT_TRUE(ready && first_ping);
  EXPECT_GT(*first_ping, *ready) << "a watchdog ping before READY=1";
  test::Run r = vpd_->ctl({"list"});
  EXPECT_EQ(r.status, 0) << r.err;

  // The other vpd ran as long and was told the watchdog belongs to pid 1.
  EXPECT_EQ(count_notes(other.notifications(), "WATCHDOG=1"), 0u);
  EXPECT_EQ(other.stop(), 0);
}

/// The thread ids of `pid`'s threads whose name (comm) starts with `prefix`.
std::vector<pid_t> threads_named(pid_t pid, const std::string& prefix) {
  std::vector<pid_t> tids;
  const std::string task = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(task, ec)) {
    if (read_file(entry.path().string() + "/comm").starts_with(prefix)) {
      tids.push_back(static_cast<pid_t>(std::stoi(entry.path().filename().string())));
    }
  }
  return tids;
}

TEST_F(Service, watchdog_stops_while_a_data_path_worker_is_wedged) {
  // A worker that never comes back to its epoll (here: stopped by ptrace, the rest of vpd
  // running) must stop the WATCHDOG=1 pings so that systemd restarts vpd; pings resume when
  // it answers again.
  ::unsetenv("WATCHDOG_PID");
  ::unsetenv("WATCHDOG_USEC");
  ASSERT_EQ(vpd_->start({}, {"WATCHDOG_USEC=1000000"}), "");
  ASSERT_TRUE(wait_note(*vpd_, "WATCHDOG=1")) << vpd_->log();
  const std::vector<pid_t> workers = threads_named(vpd_->pid(), "vpd-worker");
  ASSERT_FALSE(workers.empty()) << "no thread named vpd-worker* in vpd";
  const pid_t tid = workers.front();

  ASSERT_EQ(::ptrace(PTRACE_SEIZE, tid, nullptr, nullptr), 0) << std::strerror(errno);
  ASSERT_EQ(::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr), 0) << std::strerror(errno);
  int st = 0;
  ASSERT_EQ(::waitpid(tid, &st, __WALL), tid);
  // One ping may already be on its way; after that, none while the worker is stopped.
  std::this_thread::sleep_for(1500ms);
  const size_t before = count_notes(vpd_->notifications(), "WATCHDOG=1");
  std::this_thread::sleep_for(3s);
  const size_t during = count_notes(vpd_->notifications(), "WATCHDOG=1");
  // The control thread still answers while the worker is stuck.
  test::Run r = vpd_->ctl({"list"});
  ::ptrace(PTRACE_DETACH, tid, nullptr, nullptr);

  EXPECT_EQ(during, before) << "vpd pinged the watchdog while a worker was wedged";
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(vpd_->log(), "does not answer")) << vpd_->log();
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (count_notes(vpd_->notifications(), "WATCHDOG=1") <= during &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_GT(count_notes(vpd_->notifications(), "WATCHDOG=1"), during)
      << "the pings did not resume once the worker answered again";
  EXPECT_EQ(vpd_->stop(), 0);
}

TEST_F(Service, sighup_sends_reloading_then_ready) {
  ASSERT_EQ(vpd_->start(), "");
  ASSERT_EQ(vpd_->ctl({"vp0", "create"}).status, 0);
  size_t from = vpd_->notifications().size();
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("SIGHUP #" + std::to_string(round + 1));
    ASSERT_EQ(::kill(vpd_->pid(), SIGHUP), 0);
    const auto reloading = wait_note(*vpd_, "RELOADING=1", from);
    ASSERT_TRUE(reloading) << vpd_->log();
    const auto ready = wait_note(*vpd_, "READY=1", *reloading + 1);
    ASSERT_TRUE(ready) << "no READY=1 after RELOADING=1";
    const auto notes = vpd_->notifications();
    EXPECT_TRUE(contains(notes[*ready], "STATUS=1 endpoint")) << notes[*ready];
    from = *ready + 1;
    test::Run r = vpd_->ctl({"list"});
    EXPECT_EQ(r.status, 0) << r.err;
  }
  EXPECT_TRUE(contains(vpd_->log(), "configuration reloaded")) << vpd_->log();
  EXPECT_TRUE(vpd_->alive());
  EXPECT_EQ(endpoint_names(vpd_->ctl_json({"list"})), std::vector<std::string>{"vp0"});
}

// ---- the control socket -----------------------------------------------------------------

TEST_F(Service, socket_activation_serves_on_the_passed_socket) {
  if (test::run({"systemd-socket-activate", "--version"}).status != 0) {
    GTEST_SKIP() << "systemd-socket-activate is not installed";
  }
  ASSERT_TRUE(make_directories(vpd_->runtime_dir(), 0755));
  const std::string socket = vpd_->socket();
  NotifyListener notify(dir_.path() + "/activation-notify.sock");
  ASSERT_TRUE(notify.ok());
  // systemd-socket-activate (systemd 252 has no --now) listens at once and execs vpd in
  // its own process when the first connection arrives, passing the socket as fd 3. It
  // passes on only the environment it is told to.
  test::Child launcher(
      {"systemd-socket-activate", "-l", socket, "-E", "NOTIFY_SOCKET=" + notify.path(), VPD_BINARY,
       "--config", vpd_->config_path(), "--runtime-dir", vpd_->runtime_dir(), "--state-dir",
       vpd_->state_dir()},
      test::ChildIo::appending_to(vpd_->log_path()));
  ASSERT_GT(launcher.pid(), 0);
  std::vector<unsigned long> inodes;
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while ((inodes = listening_socket_inodes(socket)).empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(inodes.size(), 1u) << "systemd-socket-activate is not listening; its log:\n"
                               << vpd_->log();
  const unsigned long activated_inode = inodes.front();
  struct stat before {};
  ASSERT_EQ(::stat(socket.c_str(), &before), 0);

  // The first vpctl starts vpd and is answered by it.
  test::Run r = vpd_->ctl({"list"});
  EXPECT_EQ(r.status, 0) << r.err << "\nlog:\n" << vpd_->log();
  ASSERT_TRUE(notify.wait("READY=1")) << vpd_->log();
  EXPECT_TRUE(contains(vpd_->log(), "(from systemd)")) << vpd_->log();
  std::error_code ec;
  EXPECT_EQ(std::filesystem::canonical("/proc/" + std::to_string(launcher.pid()) + "/exe", ec),
            std::filesystem::canonical(VPD_BINARY))
      << "the process systemd-socket-activate started is not vpd";

  // vpd serves on the very socket it was given: the same file, still the only listener,
  // held by vpd.
  struct stat after {};
  ASSERT_EQ(::stat(socket.c_str(), &after), 0);
  EXPECT_TRUE(S_ISSOCK(after.st_mode));
  EXPECT_EQ(after.st_ino, before.st_ino) << "vpd replaced the socket file";
  EXPECT_EQ(listening_socket_inodes(socket), std::vector<unsigned long>{activated_inode});
  EXPECT_TRUE(holds_socket(launcher.pid(), activated_inode));

  r = vpd_->ctl({"vp0", "create", "up"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(test::link_json("vp0").is_object());
  EXPECT_EQ(endpoint_names(vpd_->ctl_json({"list"})), std::vector<std::string>{"vp0"});

  EXPECT_EQ(launcher.terminate(kWait), 0);
  EXPECT_TRUE(notify.wait("STOPPING=1"));
  expect_no_crash(vpd_->log());
}

TEST_F(Service, own_socket_without_group_vpd_is_for_root_only) {
  if (::getgrnam("vpd") != nullptr) GTEST_SKIP() << "this host has a group vpd";
  // A LISTEN_FDS meant for another process is not vpd's to use.
  ASSERT_EQ(vpd_->start({}, {"LISTEN_FDS=1", "LISTEN_PID=1"}), "");
  struct stat st {};
  ASSERT_EQ(::stat(vpd_->socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_FALSE(contains(vpd_->log(), "(from systemd)")) << vpd_->log();
  test::Run r = vpd_->ctl({"list"});
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST_F(Service, own_socket_with_group_vpd_is_for_the_group) {
  // Create the group only for this test when the host has none.
  struct GroupGuard {
    bool created = false;
    ~GroupGuard() {
      if (created) test::sh("groupdel vpd");
    }
  } guard;
  if (::getgrnam("vpd") == nullptr) {
    ASSERT_TRUE(test::sh("groupadd --system vpd"));
    guard.created = true;
  }
  const group* g = ::getgrnam("vpd");
  ASSERT_NE(g, nullptr);
  const gid_t gid = g->gr_gid;
  ASSERT_EQ(vpd_->start(), "");
  struct stat st {};
  ASSERT_EQ(::stat(vpd_->socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, gid);
  test::Run r = vpd_->ctl({"list"});
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST_F(Service, second_vpd_with_the_same_state_dir_is_refused) {
  ASSERT_EQ(vpd_->start(), "");
  ASSERT_EQ(vpd_->ctl({"vp0", "create"}).status, 0);
  const std::string state = saved_bytes();
  struct stat before {};
  ASSERT_EQ(::stat(vpd_->socket().c_str(), &before), 0);

  // Exactly the first one's command line.
  test::Run second =
      test::run({VPD_BINARY, "--config", vpd_->config_path(), "--runtime-dir", vpd_->runtime_dir(),
                 "--state-dir", vpd_->state_dir()},
                {"NOTIFY_SOCKET=" + dir_.path() + "/nobody.sock"}, std::chrono::seconds(20));
  EXPECT_NE(second.status, 0);
  EXPECT_NE(second.status, 128 + SIGKILL) << "the second vpd did not exit by itself";
  EXPECT_TRUE(contains(second.err, "lock")) << second.err;
  EXPECT_TRUE(contains(second.err, vpd_->state_dir())) << second.err;

  // The first keeps serving, on the same socket, with the same state.
  EXPECT_TRUE(vpd_->alive());
  test::Run r = vpd_->ctl({"list"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(endpoint_names(vpd_->ctl_json({"list"})), std::vector<std::string>{"vp0"});
  struct stat after {};
  ASSERT_EQ(::stat(vpd_->socket().c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(saved_bytes(), state);
  r = vpd_->ctl({"vp1", "create"});
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST_F(Service, control_changes_are_logged_with_the_callers_pid) {
  ASSERT_EQ(vpd_->start(), "");
  const std::string out = dir_.path() + "/vpctl.out";
  auto vpctl = [&](const std::vector<std::string>& args) -> pid_t {
    std::vector<std::string> argv{VPCTL_BINARY, "--socket", vpd_->socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    test::Child child(argv, test::ChildIo::appending_to(out));
    const pid_t pid = child.pid();
    EXPECT_GT(pid, 0);
    EXPECT_EQ(child.wait_exit(kWait), 0) << read_file(out);
    return pid;
  };
  const pid_t created = vpctl({"vp0", "create"});
  const pid_t changed = vpctl({"vp0", "mtu=1400", "up"});
  const pid_t destroyed = vpctl({"vp0", "destroy"});
  const std::string log = vpd_->log();
  auto line_with = [&](const std::string& needle) {
    const size_t at = log.find(needle);
    if (at == std::string::npos) return std::string();
    const size_t start = log.rfind('\n', at) + 1;  // npos + 1 == 0
    return log.substr(start, log.find('\n', at) - start);
  };
  EXPECT_TRUE(
      contains(line_with("vp0: created with"), "(by uid 0 pid " + std::to_string(created) + ")"))
      << log;
  EXPECT_TRUE(contains(line_with("vp0: set"), "(by uid 0 pid " + std::to_string(changed) + ")"))
      << log;
  EXPECT_TRUE(
      contains(line_with("vp0: destroyed"), "(by uid 0 pid " + std::to_string(destroyed) + ")"))
      << log;

  // A raw client is identified by the kernel too, whatever it claims.
  auto fd = connect_unix(vpd_->socket());
  ASSERT_TRUE(fd);
  const std::string request = R"({"version":1,"op":"create","endpoint":"vp1","args":["up"]})"
                              "\n";
  ASSERT_EQ(::send(fd->get(), request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  char buf[4096];
  pollfd p{fd->get(), POLLIN, 0};
  ASSERT_GT(::poll(&p, 1, static_cast<int>(kWait.count())), 0);
  ASSERT_GT(::recv(fd->get(), buf, sizeof buf, 0), 0);
  EXPECT_TRUE(contains(vpd_->log(), "vp1: created")) << vpd_->log();
  EXPECT_TRUE(contains(vpd_->log(), "(by uid 0 pid " + std::to_string(::getpid()) + ")"))
      << vpd_->log();
}

// ---- the command line -------------------------------------------------------------------

TEST(ServiceCommandLine, version_help_and_unknown_option) {
  test::Run version = test::run({VPD_BINARY, "--version"});
  EXPECT_EQ(version.status, 0) << version.err;
  EXPECT_TRUE(version.out.starts_with("vpd ")) << version.out;
  EXPECT_TRUE(contains(version.out, "control protocol 1")) << version.out;

  test::Run help = test::run({VPD_BINARY, "--help"});
  EXPECT_EQ(help.status, 0) << help.err;
  EXPECT_TRUE(help.out.starts_with("Usage: vpd")) << help.out;
  for (const char* option : {"--config", "--runtime-dir", "--state-dir", "--version"}) {
    EXPECT_TRUE(contains(help.out, option)) << option;
  }

  test::Run bogus = test::run({VPD_BINARY, "--bogus"});
  EXPECT_EQ(bogus.status, 2);
  EXPECT_TRUE(contains(bogus.err, "--bogus")) << bogus.err;
  EXPECT_EQ(bogus.out, "");

  test::Run missing = test::run({VPD_BINARY, "--state-dir"});
  EXPECT_EQ(missing.status, 2);
  EXPECT_TRUE(contains(missing.err, "--state-dir")) << missing.err;
}

TEST(ServiceCommandLine, timeouts_default_to_10_and_30_s_and_bad_values_are_refused) {
  test::Run help = test::run({VPD_BINARY, "--help"});
  EXPECT_EQ(help.status, 0) << help.err;
  EXPECT_TRUE(contains(help.out, "--message-timeout SECONDS")) << help.out;
  EXPECT_TRUE(contains(help.out, "incomplete this long (1 to 3600, default 10)")) << help.out;
  EXPECT_TRUE(contains(help.out, "--request-timeout SECONDS")) << help.out;
  EXPECT_TRUE(contains(help.out, "newline this long (1 to 3600, default 30)")) << help.out;
  for (const char* bad : {"0", "3601", "ten", "5s", "-1"}) {
    test::Run r = test::run({VPD_BINARY, "--message-timeout", bad});
    EXPECT_EQ(r.status, 2) << bad;
    EXPECT_TRUE(contains(r.err, std::string("--message-timeout takes a whole number of seconds "
                                            "from 1 to 3600, not \"") +
                                    bad + "\""))
        << r.err;
    r = test::run({VPD_BINARY, std::string("--request-timeout=") + bad});
    EXPECT_EQ(r.status, 2) << bad;
    EXPECT_TRUE(contains(r.err, "--request-timeout takes a whole number of seconds")) << r.err;
  }
}

}  // namespace
}  // namespace vp
