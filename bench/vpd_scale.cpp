// vpd_scale: how vpd copes with many endpoints. It prints figures; it asserts nothing.
//
// Run as root. Everything happens inside a private network namespace (unshare(CLONE_NEWNET)),
// in a temporary directory: a real vpd child process (its own --config, --runtime-dir and
// --state-dir), driven by the real vpctl, one call after the other as an operator's script
// would. The steps:
//
//   create    N x `vpctl vpI create up` (each a TAP with its own bind socket): total and
//             per-call time.
//   idle      vpd's CPU time (utime + stime from /proc/PID/stat) over --idle seconds, after
//             a second of rest.
//   memory    VmRSS of vpd after the creates minus before, divided by N.
//   restart   kill -9, start vpd again, and time until every endpoint's bind socket accepts
//             a connection (each socket is tried until it does), which also shows that every
//             accepted create was saved before vpctl got its answer.
//   fd limit  vpd raised its soft NOFILE limit to the hard one (/proc/PID/limits).
//
// --run-base picks where the temporary directory goes: /tmp is the disk (what users have),
// a tmpfs takes the disk out of the figure. vpd's and the vpctl calls' CPU per call (user +
// sys) are printed too: they depend less than the wall time on what else the machine runs.
//
// Each figure is printed with its target and "met" / "not met".

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vpd_scale: %s\n", what.c_str());
  std::exit(1);
}

struct Options {
  int endpoints = 1000;
  double idle_seconds = 5;
  std::string vpd = VPD_BINARY;
  std::string vpctl = VPCTL_BINARY;
  std::string run_base = "/tmp";
  bool keep = false;
};

const char* const kUsage =
    "Usage: vpd_scale [OPTIONS]   (as root)\n"
    "\n"
    "Creates N endpoints in a real vpd with the real vpctl (sequential calls) inside a private\n"
    "network namespace, and prints the create time, vpd's idle CPU, RSS per endpoint and the\n"
    "time from kill -9 and a new start to every bind socket accepting again.\n"
    "\n"
    "  --endpoints N   endpoints to create (default 1000)\n"
    "  --idle N        seconds over which idle CPU is measured (default 5)\n"
    "  --vpd PATH      vpd binary (default: the one built with this benchmark)\n"
    "  --vpctl PATH    vpctl binary (default: likewise)\n"
    "  --run-base DIR  where the temporary directory (state, sockets) goes (default /tmp);\n"
    "                  a tmpfs such as /dev/shm takes the disk out of the figure\n"
    "  --keep          keep the temporary directory (vpd's log) and print its path\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--endpoints") {
      o.endpoints = std::atoi(value().c_str());
      if (o.endpoints < 1 || o.endpoints > 100000) die("--endpoints takes 1 to 100000");
    } else if (a == "--idle") {
      o.idle_seconds = std::atof(value().c_str());
      if (o.idle_seconds <= 0 || o.idle_seconds > 600) die("--idle takes 0 to 600 seconds");
    } else if (a == "--vpd") {
      o.vpd = value();
    } else if (a == "--vpctl") {
      o.vpctl = value();
    } else if (a == "--run-base") {
      o.run_base = value();
    } else if (a == "--keep") {
      o.keep = true;
    } else {
      die("unknown option " + a + "; see --help");
    }
  }
  return o;
}

/// Runs `args` with stdout and stderr to `out` (a path); returns its exit status.
int run(const std::vector<std::string>& args, const std::string& out) {
  const pid_t pid = ::fork();
  if (pid < 0) die(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool can_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

/// A vpd child process in `dir`.
class Vpd {
 public:
  Vpd(const Options& o, std::string dir) : options_(o), dir_(std::move(dir)) {}
  ~Vpd() { stop(SIGTERM); }

  std::string runtime_dir() const { return dir_ + "/run"; }
  std::string socket() const { return runtime_dir() + "/control.sock"; }
  pid_t pid() const { return pid_; }

  void start() {
    pid_ = ::fork();
    if (pid_ < 0) die(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
      const std::string log = dir_ + "/vpd.log";
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      const std::string config = dir_ + "/vpd.conf";
      const std::string runtime = runtime_dir();
      const std::string state = dir_ + "/state";
      ::execl(options_.vpd.c_str(), options_.vpd.c_str(), "--config", config.c_str(),
              "--runtime-dir", runtime.c_str(), "--state-dir", state.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (!can_connect(socket())) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        die("vpd exited at start; see " + dir_ + "/vpd.log (run with --keep)");
      }
      if (Clock::now() > deadline) die("vpd's control socket did not come up in 60 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void stop(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  int ctl(const std::vector<std::string>& args) {
    std::vector<std::string> full{options_.vpctl, "--socket", socket()};
    full.insert(full.end(), args.begin(), args.end());
    return run(full, "/dev/null");
  }

  /// utime + stime in seconds.
  double cpu_seconds() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t paren = text.rfind(')');
    if (paren == std::string::npos) return 0;
    std::istringstream fields(text.substr(paren + 2));
    std::string f;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; fields >> f; ++i) {  // field 3 is the state, after "(comm)"
      if (i == 14) utime = std::stoull(f);
      if (i == 15) {
        stime = std::stoull(f);
        break;
      }
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }

  /// "Max open files" soft and hard limits from /proc/PID/limits ("unlimited" is -1).
  std::pair<long, long> nofile_limits() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/limits");
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("Max open files", 0) != 0) continue;
      std::istringstream fields(line.substr(14));
      std::string soft, hard;
      fields >> soft >> hard;
      auto number = [](const std::string& f) {
        return f == "unlimited" ? -1 : std::atol(f.c_str());
      };
      return {number(soft), number(hard)};
    }
    return {0, 0};
  }

  /// VmRSS in KB.
  long rss_kb() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    }
    return 0;
  }

 private:
  const Options& options_;
  std::string dir_;
  pid_t pid_ = -1;
};

/// user + sys of the children waited for so far (the vpctl calls), in seconds.
double children_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_CHILDREN, &ru);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

const char* verdict(bool met) { return met ? "met" : "not met"; }

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  if (::geteuid() != 0) die("run as root (it creates a network namespace and TAP devices)");
  if (::unshare(CLONE_NEWNET) != 0)
    die(std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno));
  std::string tmpl = o.run_base + "/vpd-scale-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    die("mkdtemp in " + o.run_base + ": " + std::strerror(errno));
  }
  const std::string dir = tmpl;
  { std::ofstream(dir + "/vpd.conf") << ""; }
  const int n = o.endpoints;

  {
    Vpd vpd(o, dir);
    vpd.start();
    const long rss_before = vpd.rss_kb();

    std::printf("vpd_scale: %d endpoints (vpctl vpI create up, one call after the other)\n", n);
    const auto [soft, hard] = vpd.nofile_limits();
    std::printf("  fd limit: vpd's soft NOFILE %ld, hard %ld        target soft == hard: %s\n",
                soft, hard, verdict(soft == hard));
    const double vpd_cpu0 = vpd.cpu_seconds();
    const double ctl_cpu0 = children_cpu_seconds();
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      if (const int rc = vpd.ctl({"vp" + std::to_string(i), "create", "up"}); rc != 0) {
        die("vpctl vp" + std::to_string(i) + " create up exited with " + std::to_string(rc) +
            "; see " + dir + "/vpd.log");
      }
    }
    const double create_s = seconds_since(t0);
    std::printf("  create:  %.2f s in all, %.2f ms per call            target < 10 s: %s\n",
                create_s, create_s * 1000 / n, verdict(create_s < 10));
    // CPU per call depends less on the load of a shared machine than the wall time does.
    const double vpd_cpu = vpd.cpu_seconds() - vpd_cpu0;
    const double ctl_cpu = children_cpu_seconds() - ctl_cpu0;
    std::printf("           CPU per call: vpd %.2f ms, vpctl %.2f ms (user + sys)\n",
                vpd_cpu * 1000 / n, ctl_cpu * 1000 / n);

    std::this_thread::sleep_for(std::chrono::seconds(1));
    const double cpu0 = vpd.cpu_seconds();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.idle_seconds));
    const double idle_cpu = vpd.cpu_seconds() - cpu0;
    std::printf("  idle:    %.3f s of CPU in %.0f s (%.2f %%)            target 0: %s\n", idle_cpu,
                o.idle_seconds, idle_cpu * 100 / o.idle_seconds,
                verdict(idle_cpu <= 0.011));  // one clock tick of slack

    const long rss_after = vpd.rss_kb();
    const double per_endpoint = static_cast<double>(rss_after - rss_before) / n;
    std::printf("  memory:  VmRSS %ld KB -> %ld KB, %.1f KB per endpoint  target <= 100 KB: %s\n",
                rss_before, rss_after, per_endpoint, verdict(per_endpoint <= 100));

    vpd.stop(SIGKILL);
    const auto t1 = Clock::now();
    vpd.start();
    const double control_s = seconds_since(t1);
    for (int i = 0; i < n; ++i) {
      const std::string path = vpd.runtime_dir() + "/vp" + std::to_string(i) + ".sock";
      const auto deadline = Clock::now() + std::chrono::seconds(120);
      while (!can_connect(path)) {
        if (Clock::now() > deadline) die(path + " did not accept within 120 s of the restart");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    const double restart_s = seconds_since(t1);
    std::printf(
        "  restart: kill -9, start: control socket after %.2f s, all %d bind sockets accept "
        "after %.2f s  target < 10 s: %s\n",
        control_s, n, restart_s, verdict(restart_s < 10));
    vpd.stop(SIGTERM);
  }
  if (o.keep) {
    std::printf("  kept %s (vpd.log)\n", dir.c_str());
  } else {
    std::filesystem::remove_all(dir);
  }
  return 0;
}
