#pragma once

// Test harness for the integration tier: private network namespaces, a real vpd process
// (readiness through a test NOTIFY_SOCKET) and the real vpctl.

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sys/fd.hpp"

namespace vp::test {

/// Moves the calling process into a new network namespace with `lo` up. Returns "" on
/// success, else what failed.
std::string enter_private_netns();

struct Run {
  int status = -1;  // exit status, or 128+signal
  std::string out;
  std::string err;
};

/// Runs `argv` (no shell) and waits, up to `timeout`; output is captured.
Run run(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {},
        std::chrono::seconds timeout = std::chrono::seconds(60));

/// Runs `ip -j ARGS...` and parses its output ("null" on failure).
nlohmann::json ip_json(const std::vector<std::string>& args);
/// `ip -j -d link show NAME` as one object, or null when there is no such interface.
nlohmann::json link_json(const std::string& name);
/// "A/N" strings of the global addresses of NAME.
std::vector<std::string> addresses_of(const std::string& name);
/// The bytes of a file, "" when it cannot be read.
std::string file_text(const std::string& path);
/// Runs a shell command; true when it exits 0.
bool sh(const std::string& command);
/// An AF_PACKET socket bound to interface `ifname` for every protocol (ETH_P_ALL): it sees
/// every frame the kernel receives on or sends out of it, and sends raw frames out of it.
/// `flags` are added to SOCK_RAW | SOCK_CLOEXEC (e.g. SOCK_NONBLOCK). Invalid on failure.
Fd packet_socket(const std::string& ifname, int flags = 0);

/// Where a spawned child's standard streams go. Each fd (if not -1) is dup'ed onto the
/// child's stream; `output` (if not empty) is a file stdout and stderr are appended to.
/// stdin is /dev/null unless `stdin_fd` says otherwise.
struct ChildIo {
  std::string output;
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  std::vector<std::string> extra_env;  // NAME=VALUE added to this process's environment
  /// What the destructor sends a child still running: SIGKILL, or SIGTERM for a launcher
  /// (sudo, setpriv) that must pass the signal on to what it started.
  int stop_signal = SIGKILL;

  /// stdout and stderr appended to the file `path`.
  static ChildIo appending_to(std::string path) {
    ChildIo io;
    io.output = std::move(path);
    return io;
  }
};

/// A child process started from `argv` (no shell; argv[0] searched in PATH), stopped and
/// reaped on destruction unless it was waited for.
class Child {
 public:
  Child() = default;
  explicit Child(const std::vector<std::string>& argv, const ChildIo& io = {});
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  /// False when it could not be started.
  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  /// True while it has not exited.
  bool running() const;
  /// Waits for it to exit: its exit status or 128+signal; after `timeout` it is killed
  /// (128+SIGKILL).
  int wait_exit(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  /// SIGTERM, then its exit status (see wait_exit).
  int terminate(std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  void stop() noexcept;

  pid_t pid_ = -1;
  int stop_signal_ = SIGKILL;
};

/// A temporary directory, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// One vpd process with its own runtime, state and config paths under a directory.
class Vpd {
 public:
  explicit Vpd(const std::string& dir);
  ~Vpd();

  std::string runtime_dir() const { return dir_ + "/run"; }
  std::string state_dir() const { return dir_ + "/state"; }
  std::string config_path() const { return dir_ + "/vpd.conf"; }
  std::string socket() const { return runtime_dir() + "/control.sock"; }
  std::string log_path() const { return dir_ + "/vpd.log"; }
  pid_t pid() const { return pid_; }

  /// Starts vpd with the standard paths plus `extra_args`, then waits for READY=1 on
  /// the test's NOTIFY_SOCKET. Returns "" when ready, else why not (with its log).
  std::string start(const std::vector<std::string>& extra_args = {},
                    const std::vector<std::string>& extra_env = {});
  /// SIGTERM and wait; returns the exit status.
  int stop();
  /// SIGKILL and wait.
  void kill9();
  /// Whether the process is still running.
  bool alive();
  /// Every notification received so far ("READY=1\nSTATUS=...").
  std::vector<std::string> notifications();
  /// Waits for a notification containing `needle`.
  bool wait_notification(const std::string& needle, std::chrono::milliseconds timeout);
  std::string log() const;

  /// Runs vpctl --socket SOCKET ARGS...
  Run ctl(const std::vector<std::string>& args) const;
  /// Runs vpctl --json ... and parses stdout (null on failure).
  nlohmann::json ctl_json(const std::vector<std::string>& args) const;

 private:
  void drain_notifications(int timeout_ms);

  std::string dir_;
  pid_t pid_ = -1;
  Fd notify_;
  std::vector<std::string> notes_;
};

/// Sends one raw line (or bytes) to a Unix socket and returns everything read back until
/// the peer closes or `timeout` passes.
std::string raw_exchange(const std::string& socket, const std::string& bytes,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(5000),
                         bool shut_write = true);

/// True when the JSON array `names` (vpd's features, toggles) has `name`.
inline bool contains_name(const nlohmann::json& names, const std::string& name) {
  if (!names.is_array()) return false;
  for (const auto& n : names) {
    if (n.is_string() && n.get<std::string>() == name) return true;
  }
  return false;
}

}  // namespace vp::test
