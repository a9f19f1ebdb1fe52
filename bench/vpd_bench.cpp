// vpd_bench: how many frames vpd moves between a vhost-user guest and its TAP, against what a
// plain loop on a TAP moves on one core, in the same run, on the same machine.
//
// Run as root. Everything happens inside a private network namespace (unshare(CLONE_NEWNET));
// no packet leaves it. The set-up:
//
//   vp0     vpd's TAP (vpctl vp0 create address=10.97.0.1/24 up), driven by a real vpd child
//           process through the vhost-user test front-end (tests/support/vhost_frontend).
//   bench0  a TAP this program opens itself the way vpd does (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|
//           IFF_MULTI_QUEUE, 12-byte vnet header, the same TUNSETOFFLOAD flags vpd set for the
//           guest), address 10.96.0.1/24: the baseline.
//
//   guest → host: frames to 10.9x.1.1 with the TAP's MAC as destination; the kernel routes
//     them into `blackhole 10.9x.1.0/24` (ip_forward=1, rp_filter=0). vpd: the front-end keeps
//     the TX ring full and kicks only when vpd asks (EVENT_IDX). Baseline: write() in a loop.
//   host → guest: the kernel sends frames out of the TAP: 64 B and 1514 B frames from an
//     AF_PACKET socket (PACKET_QDISC_BYPASS, sendmmsg), 64 KB frames from a UDP socket with
//     UDP_SEGMENT (one UDP GSO skb per send: AF_PACKET GSO skbs are SKB_GSO_DODGY, which tun
//     does not accept unsegmented). vpd: the front-end keeps RX buffers posted (MRG_RXBUF) and
//     counts frames. Baseline: read() in a loop (poll() when the TAP is empty).
//   A second baseline on bench0 in both directions: one thread keeps 32 io_uring writes (or
//     reads) in flight, resubmitting each as it completes; short and failed completions are
//     counted. Left out, with the reason printed, where io_uring_queue_init fails
//     (kernel.io_uring_disabled).
//   --frontend dpdk: dpdk-testpmd's virtio-user (txonly or rxonly, 64 B and 1514 B: it
//     negotiates no offloads) drives a second endpoint vp1 (10.98.0.1/24) instead of the test
//     front-end; vpd's figures come from its own counters (vpctl --json vp1) read where the
//     measured window opens and closes. In the same run, DPDK's own vhost-user backend as a
//     peer: testpmd with net_vhost0 and net_tap0 (TAP dpdk0, 10.99.0.1/24) forwarding in io
//     mode on --vpd-cpu, driven by a second testpmd virtio-user on --frontend-cpu; its
//     figures are dpdk0's received frames (guest -> host) or the guest testpmd's RX-packets.
//
// CPU placement (2 cores): the front-end and the host→guest frame generator run on
// --frontend-cpu; vpd (all its threads) and the baselines' write()/read() and io_uring
// loops (with io_uring's workers) run on --vpd-cpu. Each measured side therefore has one
// core of its own.
//
// Figures are Ethernet frames (virtio header not counted, no preamble/FCS) per second and
// Ethernet bits per second. Nothing asserts on timing; sanity checks print warnings.

#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/udp.h>
#include <net/ethernet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <liburing.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "dataplane/net_header.hpp"
#include "net/link.hpp"
#include "net/mac.hpp"
#include "net/offloads.hpp"
#include "net/tap.hpp"
#include "support/testpmd.hpp"
#include "support/vhost_frontend.hpp"
#include "sys/fd.hpp"
#include "sys/str.hpp"
#include "virtio/queue.hpp"

namespace vp::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr uint32_t kRx = 0;  // receiveq1
constexpr uint32_t kTx = 1;  // transmitq1
constexpr uint32_t kHdr = dataplane::kNetHdrSize;
constexpr uint64_t kRegionGpa = 0x40000000;
constexpr uint32_t kRxBufferSize = 4096;  // a Linux guest's mergeable RX buffers are ≤ a page
constexpr uint16_t kGsoSize = 1448;       // TCP MSS with timestamps on a 1500-byte MTU
constexpr uint16_t kUdpGsoSize = 1472;    // 1500 - IP - UDP
// The largest GSO frame a Linux stack hands a device: an skb of 65536 bytes or more
// (Ethernet header included) is segmented in software (gso_features_check(), gso_max_size).
constexpr uint32_t kGsoFrame = 65535;

/// Guest RAM for rings of `ring` entries: the rings, one RX and one (unused) TX buffer of
/// kRxBufferSize per entry, and per size two TX pools (vpd, baseline) of one frame per entry.
/// With `pairs` queue pairs (--queues), an RX and a TX buffer more per entry for each.
uint64_t region_size(uint16_t ring, uint32_t pairs = 1) {
  const uint64_t per_entry =
      2 * 4096 * uint64_t{pairs} + 2 * (128 + 1536 + (kGsoFrame + 12 + 63) / 64 * 64);
  const uint64_t bytes = (16ull << 20) + ring * per_entry;
  return (bytes + (2ull << 20) - 1) / (2ull << 20) * (2ull << 20);
}

/// A setup step failed: main() prints it and the destructors clean up (vpd, temp dir).
struct Fatal {
  std::string what;
};
[[noreturn]] void fatal(std::string what) { throw Fatal{std::move(what)}; }
[[noreturn]] void fatal_errno(std::string_view step) {
  fatal(str(step, ": ", std::strerror(errno)));
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

double since(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// --- Options --------------------------------------------------------------------------------

struct Options {
  double seconds = 2.0;
  double warmup = 0.25;
  uint16_t ring = 256;
  int frontend_cpu = 0;
  int vpd_cpu = 1;
  std::string vpd = VPD_BINARY;
  std::string vpctl = VPCTL_BINARY;
  bool keep = false;
  bool verbose = false;
  bool tx = true;                  // guest->host cases
  bool rx = true;                  // host->guest cases
  std::vector<std::string> sizes;  // empty (all) or some of 64, 1514, gso
  int repeat = 1;
  uint32_t queues = 1;  // --queues 2: vpd --workers 2, a queues=2 endpoint, both TX rings driven
  bool dpdk = false;    // --frontend dpdk: testpmd virtio-user drives vpd; DPDK net_vhost peer
};

const char* const kUsage =
    "Usage: vpd_bench [OPTIONS]   (as root)\n"
    "\n"
    "Measures guest->host and host->guest frames/s and Gbit/s through a real vpd (vhost-user,\n"
    "split rings, EVENT_IDX, MRG_RXBUF, offloads) at 64 B, 1514 B and 64 KB GSO, and a plain\n"
    "TAP write()/read() loop and a 32-deep io_uring loop as the baselines, inside a private\n"
    "network namespace.\n"
    "\n"
    "  --seconds N        measured time per case (default 2; plus a 0.25 s warm-up);\n"
    "                     --duration N says the same\n"
    "  --ring N           virtqueue size (default 256, QEMU's default)\n"
    "  --frontend-cpu N   core of the front-end and the frame generator (default 0)\n"
    "  --vpd-cpu N        core of vpd and of the baseline loop (default 1)\n"
    "  --vpd PATH         vpd binary (default: the one built with this benchmark)\n"
    "  --vpctl PATH       vpctl binary (default: likewise)\n"
    "  --keep             keep the temporary directory (vpd's log) and print its path\n"
    "  --direction D      tx (guest->host), rx (host->guest) or both (default)\n"
    "  --sizes LIST       some of 64,1514,gso (default: all)\n"
    "  --repeat N         run every case N times, keep the fastest run (default 1)\n"
    "  --queues N         1 (default) or 2: vpd --workers 2 and a queues=2 endpoint; the\n"
    "                     front-end drives both transmit rings, and the bench prints the\n"
    "                     aggregate and each pair's frames/s beside one pair's (guest->host)\n"
    "  --frontend F       builtin (default: the test front-end) or dpdk: dpdk-testpmd\n"
    "                     virtio-user drives vpd (64 B and 1514 B only; it negotiates no\n"
    "                     offloads), and DPDK's own net_vhost backend + net_tap is measured\n"
    "                     as a peer in the same run\n"
    "  --verbose          print every counter that moved in each case\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fatal(str(a, " needs a value"));
      return argv[++i];
    };
    auto number = [&](double lo, double hi) {
      const std::string v = value();
      char* end = nullptr;
      const double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || d < lo || d > hi) {
        fatal(str(a, ": ", v, " is not a number in [", static_cast<long>(lo), ", ",
                  static_cast<long>(hi), "]"));
      }
      return d;
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--seconds" || a == "--duration") {
      o.seconds = number(0.1, 60);
    } else if (a == "--ring") {
      const double r = number(64, 1024);
      o.ring = static_cast<uint16_t>(r);
      if ((o.ring & (o.ring - 1)) != 0) fatal("--ring must be a power of two");
    } else if (a == "--frontend-cpu") {
      o.frontend_cpu = static_cast<int>(number(0, CPU_SETSIZE - 1));
    } else if (a == "--vpd-cpu") {
      o.vpd_cpu = static_cast<int>(number(0, CPU_SETSIZE - 1));
    } else if (a == "--vpd") {
      o.vpd = value();
    } else if (a == "--vpctl") {
      o.vpctl = value();
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--verbose") {
      o.verbose = true;
    } else if (a == "--direction") {
      const std::string d = value();
      if (d != "tx" && d != "rx" && d != "both") fatal("--direction takes tx, rx or both");
      o.tx = d != "rx";
      o.rx = d != "tx";
    } else if (a == "--sizes") {
      std::istringstream list(value());
      for (std::string k; std::getline(list, k, ',');) {
        if (k != "64" && k != "1514" && k != "gso") fatal(str("--sizes: unknown size ", k));
        o.sizes.push_back(k);
      }
    } else if (a == "--repeat") {
      o.repeat = static_cast<int>(number(1, 20));
    } else if (a == "--queues") {
      o.queues = static_cast<uint32_t>(number(1, 2));
    } else if (a == "--frontend") {
      const std::string f = value();
      if (f != "builtin" && f != "dpdk") fatal("--frontend takes builtin or dpdk");
      o.dpdk = f == "dpdk";
    } else {
      fatal(str("unknown option ", a, "\n", kUsage));
    }
  }
  if (o.frontend_cpu == o.vpd_cpu) fatal("--frontend-cpu and --vpd-cpu must differ");
  if (o.queues > 1 && o.dpdk)
    fatal("--queues 2 drives the built-in front-end; leave out --frontend dpdk");
  return o;
}

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<size_t>(cpu), &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) fatal_errno(str("pin to cpu ", cpu));
}

// --- Processes and the kernel's own counters --------------------------------------------------

struct Output {
  int status = -1;
  std::string out;
};

/// Runs argv (no shell), stdout and stderr captured together.
Output run(const std::vector<std::string>& argv) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) fatal_errno("pipe2");
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) fatal_errno("fork");
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::dup2(p[1], 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(p[1]);
  Output o;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) o.out.append(buf, static_cast<size_t>(n));
  }
  ::close(p[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  o.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return o;
}

void must(const std::vector<std::string>& argv) {
  Output o = run(argv);
  if (o.status != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    fatal(str(cmd, "failed (", o.status, "): ", o.out));
  }
}

void write_sysctl(const std::string& path, const std::string& value) {
  std::ofstream f(path);
  f << value;
  if (!f.flush()) fatal(str("write ", value, " to ", path));
}

/// One interface's counters from /proc/net/dev (per network namespace, unlike /sys).
struct LinkStats {
  uint64_t rx_packets = 0, rx_dropped = 0, tx_packets = 0, tx_dropped = 0;
};

LinkStats link_stats(const std::string& ifname) {
  std::ifstream f("/proc/net/dev");
  std::string line;
  while (std::getline(f, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    if (name != ifname) continue;
    std::istringstream in(line.substr(colon + 1));
    uint64_t v[16] = {};
    for (auto& x : v) in >> x;
    return LinkStats{v[1], v[3], v[9], v[11]};
  }
  fatal(str("no ", ifname, " in /proc/net/dev"));
}

/// The "Ip:" counters of /proc/net/snmp (per network namespace).
std::map<std::string, uint64_t> ip_stats() {
  std::ifstream f("/proc/net/snmp");
  std::string names, values;
  std::map<std::string, uint64_t> out;
  while (std::getline(f, names) && std::getline(f, values)) {
    if (!names.starts_with("Ip:")) continue;
    std::istringstream n(names.substr(3)), v(values.substr(3));
    std::string key;
    uint64_t value = 0;
    while (n >> key && v >> value) out[key] = value;
    break;
  }
  return out;
}

/// CPU time and context switches of one task, or of every thread of a process.
struct CpuSample {
  double user = 0;  // seconds
  double sys = 0;
  uint64_t voluntary = 0;
  uint64_t involuntary = 0;
};

void add_task(const std::string& dir, CpuSample& s) {
  static const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream stat(dir + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return;
  std::istringstream in(line.substr(close + 2));
  std::string field;
  // Fields 3..13, then utime (14) and stime (15).
  for (int i = 3; i <= 13; ++i) in >> field;
  uint64_t utime = 0, stime = 0;
  in >> utime >> stime;
  s.user += static_cast<double>(utime) / tick;
  s.sys += static_cast<double>(stime) / tick;
  std::ifstream status(dir + "/status");
  while (std::getline(status, line)) {
    if (line.starts_with("voluntary_ctxt_switches:")) {
      s.voluntary += std::stoull(line.substr(24));
    } else if (line.starts_with("nonvoluntary_ctxt_switches:")) {
      s.involuntary += std::stoull(line.substr(27));
    }
  }
}

CpuSample sample_process(pid_t pid) {
  CpuSample s;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(str("/proc/", pid, "/task"), ec)) {
    add_task(task.path().string(), s);
  }
  return s;
}

CpuSample sample_task(pid_t tid) {
  CpuSample s;
  add_task(str("/proc/self/task/", tid), s);
  return s;
}

/// One task of this process plus every io_uring worker thread ("iou-wrk-*") of it: the work
/// io_uring punts to its workers is part of what the io_uring loop costs.
CpuSample sample_task_and_io_workers(pid_t tid) {
  CpuSample s = sample_task(tid);
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name.starts_with("iou-wrk")) add_task(task.path().string(), s);
  }
  return s;
}

/// Busy and steal time of one core from /proc/stat (seconds), to see what else ran there.
struct CoreSample {
  double busy = 0;
  double steal = 0;
};

CoreSample sample_core(int cpu) {
  static const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream f("/proc/stat");
  std::string line;
  const std::string want = str("cpu", cpu, " ");
  while (std::getline(f, line)) {
    if (!line.starts_with(want)) continue;
    std::istringstream in(line.substr(want.size()));
    uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    in >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    return CoreSample{static_cast<double>(user + nice + system + irq + softirq) / tick,
                      static_cast<double>(steal) / tick};
  }
  return {};
}

CpuSample operator-(const CpuSample& a, const CpuSample& b) {
  return CpuSample{a.user - b.user, a.sys - b.sys, a.voluntary - b.voluntary,
                   a.involuntary - b.involuntary};
}

// --- vpd --------------------------------------------------------------------------------------

/// A vpd child process with its own runtime, state and config under a temporary directory,
/// pinned to one core. Ready when it sends READY=1 to our NOTIFY_SOCKET.
class VpdProcess {
 public:
  VpdProcess(const Options& o) : options_(o) {
    char tmpl[] = "/tmp/vpd-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) fatal_errno("mkdtemp");
    dir_ = tmpl;
    ::mkdir(runtime_dir().c_str(), 0755);
    ::mkdir((dir_ + "/state").c_str(), 0755);
    std::ofstream(dir_ + "/vpd.conf").flush();
  }
  ~VpdProcess() {
    stop();
    if (!options_.keep) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  VpdProcess(const VpdProcess&) = delete;
  VpdProcess& operator=(const VpdProcess&) = delete;

  const std::string& dir() const { return dir_; }
  std::string runtime_dir() const { return dir_ + "/run"; }
  pid_t pid() const { return pid_; }

  void start() {
    const std::string notify_path = dir_ + "/notify.sock";
    Fd notify(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, notify_path.c_str(), sizeof addr.sun_path - 1);
    if (::bind(notify.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      fatal_errno("bind the notify socket");
    }
    std::vector<std::string> args{options_.vpd,  "--config",    dir_ + "/vpd.conf", "--runtime-dir",
                                  runtime_dir(), "--state-dir", dir_ + "/state"};
    // --queues 2: each pair on its own data-path worker.
    if (options_.queues > 1) args.insert(args.end(), {"--workers", str(options_.queues)});
    std::vector<std::string> env{"NOTIFY_SOCKET=" + notify_path,
                                 "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
    std::vector<char*> argv, envp;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    const std::string log = dir_ + "/vpd.log";
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<size_t>(options_.vpd_cpu), &set);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) fatal_errno("fork vpd");
    if (pid_ == 0) {
      // Every vpd thread inherits the affinity. vpd goes when the benchmark goes, however.
      if (::sched_setaffinity(0, sizeof set, &set) != 0) ::_exit(126);
      if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(126);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < deadline) {
      pollfd p{notify.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) == 1) {
        char buf[512];
        const ssize_t n = ::recv(notify.get(), buf, sizeof buf, 0);
        if (n > 0 && std::string_view(buf, static_cast<size_t>(n)).find("READY=1") !=
                         std::string_view::npos) {
          return;
        }
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        fatal(str("vpd exited during start-up:\n", log_text()));
      }
    }
    fatal(str("vpd did not send READY=1 within 20 s:\n", log_text()));
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
  }

  std::string log_text() const {
    std::ifstream f(dir_ + "/vpd.log");
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

  Output ctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {options_.vpctl, "--socket", runtime_dir() + "/control.sock"});
    return run(args);
  }
  Json status(const std::string& name) const {
    Output o = ctl({"--json", name});
    if (o.status != 0) fatal(str("vpctl --json ", name, ": ", o.out));
    Json j = Json::parse(o.out, nullptr, false);
    if (j.is_discarded()) fatal(str("vpctl --json ", name, " printed no JSON: ", o.out));
    return j["status"];
  }
  std::map<std::string, uint64_t> counters(const std::string& name) const {
    std::map<std::string, uint64_t> out;
    const Json st = status(name);  // named: a range-for would not keep the temporary alive
    for (const auto& [k, v] : st["counters"].items()) out[k] = v.get<uint64_t>();
    return out;
  }

 private:
  const Options& options_;
  std::string dir_;
  pid_t pid_ = -1;
};

// --- dpdk-testpmd ---------------------------------------------------------------------------

/// One dpdk-testpmd (tests/support/testpmd) in interactive mode on one core, for the bench:
/// any failure of it is fatal.
class Testpmd {
 public:
  pid_t pid() const { return t_.pid(); }

  /// Starts it with `vdevs` and testpmd's own `args`, all its threads on `cpu`, and waits for
  /// its prompt.
  void start(int cpu, const std::vector<std::string>& vdevs, const std::vector<std::string>& args,
             const std::string& log_path) {
    // testpmd wants a forwarding lcore besides its main one ("-l N" alone: "No cores defined
    // for forwarding"): two lcores, both on the one cpu. The main lcore only reads stdin.
    const std::string why =
        t_.start(str("0@", cpu, ",1@", cpu), vdevs, args, log_path, "vpd-bench");
    if (!why.empty()) fatal(why);
    // EAL start-up alone can take seconds on a busy machine.
    if (!wait_output("testpmd> ", 1, std::chrono::seconds(30))) {
      fatal(str("dpdk-testpmd gave no prompt within 30 s:\n", log()));
    }
  }

  void command(const std::string& line) {
    if (!t_.command(line)) fatal(str("dpdk-testpmd exited:\n", log()));
  }

  std::string log() const { return t_.log(); }

  bool wait_output(const std::string& needle, size_t n, std::chrono::milliseconds timeout) {
    const bool seen = t_.wait_output(needle, n, timeout);
    if (!seen && t_.exited()) fatal(str("dpdk-testpmd exited:\n", log()));
    return seen;
  }

  /// RX-packets and TX-packets of `port` (show port stats).
  std::pair<uint64_t, uint64_t> port_packets(int port) {
    const std::string head = str("NIC statistics for port ", port);
    const size_t before = test::Testpmd::count(log(), head);
    command(str("show port stats ", port));
    if (!wait_output(head, before + 1, std::chrono::seconds(10))) {
      fatal(str("dpdk-testpmd printed no port stats:\n", log()));
    }
    // The statistics block follows its head; wait for its TX line too.
    for (int i = 0; i < 2000; ++i) {
      const std::string text = log();
      const size_t at = text.rfind(head);
      const size_t rx = text.find("RX-packets:", at), tx = text.find("TX-packets:", at);
      if (rx != std::string::npos && tx != std::string::npos &&
          text.find('\n', tx) != std::string::npos) {
        return {std::strtoull(text.c_str() + rx + 11, nullptr, 10),
                std::strtoull(text.c_str() + tx + 11, nullptr, 10)};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    fatal(str("dpdk-testpmd's port stats were cut short:\n", log()));
  }

  /// stop and quit, then SIGKILL if it has not exited within 5 s.
  void quit() { (void)t_.quit(std::chrono::seconds(5), "stop\nquit\n"); }

 private:
  test::Testpmd t_;
};

std::map<std::string, uint64_t> operator-(std::map<std::string, uint64_t> a,
                                          const std::map<std::string, uint64_t>& b) {
  for (auto& [k, v] : a) {
    auto it = b.find(k);
    if (it != b.end()) v -= it->second;
  }
  return a;
}

// --- Frames -----------------------------------------------------------------------------------

struct Size {
  const char* key;  // --sizes
  const char* name;
  uint32_t frame;  // Ethernet bytes
  bool gso;
};
constexpr Size kSizes[] = {{"64", "64 B", 64, false},
                           {"1514", "1514 B", 1514, false},
                           {"gso", "64 KB GSO", kGsoFrame, true}};

uint32_t ipv4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t{a} << 24 | uint32_t{b} << 16 | uint32_t{c} << 8 | d;
}

void put16(std::vector<uint8_t>& f, size_t at, uint32_t v) {
  f[at] = static_cast<uint8_t>(v >> 8);
  f[at + 1] = static_cast<uint8_t>(v);
}
void put32(std::vector<uint8_t>& f, size_t at, uint32_t v) {
  put16(f, at, v >> 16);
  put16(f, at + 2, v & 0xffff);
}
void le16(std::vector<uint8_t>& f, size_t at, uint32_t v) {
  f[at] = static_cast<uint8_t>(v);
  f[at + 1] = static_cast<uint8_t>(v >> 8);
}

uint32_t sum16(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += uint32_t{p[i]} << 8 | p[i + 1];
  if (n & 1) sum += uint32_t{p[n - 1]} << 8;
  return sum;
}
uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

/// A virtio_net_hdr_mrg_rxbuf (12 bytes) followed by an Ethernet/IPv4 frame of `size.frame`
/// bytes: UDP for the plain sizes (no checksum offload, UDP checksum 0), TCP for GSO with a
/// header a Linux guest would send for a TSO frame: NEEDS_CSUM, GSO_TCPV4, gso_size 1448,
/// hdr_len 54, csum_start 34, csum_offset 16, the pseudo-header sum in the TCP checksum field.
std::vector<std::byte> make_frame(const Size& size, const net::Mac& src, const net::Mac& dst,
                                  uint32_t saddr, uint32_t daddr) {
  std::vector<uint8_t> f(kHdr + size.frame, 0);
  const size_t eth = kHdr, ip = eth + 14, l4 = ip + 20;
  std::copy(dst.bytes.begin(), dst.bytes.end(), f.begin() + static_cast<long>(eth));
  std::copy(src.bytes.begin(), src.bytes.end(), f.begin() + static_cast<long>(eth + 6));
  put16(f, eth + 12, 0x0800);
  const uint32_t ip_len = size.frame - 14;
  f[ip] = 0x45;
  put16(f, ip + 2, ip_len);
  put16(f, ip + 6, 0x4000);  // DF
  f[ip + 8] = 64;
  f[ip + 9] = size.gso ? 6 : 17;
  put32(f, ip + 12, saddr);
  put32(f, ip + 16, daddr);
  put16(f, ip + 10, static_cast<uint16_t>(~fold(sum16(&f[ip], 20))));
  for (size_t i = l4; i < f.size(); ++i) f[i] = static_cast<uint8_t>(i);  // payload pattern
  if (!size.gso) {
    put16(f, l4, 4000);
    put16(f, l4 + 2, 9);
    put16(f, l4 + 4, ip_len - 20);
    put16(f, l4 + 6, 0);
  } else {
    const uint32_t tcp_len = ip_len - 20;
    put16(f, l4, 4000);
    put16(f, l4 + 2, 5001);
    put32(f, l4 + 4, 1);
    put32(f, l4 + 8, 1);
    f[l4 + 12] = 5 << 4;
    f[l4 + 13] = 0x18;  // PSH|ACK
    put16(f, l4 + 14, 0xffff);
    put16(f, l4 + 18, 0);
    // SPEC: virtio 1.2 §5.1.6.2: with NEEDS_CSUM the driver leaves the pseudo-header sum in
    // the checksum field (what Linux puts there for a TSO skb).
    uint32_t pseudo = sum16(&f[ip + 12], 8) + 6 + tcp_len;
    put16(f, l4 + 16, fold(pseudo));
    f[0] = dataplane::kHdrFNeedsCsum;
    f[1] = dataplane::kGsoTcpv4;
    le16(f, 2, 54);        // hdr_len
    le16(f, 4, kGsoSize);  // gso_size
    le16(f, 6, 34);        // csum_start: the TCP header
    le16(f, 8, 16);        // csum_offset: TCP checksum
  }
  std::vector<std::byte> out(f.size());
  std::memcpy(out.data(), f.data(), f.size());
  return out;
}

/// `count` copies of one frame (virtio header included) in the front-end's guest RAM, one
/// per ring entry, as a guest keeps distinct TX buffers. The baseline writes from the very
/// same bytes, so both sides read the same memory.
struct Pool {
  uint64_t gpa = 0;
  uint32_t stride = 0;
  uint32_t len = 0;  // virtio header + frame
  uint32_t count = 0;
  std::byte* host = nullptr;

  uint64_t gpa_of(uint64_t i) const { return gpa + (i % count) * stride; }
  const std::byte* at(uint64_t i) const { return host + (i % count) * stride; }
};

Pool make_pool(test::VhostFrontend& fe, const std::vector<std::byte>& frame, uint32_t count) {
  Pool p;
  p.len = static_cast<uint32_t>(frame.size());
  p.stride = (p.len + 63) / 64 * 64;
  p.count = count;
  auto gpa = fe.allocate(0, uint64_t{p.stride} * count, 4096);
  if (!gpa) fatal("guest RAM too small for the TX pool");
  p.gpa = *gpa;
  p.host = fe.host(p.gpa, uint64_t{p.stride} * count);
  for (uint32_t i = 0; i < count; ++i) std::memcpy(p.host + i * p.stride, frame.data(), p.len);
  return p;
}

/// "gso_type 5 gso_size 1472 hdr_len 42 flags 1 num_buffers 17" of a received virtio header.
std::string header_text(std::span<const std::byte> h, uint16_t num_buffers) {
  auto u8 = [&](size_t i) { return std::to_integer<unsigned>(h[i]); };
  auto u16 = [&](size_t i) { return u8(i) | u8(i + 1) << 8; };
  return str("flags ", u8(0), " gso_type ", u8(1), " hdr_len ", u16(2), " gso_size ", u16(4),
             " csum ", u16(6), "+", u16(8), " num_buffers ", num_buffers);
}

// --- Host → guest generators ------------------------------------------------------------------

/// Makes the kernel send frames out of a TAP as fast as one core allows.
class Generator {
 public:
  virtual ~Generator() = default;
  /// Sends one burst; returns frames the kernel accepted.
  virtual uint32_t burst() = 0;
};

/// Raw frames from an AF_PACKET socket straight to the device's transmit (qdisc bypassed).
class PacketGenerator final : public Generator {
 public:
  PacketGenerator(int ifindex, std::vector<std::byte> frame, const net::Mac& dst)
      : frame_(std::move(frame)) {
    fd_.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));  // protocol 0: never receives
    if (!fd_) fatal_errno("socket(AF_PACKET)");
    const int one = 1;
    if (::setsockopt(fd_.get(), SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) != 0) {
      fatal_errno("PACKET_QDISC_BYPASS");
    }
    addr_.sll_family = AF_PACKET;
    addr_.sll_protocol = htons(ETH_P_IP);
    addr_.sll_ifindex = ifindex;
    addr_.sll_halen = 6;
    std::copy(dst.bytes.begin(), dst.bytes.end(), addr_.sll_addr);
    for (size_t i = 0; i < kBurst; ++i) {
      iov_[i] = iovec{frame_.data(), frame_.size()};
      msgs_[i].msg_hdr.msg_name = &addr_;
      msgs_[i].msg_hdr.msg_namelen = sizeof addr_;
      msgs_[i].msg_hdr.msg_iov = &iov_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
    }
  }
  uint32_t burst() override {
    const int n = ::sendmmsg(fd_.get(), msgs_, kBurst, MSG_DONTWAIT);
    return n > 0 ? static_cast<uint32_t>(n) : 0;
  }

 private:
  static constexpr unsigned kBurst = 32;
  Fd fd_;
  std::vector<std::byte> frame_;
  sockaddr_ll addr_{};
  iovec iov_[kBurst];
  mmsghdr msgs_[kBurst] = {};
};

/// 64 KB UDP GSO datagrams (UDP_SEGMENT) from a connected UDP socket: one skb per send that
/// reaches the TAP unsegmented when the TAP has USO offload (the guest acked GUEST_USO4).
class UdpGsoGenerator final : public Generator {
 public:
  UdpGsoGenerator(uint32_t daddr) : payload_(kGsoFrame - 14 - 20 - 8) {
    fd_.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd_) fatal_errno("socket(AF_INET, SOCK_DGRAM)");
    const int gso = kUdpGsoSize;
    if (::setsockopt(fd_.get(), IPPROTO_UDP, UDP_SEGMENT, &gso, sizeof gso) != 0) {
      fatal_errno("UDP_SEGMENT");
    }
    const int sndbuf = 4 << 20;
    (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9);
    to.sin_addr.s_addr = htonl(daddr);
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
      fatal_errno("connect the UDP generator");
    }
  }
  uint32_t burst() override {
    return ::send(fd_.get(), payload_.data(), payload_.size(), MSG_DONTWAIT) > 0 ? 1 : 0;
  }

 private:
  Fd fd_;
  std::vector<std::byte> payload_;
};

// --- Measurement windows ----------------------------------------------------------------------

/// Frames counted between the end of the warm-up and the end of the run.
struct Window {
  Clock::time_point start, t0, t1;
  bool open = false, closed = false;
  uint64_t frames0 = 0, bytes0 = 0;
  uint64_t frames = 0, bytes = 0;
  double seconds = 0;
  CpuSample cpu0, cpu;
  pid_t cpu_pid = -1;       // process sampled (vpd), or
  pid_t cpu_tid = -1;       // task sampled (the baseline loop)
  bool io_workers = false;  // also this process's io_uring workers (the io_uring loop)
  // Both cores and this thread (front-end, generator): what else ran on them.
  int cores[2] = {0, 1};
  CoreSample core0[2], core[2];
  CpuSample self0, self;
  bool frontend_core_used = true;  // false: this thread only sleeps (guest->host baseline)

  Window(const Options& o, pid_t pid, pid_t tid) : cpu_pid(pid), cpu_tid(tid) {
    cores[0] = o.frontend_cpu;
    cores[1] = o.vpd_cpu;
    start = Clock::now();
    t0 = start +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.warmup));
    t1 = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  }
  CpuSample sample() const {
    if (cpu_pid > 0) return sample_process(cpu_pid);
    return io_workers ? sample_task_and_io_workers(cpu_tid) : sample_task(cpu_tid);
  }
  /// Call with the running totals; false once the window has closed.
  bool tick(Clock::time_point now, uint64_t total_frames, uint64_t total_bytes) {
    if (!open && now >= t0) {
      open = true;
      t0 = now;
      frames0 = total_frames;
      bytes0 = total_bytes;
      cpu0 = sample();
      self0 = sample_task(::gettid());
      for (int i = 0; i < 2; ++i) core0[i] = sample_core(cores[i]);
    } else if (open && now >= t1) {
      closed = true;
      seconds = since(t0, now);
      frames = total_frames - frames0;
      bytes = total_bytes - bytes0;
      cpu = sample() - cpu0;
      self = sample_task(::gettid()) - self0;
      for (int i = 0; i < 2; ++i) {
        const CoreSample c = sample_core(cores[i]);
        core[i] = CoreSample{c.busy - core0[i].busy, c.steal - core0[i].steal};
      }
      return false;
    }
    return true;
  }
  double fps() const { return seconds > 0 ? static_cast<double>(frames) / seconds : 0; }
  double gbps() const { return seconds > 0 ? static_cast<double>(bytes) * 8 / seconds / 1e9 : 0; }
};

struct Figures {
  double fps = 0, gbps = 0;
  uint64_t frames = 0;
  double seconds = 0;
  CpuSample cpu;
  double foreign = 0;  // share of a core used by other tasks (or stolen), the worse core
  std::map<std::string, uint64_t> vpd;  // vpd counter deltas (whole phase)
  LinkStats link;                       // TAP counter deltas (whole phase)
  std::map<std::string, uint64_t> ip;   // Ip: deltas (whole phase)
  uint64_t phase_frames = 0;            // frames the driver side counted, whole phase
  std::string first;                    // host->guest: the first frame's virtio header
  std::vector<std::string> warnings;

  /// CPU seconds per frame delivered on the measured side's core.
  double cpu_per_frame() const {
    return frames ? (cpu.user + cpu.sys) / static_cast<double>(frames) : 0;
  }
};

Figures finish(const Window& w) {
  Figures r;
  r.fps = w.fps();
  r.gbps = w.gbps();
  r.frames = w.frames;
  r.seconds = w.seconds;
  r.cpu = w.cpu;
  // The measured side's core runs vpd or the baseline loop; the other core this thread
  // (plus, host->guest, the generator's kernel work, charged to this thread too).
  const double mine[2] = {w.self.user + w.self.sys, w.cpu.user + w.cpu.sys};
  for (int i = w.frontend_core_used ? 0 : 1; i < 2; ++i) {
    if (w.seconds <= 0) break;
    const double other = (w.core[i].busy - mine[i] + w.core[i].steal) / w.seconds;
    r.foreign = std::max(r.foreign, other);
  }
  if (r.foreign > 0.10) {
    r.warnings.push_back(str("other tasks (or the hypervisor) took ",
                             static_cast<int>(r.foreign * 100), "% of a core: figures are low"));
  }
  return r;
}

LinkStats operator-(const LinkStats& a, const LinkStats& b) {
  return LinkStats{a.rx_packets - b.rx_packets, a.rx_dropped - b.rx_dropped,
                   a.tx_packets - b.tx_packets, a.tx_dropped - b.tx_dropped};
}

/// One direction and size: vpd, the write()/read() loop and the io_uring loop.
struct Case {
  bool rx = false;  // host->guest
  const Size* size = nullptr;
  Figures vpd, base;
  Figures uring;         // measured only when io_uring is usable
  Figures peer;          // --frontend dpdk: DPDK's net_vhost backend instead of vpd
  uint64_t too_big = 0;  // vpd's rx_dropped_too_big, summed over every run
  const char* direction() const { return rx ? "host->guest" : "guest->host"; }
  static double ratio(const Figures& v, const Figures& b) { return b.fps > 0 ? v.fps / b.fps : 0; }
  static double cpu_ratio(const Figures& v, const Figures& b) {
    const double vc = v.cpu_per_frame(), bc = b.cpu_per_frame();
    return vc > 0 ? bc / vc : 0;
  }
  double ratio() const { return ratio(vpd, base); }
  double cpu_ratio() const { return cpu_ratio(vpd, base); }
};

/// --repeat: keeps the fastest run (interference only ever slows a run down) and the
/// warnings of every run (a drop in any run is reported).
void keep_best(Figures& best, Figures run, int k) {
  std::vector<std::string> warnings = std::move(best.warnings);
  for (auto& w : run.warnings) {
    if (!w.starts_with("other tasks")) warnings.push_back(str("run ", k + 1, ": ", w));
  }
  const bool better = k == 0 || run.fps > best.fps;
  if (better) {
    std::erase_if(warnings,
                  [](const std::string& w) { return w.find("other tasks") != std::string::npos; });
    for (auto& w : run.warnings) {
      if (w.starts_with("other tasks")) warnings.push_back(w);
    }
    best = std::move(run);
  }
  best.warnings = std::move(warnings);
}

// --- The io_uring baseline -------------------------------------------------------------------

/// A 32-deep io_uring with one registered file (the baseline TAP) whose async workers, if
/// io_uring needs any, are confined to the measured core like the loop itself.
class Uring {
 public:
  static constexpr unsigned kDepth = 32;
  Uring() = default;
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;
  ~Uring() {
    if (live_) io_uring_queue_exit(&ring_);
  }
  /// "" or the step that failed.
  std::string init(int fd, int cpu) {
    if (const int e = io_uring_queue_init(kDepth, &ring_, 0); e < 0) {
      return str("io_uring_queue_init: ", std::strerror(-e));
    }
    live_ = true;
    if (const int e = io_uring_register_files(&ring_, &fd, 1); e < 0) {
      return str("io_uring_register_files: ", std::strerror(-e));
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<size_t>(cpu), &set);
    if (const int e = io_uring_register_iowq_aff(&ring_, sizeof set, &set); e < 0) {
      return str("io_uring_register_iowq_aff: ", std::strerror(-e));
    }
    return "";
  }
  io_uring* get() { return &ring_; }

  /// Calls on_cqe(res, user_data) for every completion waiting; how many there were.
  template <typename F>
  unsigned reap(F&& on_cqe) {
    unsigned head = 0, seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      on_cqe(cqe->res, cqe->user_data);
      ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
    return seen;
  }

 private:
  io_uring ring_{};
  bool live_ = false;
};

/// What an io_uring loop's completions said besides "done in full".
struct UringOutcomes {
  std::atomic<uint64_t> short_ops{0}, failed{0};
  std::atomic<int> last_error{0};
  void add_to(std::vector<std::string>& warnings, const char* op) const {
    if (short_ops.load() != 0) {
      warnings.push_back(str(short_ops.load(), " io_uring ", op, "s completed short"));
    }
    if (failed.load() != 0) {
      warnings.push_back(str(failed.load(), " io_uring ", op,
                             "s failed (last: ", std::strerror(last_error.load()), ")"));
    }
  }
};

// --- The bench --------------------------------------------------------------------------------

class Bench {
 public:
  explicit Bench(const Options& o) : o_(o), vpd_(o) {}

  void setup();
  void run_all();

 private:
  Figures vpd_tx(const Pool& pool);
  /// --queues: guest->host on the first `pairs` transmit rings, one front-end thread.
  struct PairsRun {
    Figures all;
    std::vector<double> fps;  // each pair's frames/s, from vpd's per-queue counters
    std::string workers;      // status.queue_workers
  };
  PairsRun vpd_tx_pairs(const Pool& pool, uint32_t pairs);
  void run_queues();
  Figures vpd_rx(const Size& size);
  Figures base_tx(const Pool& pool);
  Figures base_rx(const Size& size);
  Figures uring_tx(const Pool& pool);
  Figures uring_rx(const Size& size);
  std::unique_ptr<Generator> generator(const Size& size, bool vpd_side);
  std::unique_ptr<Generator> generator(const Size& size, int ifindex, const net::Mac& tap_mac,
                                       uint8_t net);
  Figures dpdk_vpd(const Size& size, bool rx);
  Figures dpdk_peer(const Size& size, bool rx);
  void drain_tx();
  void check_tx(Figures& r, const std::string& ifname, bool vpd_side);
  void print(const std::vector<Case>& cases);
  void print_targets(const std::vector<Case>& cases);

  const Options& o_;
  VpdProcess vpd_;
  std::unique_ptr<test::VhostFrontend> fe_;
  net::Tap base_;
  net::Mac vp0_mac_, base_mac_, guest_mac_;
  int vp0_ifindex_ = 0, base_ifindex_ = 0;
  net::Mac vp1_mac_;  // --frontend dpdk: the endpoint testpmd drives
  int vp1_ifindex_ = 0;
  uint64_t acked_ = 0;
  std::string offloads_;
  std::string uring_unusable_;  // why io_uring cannot be used here, or ""
};

void Bench::setup() {
  if (::geteuid() != 0) fatal("run as root: it creates a network namespace and TAP devices");
  if (::unshare(CLONE_NEWNET) != 0) fatal_errno("unshare(CLONE_NEWNET)");
  must({"ip", "link", "set", "lo", "up"});
  // Route, don't answer: frames to 10.9x.1.x are forwarded into a blackhole route (dropped
  // silently, no ICMP); no reverse-path filter in the way; no IPv6 chatter on the TAPs.
  write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
  write_sysctl("/proc/sys/net/ipv4/conf/all/rp_filter", "0");
  write_sysctl("/proc/sys/net/ipv4/conf/default/rp_filter", "0");
  write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
  write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");

  vpd_.start();  // in this namespace, pinned to --vpd-cpu
  pin_to(o_.frontend_cpu);
  if (Output c =
          vpd_.ctl({"vp0", "create", "address=10.97.0.1/24", "up", str("queues=", o_.queues)});
      c.status != 0) {
    fatal(str("vpctl vp0 create: ", c.out));
  }
  must({"ip", "route", "add", "blackhole", "10.97.1.0/24"});

  test::VhostFrontend::Options fo;
  fo.regions = {{kRegionGpa, region_size(o_.ring, o_.queues)}};
  fo.buffer_size = kRxBufferSize;
  auto fe = test::VhostFrontend::connect(vpd_.runtime_dir() + "/vp0.sock", fo);
  if (!fe) fatal(str("connect to vp0.sock: ", fe.error().message));
  fe_ = std::move(*fe);
  // Split rings; everything else vpd offers: EVENT_IDX, MRG_RXBUF, VERSION_1, the offloads.
  if (auto ok = fe_->negotiate(~virtio::kFeatureRingPacked, ~0ull); !ok) {
    fatal(str("negotiate: ", ok.error().message, "\n", vpd_.log_text()));
  }
  acked_ = fe_->acked_features();
  const uint64_t wanted = virtio::kFeatureEventIdx | dataplane::kFeatureMrgRxbuf |
                          virtio::kFeatureVersion1 | net::feature::kCsum |
                          net::feature::kGuestCsum | net::feature::kHostTso4 |
                          net::feature::kGuestTso4 | net::feature::kGuestUso4;
  if ((acked_ & wanted) != wanted) {
    fatal(str("vpd did not offer everything the benchmark needs: acked ",
              net::feature_names(acked_)));
  }
  if (auto ok = fe_->set_mem_table(); !ok) fatal(str("SET_MEM_TABLE: ", ok.error().message));
  if (auto ok = fe_->setup_queue(kRx, o_.ring); !ok) fatal(str("rx ring: ", ok.error().message));
  if (auto ok = fe_->setup_queue(kTx, o_.ring); !ok) fatal(str("tx ring: ", ok.error().message));
  for (uint32_t ring = 2; ring < 2 * o_.queues; ++ring) {
    if (auto ok = fe_->setup_queue(ring, o_.ring); !ok) {
      fatal(str("ring ", ring, ": ", ok.error().message));
    }
  }

  Json st;
  for (int i = 0; i < 100; ++i) {
    st = vpd_.status("vp0");
    if (st.value("carrier", false)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!st.value("carrier", false)) fatal(str("vp0 has no carrier:\n", st.dump(2)));
  offloads_ = st.value("tun_offloads", "");

  auto nl = net::Netlink::open();
  if (!nl) fatal(nl.error().message);
  auto vp0 = nl->find_link("vp0");
  if (!vp0 || !*vp0) fatal("no vp0");
  vp0_mac_ = (*vp0)->mac;
  vp0_ifindex_ = (*vp0)->ifindex;
  auto guest = net::parse_mac(st.value("guest_mac", ""));
  guest_mac_ = guest ? *guest : net::Mac{{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}};
  must({"ip", "neigh", "replace", "10.97.0.2", "lladdr", guest_mac_.to_string(), "dev", "vp0",
        "nud", "permanent"});

  if (o_.dpdk) {
    // vp1: the endpoint dpdk-testpmd's virtio-user drives, set up as vp0 on 10.98.x.
    if (Output c = vpd_.ctl({"vp1", "create", "address=10.98.0.1/24", "up"}); c.status != 0) {
      fatal(str("vpctl vp1 create: ", c.out));
    }
    must({"ip", "route", "add", "blackhole", "10.98.1.0/24"});
    must({"ip", "route", "add", "blackhole", "10.99.1.0/24"});  // DPDK's net_tap peer
    auto vp1 = nl->find_link("vp1");
    if (!vp1 || !*vp1) fatal("no vp1");
    vp1_mac_ = (*vp1)->mac;
    vp1_ifindex_ = (*vp1)->ifindex;
    must({"ip", "neigh", "replace", "10.98.0.2", "lladdr", guest_mac_.to_string(), "dev", "vp1",
          "nud", "permanent"});
  }

  // The baseline TAP, opened and configured as vpd configures vp0 for this guest.
  auto tap = net::Tap::open("bench0");
  if (!tap) fatal(tap.error().message);
  base_ = std::move(*tap);
  if (auto ok = base_.set_vnet_hdr_size(static_cast<int>(kHdr)); !ok) fatal(ok.error().message);
  const auto applied = base_.set_offload(net::tun_offloads_for(acked_));
  if (!applied) fatal(applied.error().message);
  if (net::tun_offload_names(*applied) != offloads_) {
    fatal(str("bench0 got offloads ", net::tun_offload_names(*applied), ", vp0 has ", offloads_));
  }
  auto b0 = nl->find_link("bench0");
  if (!b0 || !*b0) fatal("no bench0");
  base_mac_ = (*b0)->mac;
  base_ifindex_ = (*b0)->ifindex;
  // vpd gives the TAPs it creates the noqueue qdisc; so does the baseline, or the loop would
  // pay for a default qdisc that vp0 does not have.
  if (auto ok = nl->set_noqueue(base_ifindex_); !ok) fatal(ok.error().message);
  must({"ip", "link", "set", "bench0", "up"});
  must({"ip", "addr", "add", "10.96.0.1/24", "dev", "bench0"});
  must({"ip", "route", "add", "blackhole", "10.96.1.0/24"});
  must({"ip", "neigh", "replace", "10.96.0.2", "lladdr", guest_mac_.to_string(), "dev", "bench0",
        "nud", "permanent"});

  // RX buffers: the whole ring, as a guest driver fills it at start.
  for (uint32_t i = 0; i < o_.ring; ++i) {
    if (auto ok = fe_->post_rx(kRx); !ok) fatal(ok.error().message);
  }
  (void)fe_->kick(kRx);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  while (fe_->next_used(kRx)) {
  }

  // io_uring may be switched off (kernel.io_uring_disabled) or filtered (seccomp): then its
  // baseline is left out, the rest still runs.
  io_uring probe;
  if (const int e = io_uring_queue_init(Uring::kDepth, &probe, 0); e < 0) {
    uring_unusable_ = str("io_uring_queue_init: ", std::strerror(-e));
  } else {
    io_uring_queue_exit(&probe);
  }
}

void Bench::drain_tx() {
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (fe_->outstanding(kTx) != 0 && Clock::now() < deadline) {
    if (!fe_->next_used(kTx)) cpu_relax();
  }
  if (fe_->outstanding(kTx) != 0) fatal("vpd did not give every TX buffer back within 5 s");
}

Figures Bench::vpd_tx(const Pool& pool) {
  const auto c0 = vpd_.counters("vp0");
  const LinkStats l0 = link_stats("vp0");
  const auto ip0 = ip_stats();
  Window w(o_, vpd_.pid(), -1);
  uint64_t done = 0, next = 0;
  const uint64_t len = pool.len - kHdr;
  for (;;) {
    const auto now = Clock::now();
    if (!w.tick(now, done, done * len)) break;
    bool any = false;
    while (fe_->next_used(kTx)) {
      ++done;
      any = true;
    }
    // Keep the ring full; kick only if vpd asked for it (EVENT_IDX avail_event).
    while (fe_->outstanding(kTx) < o_.ring) {
      const test::Segment seg{pool.gpa_of(next), pool.len, false};
      if (auto id = fe_->post_chain(kTx, std::span<const test::Segment>(&seg, 1)); !id) {
        fatal(id.error().message);
      }
      ++next;
      any = true;
    }
    if (auto ok = fe_->kick_if_needed(kTx); !ok) fatal(ok.error().message);
    if (!any) cpu_relax();
  }
  drain_tx();
  Figures r = finish(w);
  r.phase_frames = next;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // vpd publishes its counters
  r.vpd = vpd_.counters("vp0") - c0;
  r.link = link_stats("vp0") - l0;
  r.ip = ip_stats() - ip0;
  check_tx(r, "vp0", true);
  return r;
}

void Bench::check_tx(Figures& r, const std::string& ifname, bool vpd_side) {
  if (vpd_side) {
    if (r.vpd["tx_packets"] != r.phase_frames) {
      r.warnings.push_back(str("vpd wrote ", r.vpd["tx_packets"],
                               " frames to the TAP, the guest sent ", r.phase_frames));
    }
    for (const auto& [k, v] : r.vpd) {
      if (v != 0 && (k.starts_with("tx_dropped") || k == "tap_write_fails")) {
        r.warnings.push_back(str("vpd ", k, " = ", v));
      }
    }
  }
  if (r.link.rx_packets != r.phase_frames) {
    r.warnings.push_back(
        str(ifname, " received ", r.link.rx_packets, " frames, ", r.phase_frames, " were sent"));
  }
  if (r.link.rx_dropped != 0)
    r.warnings.push_back(str(ifname, " rx_dropped = ", r.link.rx_dropped));
  // Every frame must have reached IP input and been routed into the blackhole, not refused
  // on the way (bad header, wrong MAC, martian, reverse path).
  if (r.ip["InReceives"] < r.phase_frames) {
    r.warnings.push_back(
        str("IP input saw ", r.ip["InReceives"], " of ", r.phase_frames, " frames"));
  }
  for (const char* k : {"InHdrErrors", "InAddrErrors", "InDiscards", "InUnknownProtos",
                        "InTruncatedPkts", "InDelivers", "ForwDatagrams"}) {
    if (r.ip[k] > r.phase_frames / 1000 + 10) r.warnings.push_back(str("Ip ", k, " += ", r.ip[k]));
  }
}

std::unique_ptr<Generator> Bench::generator(const Size& size, bool vpd_side) {
  return vpd_side ? generator(size, vp0_ifindex_, vp0_mac_, 97)
                  : generator(size, base_ifindex_, base_mac_, 96);
}

std::unique_ptr<Generator> Bench::generator(const Size& size, int ifindex, const net::Mac& tap_mac,
                                            uint8_t net) {
  if (size.gso) return std::make_unique<UdpGsoGenerator>(ipv4(10, net, 0, 2));
  auto frame = make_frame(size, tap_mac, guest_mac_, ipv4(10, net, 0, 1), ipv4(10, net, 0, 2));
  frame.erase(frame.begin(), frame.begin() + kHdr);  // AF_PACKET sends the bare frame
  return std::make_unique<PacketGenerator>(ifindex, std::move(frame), guest_mac_);
}

/// Sends bursts from its own thread on `cpu` until it goes out of scope (the testpmd cases,
/// whose counters this thread reads meanwhile).
class GeneratorThread {
 public:
  GeneratorThread(std::unique_ptr<Generator> gen, int cpu) : gen_(std::move(gen)) {
    thread_ = std::thread([this, cpu] {
      pin_to(cpu);
      while (!stop_.load(std::memory_order_relaxed)) gen_->burst();
    });
  }
  ~GeneratorThread() {
    stop_ = true;
    thread_.join();
  }
  GeneratorThread(const GeneratorThread&) = delete;
  GeneratorThread& operator=(const GeneratorThread&) = delete;

 private:
  std::unique_ptr<Generator> gen_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// Runs `w` to its end with `totals` (frames, bytes) read only where it opens and closes:
/// for counters that take milliseconds to read (vpctl, testpmd's prompt). Each reading is
/// dated at the middle of the time it took.
void run_window(Window& w, const std::function<std::pair<uint64_t, uint64_t>()>& totals) {
  auto at = [&] {
    const auto a = Clock::now();
    const auto [frames, bytes] = totals();
    w.tick(a + (Clock::now() - a) / 2, frames, bytes);
  };
  std::this_thread::sleep_until(w.t0);
  at();
  std::this_thread::sleep_until(w.t1);
  at();
}

Figures Bench::dpdk_vpd(const Size& size, bool rx) {
  Testpmd t;
  const std::string vdev = str("net_virtio_user0,path=", vpd_.runtime_dir(), "/vp1.sock",
                               ",queue_size=", o_.ring, ",mac=", guest_mac_.to_string());
  t.start(o_.frontend_cpu, {vdev},
          {rx ? "--forward-mode=rxonly" : "--forward-mode=txonly", str("--txpkts=", size.frame),
           str("--eth-peer=0,", vp1_mac_.to_string()), "--tx-ip=10.98.0.2,10.98.1.1"},
          vpd_.dir() + "/testpmd-vpd.log");
  Json st;
  for (int i = 0; i < 500; ++i) {
    st = vpd_.status("vp1");
    if (st.value("carrier", false)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!st.value("carrier", false)) fatal(str("vp1 has no carrier with testpmd:\n", t.log()));
  t.command("start");
  const auto c0 = vpd_.counters("vp1");
  const LinkStats l0 = link_stats("vp1");
  const auto ip0 = ip_stats();
  Window w(o_, vpd_.pid(), -1);
  w.frontend_core_used = false;  // testpmd polls there: only the measured core is checked
  {
    std::unique_ptr<GeneratorThread> gen;
    if (rx) {
      gen = std::make_unique<GeneratorThread>(generator(size, vp1_ifindex_, vp1_mac_, 98),
                                              o_.frontend_cpu);
    }
    run_window(w, [&] {
      auto c = vpd_.counters("vp1");
      return rx ? std::pair{c["rx_packets"], c["rx_bytes"]}
                : std::pair{c["tx_packets"], c["tx_bytes"]};
    });
  }
  t.command("stop");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // vpd publishes its counters
  Figures r = finish(w);
  r.vpd = vpd_.counters("vp1") - c0;
  r.link = link_stats("vp1") - l0;
  r.ip = ip_stats() - ip0;
  t.quit();
  if (!rx) {
    r.phase_frames = r.vpd["tx_packets"];
    check_tx(r, "vp1", true);
  } else {
    r.phase_frames = r.vpd["rx_packets"];
    for (const auto& [k, v] : r.vpd) {
      if (v != 0 && (k.starts_with("rx_dropped") || k == "rx_malformed_chain" ||
                     k == "rx_buffers_returned_empty" || k == "tap_read_fails")) {
        r.warnings.push_back(str("vpd ", k, " = ", v));
      }
    }
  }
  return r;
}

Figures Bench::dpdk_peer(const Size& size, bool rx) {
  // DPDK's own vhost-user backend forwarding (io mode) between its vhost port (0) and a TAP
  // of its own (port 1), on the measured core, as vpd runs there.
  const std::string sock = vpd_.dir() + "/dpdk-vhost.sock";
  Testpmd backend;
  backend.start(o_.vpd_cpu, {str("net_vhost0,iface=", sock, ",queues=1"), "net_tap0,iface=dpdk0"},
                {"--forward-mode=io"}, vpd_.dir() + "/testpmd-vhost.log");
  must({"ip", "link", "set", "dpdk0", "up"});
  must({"ip", "addr", "replace", "10.99.0.1/24", "dev", "dpdk0"});
  must({"ip", "neigh", "replace", "10.99.0.2", "lladdr", guest_mac_.to_string(), "dev", "dpdk0",
        "nud", "permanent"});
  auto nl = net::Netlink::open();
  if (!nl) fatal(nl.error().message);
  auto tap = nl->find_link("dpdk0");
  if (!tap || !*tap) fatal(str("DPDK's net_tap made no dpdk0:\n", backend.log()));
  const net::Mac tap_mac = (*tap)->mac;
  const int tap_ifindex = (*tap)->ifindex;
  backend.command("start");

  Testpmd guest;
  guest.start(o_.frontend_cpu,
              {str("net_virtio_user0,path=", sock, ",queue_size=", o_.ring,
                   ",mac=", guest_mac_.to_string())},
              {rx ? "--forward-mode=rxonly" : "--forward-mode=txonly", str("--txpkts=", size.frame),
               str("--eth-peer=0,", tap_mac.to_string()), "--tx-ip=10.99.0.2,10.99.1.1"},
              vpd_.dir() + "/testpmd-guest.log");
  guest.command("start");
  const LinkStats l0 = link_stats("dpdk0");
  const auto ip0 = ip_stats();
  Window w(o_, backend.pid(), -1);
  w.frontend_core_used = false;  // testpmd polls there: only the measured core is checked
  {
    std::unique_ptr<GeneratorThread> gen;
    if (rx) {
      gen = std::make_unique<GeneratorThread>(generator(size, tap_ifindex, tap_mac, 99),
                                              o_.frontend_cpu);
    }
    run_window(w, [&]() -> std::pair<uint64_t, uint64_t> {
      // Guest->host: what DPDK wrote into its TAP; host->guest: what the guest received.
      const uint64_t n = rx ? guest.port_packets(0).first : link_stats("dpdk0").rx_packets;
      return {n, n * size.frame};
    });
  }
  guest.command("stop");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  Figures r = finish(w);
  r.link = link_stats("dpdk0") - l0;
  r.ip = ip_stats() - ip0;
  if (!rx) {
    r.phase_frames = r.link.rx_packets;
    check_tx(r, "dpdk0", false);
  } else {
    r.phase_frames = r.frames;
  }
  guest.quit();
  backend.quit();
  return r;
}

Figures Bench::vpd_rx(const Size& size) {
  auto gen = generator(size, true);
  const auto c0 = vpd_.counters("vp0");
  const LinkStats l0 = link_stats("vp0");
  Window w(o_, vpd_.pid(), -1);
  uint64_t frames = 0, bytes = 0, sent = 0, empty = 0;
  std::string first;
  uint32_t continuation = 0;  // buffers still to come for the frame being received
  auto reap = [&] {
    bool any = false;
    while (auto used = fe_->next_used(kRx)) {
      any = true;
      if (used->len == 0) {
        ++empty;
      } else if (continuation > 0) {
        --continuation;
        bytes += used->len;
      } else {
        // SPEC: virtio 1.2 §5.1.6.4: num_buffers in the first buffer of each frame.
        const auto buf = fe_->buffer(kRx, used->id);
        const uint16_t num = static_cast<uint16_t>(std::to_integer<uint16_t>(buf[10]) |
                                                   std::to_integer<uint16_t>(buf[11]) << 8);
        continuation = num > 0 ? num - 1u : 0u;
        if (frames == 0) first = header_text(buf, num);
        ++frames;
        bytes += used->len - kHdr;
      }
      if (auto ok = fe_->post_rx(kRx); !ok) fatal(ok.error().message);
    }
    if (any) {
      if (auto ok = fe_->kick_if_needed(kRx); !ok) fatal(ok.error().message);
    }
    return any;
  };
  for (;;) {
    const auto now = Clock::now();
    if (!w.tick(now, frames, bytes)) break;
    sent += gen->burst();
    reap();
  }
  // Whatever is still queued in the TAP arrives; then the counters settle.
  const auto deadline = Clock::now() + std::chrono::milliseconds(200);
  while (Clock::now() < deadline) {
    if (!reap()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  Figures r = finish(w);
  r.phase_frames = frames;
  r.first = first;
  r.vpd = vpd_.counters("vp0") - c0;
  r.link = link_stats("vp0") - l0;
  if (r.vpd["rx_packets"] != frames) {
    r.warnings.push_back(
        str("vpd delivered ", r.vpd["rx_packets"], " frames, the guest counted ", frames));
  }
  if (empty != 0) r.warnings.push_back(str(empty, " RX buffers came back empty"));
  for (const auto& [k, v] : r.vpd) {
    if (v != 0 && (k.starts_with("rx_dropped") || k == "rx_malformed_chain" ||
                   k == "rx_buffers_returned_empty" || k == "tap_read_fails")) {
      r.warnings.push_back(str("vpd ", k, " = ", v));
    }
  }
  (void)sent;
  return r;
}

Figures Bench::base_tx(const Pool& pool) {
  std::atomic<uint64_t> count{0};
  std::atomic<bool> stop{false};
  std::atomic<pid_t> tid{0};
  std::atomic<uint64_t> errors{0};
  const LinkStats l0 = link_stats("bench0");
  const auto ip0 = ip_stats();
  const int fd = base_.fd();
  std::thread writer([&] {
    pin_to(o_.vpd_cpu);
    tid = ::gettid();
    uint64_t n = 0, i = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      if (::write(fd, pool.at(i++), pool.len) == static_cast<ssize_t>(pool.len)) {
        count.store(++n, std::memory_order_relaxed);
      } else {
        errors.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  while (tid.load() == 0) std::this_thread::yield();
  Window w(o_, -1, tid.load());
  w.frontend_core_used = false;
  const uint64_t len = pool.len - kHdr;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const uint64_t n = count.load(std::memory_order_relaxed);
    if (!w.tick(Clock::now(), n, n * len)) break;
  }
  stop = true;
  writer.join();
  Figures r = finish(w);
  r.phase_frames = count.load();
  r.link = link_stats("bench0") - l0;
  r.ip = ip_stats() - ip0;
  if (errors.load() != 0) r.warnings.push_back(str(errors.load(), " write() calls failed"));
  check_tx(r, "bench0", false);
  return r;
}

Figures Bench::base_rx(const Size& size) {
  auto gen = generator(size, false);
  std::atomic<uint64_t> frames{0}, bytes{0};
  std::atomic<bool> stop{false};
  std::atomic<pid_t> tid{0};
  std::string first;  // written by the reader before it stores its first count
  const LinkStats l0 = link_stats("bench0");
  const int fd = base_.fd();
  std::thread reader([&] {
    pin_to(o_.vpd_cpu);
    tid = ::gettid();
    std::vector<std::byte> buf(kHdr + dataplane::kMaxFrameSize);
    uint64_t f = 0, b = 0;
    bool seen = false;
    while (!stop.load(std::memory_order_relaxed)) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n > 0) {
        if (!seen) {
          seen = true;
          first = header_text(buf, 1) + str(", ", n - kHdr, " bytes");
        }
        b += static_cast<uint64_t>(n) - kHdr;
        bytes.store(b, std::memory_order_relaxed);
        frames.store(++f, std::memory_order_relaxed);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, 50);
      }
    }
  });
  while (tid.load() == 0) std::this_thread::yield();
  Window w(o_, -1, tid.load());
  for (;;) {
    if (!w.tick(Clock::now(), frames.load(std::memory_order_relaxed),
                bytes.load(std::memory_order_relaxed))) {
      break;
    }
    gen->burst();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  reader.join();
  Figures r = finish(w);
  r.phase_frames = frames.load();
  r.first = first;
  r.link = link_stats("bench0") - l0;
  if (r.link.tx_packets != r.phase_frames) {
    r.warnings.push_back(
        str("bench0 sent ", r.link.tx_packets, " frames, read() got ", r.phase_frames));
  }
  return r;
}

Figures Bench::uring_tx(const Pool& pool) {
  std::atomic<uint64_t> count{0};
  std::atomic<bool> stop{false};
  std::atomic<pid_t> tid{0};
  UringOutcomes outcomes;
  std::string setup_error;  // written by the writer before it stores its tid
  const LinkStats l0 = link_stats("bench0");
  const auto ip0 = ip_stats();
  const int fd = base_.fd();
  std::thread writer([&] {
    pin_to(o_.vpd_cpu);
    Uring u;
    setup_error = u.init(fd, o_.vpd_cpu);
    if (!setup_error.empty()) {
      tid = ::gettid();
      return;
    }
    io_uring* ring = u.get();
    uint64_t n = 0, next = 0;
    unsigned outstanding = 0;  // writes prepared or in flight
    auto prepare = [&] {
      io_uring_sqe* sqe = io_uring_get_sqe(ring);
      io_uring_prep_write(sqe, 0, pool.at(next++), pool.len, 0);  // fixed file 0: bench0
      sqe->flags |= IOSQE_FIXED_FILE;
      sqe->user_data = 0;
      ++outstanding;
    };
    auto on_cqe = [&](int res, uint64_t) {
      --outstanding;
      if (res == static_cast<int>(pool.len)) {
        ++n;
      } else if (res < 0) {
        outcomes.failed.fetch_add(1, std::memory_order_relaxed);
        outcomes.last_error.store(-res, std::memory_order_relaxed);
      } else {
        outcomes.short_ops.fetch_add(1, std::memory_order_relaxed);
      }
    };
    for (unsigned k = 0; k < Uring::kDepth; ++k) prepare();
    tid = ::gettid();
    // Keep kDepth writes in flight: submit what was prepared, wait for at least one
    // completion, reap them all, prepare as many again.
    while (!stop.load(std::memory_order_relaxed)) {
      const int e = io_uring_submit_and_wait(ring, 1);
      if (e < 0 && e != -EINTR) {
        outcomes.failed.fetch_add(1, std::memory_order_relaxed);
        outcomes.last_error.store(-e, std::memory_order_relaxed);
        break;
      }
      const unsigned seen = u.reap(on_cqe);
      count.store(n, std::memory_order_relaxed);
      for (unsigned k = 0; k < seen; ++k) prepare();
    }
    // What is prepared or in flight still reaches the TAP: count it, so that the TAP's
    // counters match.
    while (outstanding > 0) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_submit_and_wait(ring, 1) < 0 || io_uring_peek_cqe(ring, &cqe) != 0) break;
      u.reap(on_cqe);
    }
    count.store(n, std::memory_order_relaxed);
  });
  while (tid.load() == 0) std::this_thread::yield();
  if (!setup_error.empty()) {
    writer.join();
    fatal(setup_error);
  }
  Window w(o_, -1, tid.load());
  w.io_workers = true;
  w.frontend_core_used = false;
  const uint64_t len = pool.len - kHdr;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const uint64_t n = count.load(std::memory_order_relaxed);
    if (!w.tick(Clock::now(), n, n * len)) break;
  }
  stop = true;
  writer.join();
  Figures r = finish(w);
  r.phase_frames = count.load();
  r.link = link_stats("bench0") - l0;
  r.ip = ip_stats() - ip0;
  outcomes.add_to(r.warnings, "write");
  check_tx(r, "bench0", false);
  return r;
}

Figures Bench::uring_rx(const Size& size) {
  auto gen = generator(size, false);
  std::atomic<uint64_t> frames{0}, bytes{0};
  std::atomic<bool> stop{false};
  std::atomic<pid_t> tid{0};
  UringOutcomes outcomes;
  std::string setup_error;  // written by the reader before it stores its tid
  const LinkStats l0 = link_stats("bench0");
  const int fd = base_.fd();
  // A read on an O_NONBLOCK file whose driver cannot wait without blocking completes with
  // EAGAIN instead of waiting for data: the loop would spin. Blocking reads wait (armed
  // poll, or an io_uring worker) and complete when a frame arrives. Restored afterwards.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) fatal_errno("fcntl bench0");
  std::thread reader([&] {
    pin_to(o_.vpd_cpu);
    Uring u;
    setup_error = u.init(fd, o_.vpd_cpu);
    if (!setup_error.empty()) {
      tid = ::gettid();
      return;
    }
    io_uring* ring = u.get();
    const size_t buf_size = kHdr + dataplane::kMaxFrameSize;
    std::vector<std::byte> bufs(Uring::kDepth * buf_size);
    uint64_t f = 0, b = 0;
    unsigned outstanding = 0;  // reads prepared or in flight
    auto prepare = [&](uint64_t slot) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring);
      io_uring_prep_read(sqe, 0, bufs.data() + slot * buf_size, buf_size, 0);
      sqe->flags |= IOSQE_FIXED_FILE;
      sqe->user_data = slot;
      ++outstanding;
    };
    std::vector<uint64_t> again;  // slots whose read completed, to read into again
    again.reserve(Uring::kDepth);
    auto on_cqe = [&](int res, uint64_t slot) {
      if (slot >= Uring::kDepth) return;  // the cancel request's own completion
      --outstanding;
      if (res > static_cast<int>(kHdr)) {
        b += static_cast<uint64_t>(res) - kHdr;
        ++f;
      } else if (res == -ECANCELED) {
        return;  // cancelled at the end: not read again
      } else if (res < 0) {
        outcomes.failed.fetch_add(1, std::memory_order_relaxed);
        outcomes.last_error.store(-res, std::memory_order_relaxed);
      } else {
        outcomes.short_ops.fetch_add(1, std::memory_order_relaxed);
      }
      again.push_back(slot);
    };
    for (unsigned k = 0; k < Uring::kDepth; ++k) prepare(k);
    tid = ::gettid();
    __kernel_timespec wait{0, 50'000'000};  // to look at `stop` while the TAP is idle
    while (!stop.load(std::memory_order_relaxed)) {
      io_uring_cqe* cqe = nullptr;
      const int e = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &wait, nullptr);
      if (e < 0 && e != -ETIME && e != -EINTR) {
        outcomes.failed.fetch_add(1, std::memory_order_relaxed);
        outcomes.last_error.store(-e, std::memory_order_relaxed);
        break;
      }
      again.clear();
      u.reap(on_cqe);
      bytes.store(b, std::memory_order_relaxed);
      frames.store(f, std::memory_order_relaxed);
      for (uint64_t slot : again) prepare(slot);
    }
    // Cancel the reads still waiting; a read that completes meanwhile is still counted, so
    // that every frame the TAP handed out is.
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    io_uring_prep_cancel(sqe, nullptr, IORING_ASYNC_CANCEL_ANY);
    sqe->user_data = Uring::kDepth;
    io_uring_submit(ring);
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    while (outstanding > 0 && Clock::now() < deadline) {
      io_uring_cqe* cqe = nullptr;
      __kernel_timespec t{0, 10'000'000};
      io_uring_wait_cqe_timeout(ring, &cqe, &t);
      u.reap(on_cqe);
    }
    bytes.store(b, std::memory_order_relaxed);
    frames.store(f, std::memory_order_relaxed);
  });
  while (tid.load() == 0) std::this_thread::yield();
  if (!setup_error.empty()) {
    reader.join();
    ::fcntl(fd, F_SETFL, flags);
    fatal(setup_error);
  }
  Window w(o_, -1, tid.load());
  w.io_workers = true;
  for (;;) {
    if (!w.tick(Clock::now(), frames.load(std::memory_order_relaxed),
                bytes.load(std::memory_order_relaxed))) {
      break;
    }
    gen->burst();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  reader.join();
  ::fcntl(fd, F_SETFL, flags);
  Figures r = finish(w);
  r.phase_frames = frames.load();
  r.link = link_stats("bench0") - l0;
  outcomes.add_to(r.warnings, "read");
  if (r.link.tx_packets != r.phase_frames) {
    r.warnings.push_back(
        str("bench0 sent ", r.link.tx_packets, " frames, the io_uring reads got ", r.phase_frames));
  }
  return r;
}

std::string rate(double fps) {
  char b[32];
  if (fps >= 1e6) {
    std::snprintf(b, sizeof b, "%.3f M", fps / 1e6);
  } else {
    std::snprintf(b, sizeof b, "%.1f k", fps / 1e3);
  }
  return b;
}

uint64_t get(const std::map<std::string, uint64_t>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0 : it->second;
}

double per(uint64_t n, uint64_t frames) {
  return frames == 0 ? 0 : static_cast<double>(n) / static_cast<double>(frames);
}

void Bench::print(const std::vector<Case>& cases) {
  const bool uring = uring_unusable_.empty();
  std::printf("\n%-13s %-10s %12s %9s | %12s %9s %7s %9s", "direction", "size", "vpd frames/s",
              "Gbit/s", "loop frames/s", "Gbit/s", "ratio", "CPU ratio");
  if (uring) {
    std::printf(" | %12s %9s %7s %9s", "uring frames/s", "Gbit/s", "ratio", "CPU ratio");
  }
  if (o_.dpdk) std::printf(" | %12s %9s %7s %9s", "DPDK frames/s", "Gbit/s", "ratio", "CPU ratio");
  std::printf("\n");
  for (const Case& c : cases) {
    std::printf("%-13s %-10s %12s %9.2f | %12s %9.2f %7.2f %9.2f", c.direction(), c.size->name,
                rate(c.vpd.fps).c_str(), c.vpd.gbps, rate(c.base.fps).c_str(), c.base.gbps,
                c.ratio(), c.cpu_ratio());
    if (uring) {
      std::printf(" | %12s %9.2f %7.2f %9.2f", rate(c.uring.fps).c_str(), c.uring.gbps,
                  Case::ratio(c.vpd, c.uring), Case::cpu_ratio(c.vpd, c.uring));
    }
    if (o_.dpdk) {
      std::printf(" | %12s %9.2f %7.2f %9.2f", rate(c.peer.fps).c_str(), c.peer.gbps,
                  Case::ratio(c.vpd, c.peer), Case::cpu_ratio(c.vpd, c.peer));
    }
    std::printf("\n");
  }
  std::printf(
      "(loop: one thread write()s or read()s bench0, one frame per syscall; uring: one thread\n"
      " keeps %u io_uring writes or reads of bench0 in flight. ratio: vpd frames/s / that\n"
      " baseline's. CPU ratio: the baseline's CPU time per frame / vpd's, the fairer figure where\n"
      " the generator, not the reader, set the pace.)\n",
      Uring::kDepth);
  if (o_.dpdk) {
    std::printf(
        "(DPDK: DPDK's net_vhost backend forwarding to its net_tap on vpd's core; ratio: vpd /\n"
        " DPDK. vpd: driven by dpdk-testpmd's virtio-user instead of the test front-end.)\n");
  }

  std::printf(
      "\nWhere the time goes (measured window; CPU = busy share of one core: vpd's whole "
      "process, or the baseline loop's thread)\n");
  std::printf("%-13s %-10s %-5s %11s %8s %8s %10s %9s %9s %11s %9s %7s\n", "direction", "size",
              "side", "CPU usr/sys", "us/frame", "wakeups", "kicks", "irqs", "irqs supp",
              "no_rx_buf", "tap drop", "foreign");
  auto diag = [&](const Case& c, const Figures& r, const char* side) {
    const bool vpd_side = &r == &c.vpd;
    const uint64_t f = r.phase_frames;
    std::printf("%-13s %-10s %-5s %4.0f%%/%3.0f%% %8.3f %8.4f", c.direction(), c.size->name, side,
                100 * r.cpu.user / r.seconds, 100 * r.cpu.sys / r.seconds, r.cpu_per_frame() * 1e6,
                per(r.cpu.voluntary, r.frames));
    if (vpd_side) {
      std::printf(" %10.4f %9.4f %9.4f %11.4f", per(get(r.vpd, "kicks"), f),
                  per(get(r.vpd, "interrupts"), f), per(get(r.vpd, "interrupts_suppressed"), f),
                  per(get(r.vpd, "no_rx_avail_buffer"), f));
    } else {
      std::printf(" %10s %9s %9s %11s", "-", "-", "-", "-");
    }
    std::printf(" %9s %6.1f%%\n", c.rx ? str(r.link.tx_dropped).c_str() : "-", 100 * r.foreign);
  };
  for (const Case& c : cases) {
    diag(c, c.vpd, "vpd");
    diag(c, c.base, "loop");
    if (uring) diag(c, c.uring, "uring");
    if (o_.dpdk) diag(c, c.peer, "dpdk");
  }
  std::printf(
      "(us/frame: CPU time per frame. wakeups: voluntary context switches per frame. kicks, irqs,\n"
      " irqs supp, no_rx_buf: vpd's counters per frame. tap drop: frames the TAP dropped because\n"
      " its reader was behind, i.e. the reader was the bottleneck; 0: the generator was.\n"
      " foreign: share of a core that other tasks or the hypervisor took, the worse of the "
      "two.)\n");

  auto side = [](const Case& c, const Figures* r) {
    return r == &c.vpd ? "vpd" : r == &c.base ? "loop" : r == &c.uring ? "uring" : "dpdk";
  };
  bool warned = false;
  for (const Case& c : cases) {
    for (const Figures* r : {&c.vpd, &c.base, &c.uring, &c.peer}) {
      if ((r == &c.uring && !uring) || (r == &c.peer && !o_.dpdk)) continue;
      for (const auto& w : r->warnings) {
        if (!warned) std::printf("\nWarnings:\n");
        warned = true;
        std::printf("  %s %s %s: %s\n", c.direction(), c.size->name, side(c, r), w.c_str());
      }
    }
  }
  if (!warned) std::printf("\nChecks passed: no drops, every frame accounted for on both sides.\n");
  if (o_.verbose) {
    for (const Case& c : cases) {
      for (const Figures* r : {&c.vpd, &c.base, &c.uring, &c.peer}) {
        if ((r == &c.uring && !uring) || (r == &c.peer && !o_.dpdk)) continue;
        std::printf("\n%s %s %s: %" PRIu64 " frames in %.3f s; whole case: %" PRIu64
                    " frames; TAP rx %" PRIu64 " (dropped %" PRIu64 ") tx %" PRIu64
                    " (dropped %" PRIu64 "); %" PRIu64 "+%" PRIu64 " context switches\n",
                    c.direction(), c.size->name, side(c, r), r->frames, r->seconds, r->phase_frames,
                    r->link.rx_packets, r->link.rx_dropped, r->link.tx_packets, r->link.tx_dropped,
                    r->cpu.voluntary, r->cpu.involuntary);
        if (!r->first.empty()) std::printf("  first frame: %s\n", r->first.c_str());
        std::string moved;
        for (const auto& [k, v] : r->vpd) {
          if (v != 0) moved += str(" ", k, "=", v);
        }
        if (!moved.empty()) std::printf("  vpd:%s\n", moved.c_str());
        moved.clear();
        for (const auto& [k, v] : r->ip) {
          if (v != 0) moved += str(" ", k, "=", v);
        }
        if (!moved.empty()) std::printf("  Ip:%s\n", moved.c_str());
      }
    }
  }

  print_targets(cases);
}

void Bench::print_targets(const std::vector<Case>& cases) {
  const bool uring = uring_unusable_.empty();
  std::printf("\nTargets (figures of this run):\n");
  auto line = [](const Case& c, const std::string& what, double target, double got, bool met) {
    std::printf("  %-11s %-10s %-44s >= %.2fx: %5.2fx  %s\n", c.direction(), c.size->name,
                what.c_str(), target, got, met ? "met" : "NOT met");
  };
  for (const Case& c : cases) {
    if (!c.rx && !c.size->gso) {
      line(c, "vpd / write() loop, frames/s", 1.15, c.ratio(), c.ratio() >= 1.15);
      if (uring) {
        const double r = Case::ratio(c.vpd, c.uring);
        line(c, "vpd / io_uring loop, frames/s", 0.9, r, r >= 0.9);
      } else {
        std::printf("  %-11s %-10s vpd / io_uring loop: not measured (%s)\n", c.direction(),
                    c.size->name, uring_unusable_.c_str());
      }
    } else if (!c.rx) {
      line(c, "vpd / raw GSO write() loop, frames/s", 0.95, c.ratio(), c.ratio() >= 0.95);
    } else if (!c.size->gso) {
      line(c, "read() loop CPU/frame / vpd's (CPU ratio)", 1.1, c.cpu_ratio(),
           c.cpu_ratio() >= 1.1);
    } else {
      line(c, str("vpd / read() loop, frames/s; too_big ", c.too_big), 0.9, c.ratio(),
           c.ratio() >= 0.9 && c.too_big == 0);
    }
    if (o_.dpdk && c.size->frame == 64) {
      const double r = Case::ratio(c.vpd, c.peer);
      line(c, "vpd / DPDK net_vhost, frames/s", 1.1, r, r >= 1.1);
    }
  }
}

Bench::PairsRun Bench::vpd_tx_pairs(const Pool& pool, uint32_t pairs) {
  auto queue_tx = [&] {
    std::vector<uint64_t> out(pairs, 0);
    const Json st = vpd_.status("vp0");
    const Json& q = st["queue_counters"];
    for (uint32_t p = 0; p < pairs && p < q.size(); ++p) out[p] = q[p].value("tx_packets", 0ull);
    return out;
  };
  const auto q0 = queue_tx();
  const auto c0 = vpd_.counters("vp0");
  const LinkStats l0 = link_stats("vp0");
  const auto ip0 = ip_stats();
  Window w(o_, vpd_.pid(), -1);
  uint64_t done = 0, next = 0;
  const uint64_t len = pool.len - kHdr;
  for (;;) {
    const auto now = Clock::now();
    if (!w.tick(now, done, done * len)) break;
    bool any = false;
    for (uint32_t p = 0; p < pairs; ++p) {
      const uint32_t tx = 2 * p + 1;
      while (fe_->next_used(tx)) {
        ++done;
        any = true;
      }
      while (fe_->outstanding(tx) < o_.ring) {
        const test::Segment seg{pool.gpa_of(next), pool.len, false};
        if (auto id = fe_->post_chain(tx, std::span<const test::Segment>(&seg, 1)); !id) {
          fatal(id.error().message);
        }
        ++next;
        any = true;
      }
      if (auto ok = fe_->kick_if_needed(tx); !ok) fatal(ok.error().message);
    }
    if (!any) cpu_relax();
  }
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  for (uint32_t p = 0; p < pairs; ++p) {
    while (fe_->outstanding(2 * p + 1) != 0 && Clock::now() < deadline) {
      if (!fe_->next_used(2 * p + 1)) cpu_relax();
    }
    if (fe_->outstanding(2 * p + 1) != 0) fatal("vpd did not give every TX buffer back in 5 s");
  }
  PairsRun run;
  run.all = finish(w);
  run.all.phase_frames = next;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // vpd publishes its counters
  run.all.vpd = vpd_.counters("vp0") - c0;
  run.all.link = link_stats("vp0") - l0;
  run.all.ip = ip_stats() - ip0;
  check_tx(run.all, "vp0", true);
  // Each pair's share of the measured rate: its share of the whole case's frames.
  const auto q1 = queue_tx();
  uint64_t sum = 0;
  for (uint32_t p = 0; p < pairs; ++p) sum += q1[p] - q0[p];
  for (uint32_t p = 0; p < pairs; ++p) {
    run.fps.push_back(
        sum ? run.all.fps * static_cast<double>(q1[p] - q0[p]) / static_cast<double>(sum) : 0);
  }
  if (sum != run.all.phase_frames) {
    run.all.warnings.push_back(
        str("the pairs counted ", sum, " frames, the guest sent ", run.all.phase_frames));
  }
  run.workers = vpd_.status("vp0")["queue_workers"].dump();
  return run;
}

void Bench::run_queues() {
  std::printf(
      "vpd_bench --queues %u: %ld cores; front-end on cpu %d, vpd (--workers %u, all its "
      "threads) on cpu %d; %.2f s per case after %.2f s warm-up; split rings of %u\n",
      o_.queues, ::sysconf(_SC_NPROCESSORS_ONLN), o_.frontend_cpu, o_.queues, o_.vpd_cpu,
      o_.seconds, o_.warmup, o_.ring);
  std::printf(
      "What this cannot show: both of vpd's workers share cpu %d (the front-end needs another\n"
      "core), so with 2 cores two pairs cannot run faster than one. It shows that each pair is\n"
      "served by its own worker, counted exactly, and what the split costs; scaling needs a\n"
      "core per worker besides the front-end's.\n",
      o_.vpd_cpu);
  std::fflush(stdout);
  std::printf("\n%-13s %-10s %14s %16s %s\n", "direction", "size", "1 pair", "2 pairs (sum)",
              "per pair (queue workers)");
  bool warned = false;
  std::vector<std::string> warnings;
  for (const Size& s : kSizes) {
    if (s.gso) continue;  // frames/s of 64 B and 1514 B frames
    if (!o_.sizes.empty() && std::ranges::find(o_.sizes, s.key) == o_.sizes.end()) continue;
    auto frame = make_frame(s, guest_mac_, vp0_mac_, ipv4(10, 97, 0, 2), ipv4(10, 97, 1, 1));
    const Pool pool = make_pool(*fe_, frame, o_.ring);
    PairsRun one, two;
    for (int k = 0; k < o_.repeat; ++k) {
      PairsRun a = vpd_tx_pairs(pool, 1);
      if (k == 0 || a.all.fps > one.all.fps) one = std::move(a);
      PairsRun b = vpd_tx_pairs(pool, o_.queues);
      if (k == 0 || b.all.fps > two.all.fps) two = std::move(b);
    }
    std::string per;
    for (size_t p = 0; p < two.fps.size(); ++p) {
      per += str(p ? ", " : "", "pair ", p, " ", rate(two.fps[p]), "/s");
    }
    std::printf("%-13s %-10s %12s/s %14s/s %s (%s)\n", "guest->host", s.name,
                rate(one.all.fps).c_str(), rate(two.all.fps).c_str(), per.c_str(),
                two.workers.c_str());
    std::fflush(stdout);
    for (const PairsRun* r : {&one, &two}) {
      for (const auto& w : r->all.warnings) warnings.push_back(str(s.name, ": ", w));
    }
  }
  for (const auto& w : warnings) {
    if (!warned) std::printf("\nWarnings:\n");
    warned = true;
    std::printf("  %s\n", w.c_str());
  }
  if (!warned) {
    std::printf("\nChecks passed: every frame reached the kernel, the pairs' counts add up.\n");
  }
  if (o_.keep) std::printf("\nvpd's directory (log: vpd.log): %s\n", vpd_.dir().c_str());
}

void Bench::run_all() {
  if (o_.queues > 1) {
    run_queues();
    return;
  }
  std::printf(
      "vpd_bench: %ld cores; front-end + generator on cpu %d, vpd + baseline loop on cpu "
      "%d; %.2f s per case after %.2f s warm-up; split rings of %u, %u-byte RX buffers\n",
      ::sysconf(_SC_NPROCESSORS_ONLN), o_.frontend_cpu, o_.vpd_cpu, o_.seconds, o_.warmup, o_.ring,
      kRxBufferSize);
  std::printf("guest acked %s; TAP offloads %s\n",
              net::feature_names(acked_ & net::kOffloadsSupported).c_str(), offloads_.c_str());
  if (o_.dpdk) {
    std::printf(
        "front-end: dpdk-testpmd virtio-user (txonly / rxonly) on cpu %d driving vp1; vpd's "
        "figures from its counters. Peer: dpdk-testpmd net_vhost + net_tap (io) on cpu %d, "
        "driven by a second testpmd virtio-user. 64 KB GSO left out (no offloads).\n",
        o_.frontend_cpu, o_.vpd_cpu);
  }
  if (uring_unusable_.empty()) {
    std::printf("io_uring baseline: %u operations in flight, registered file\n", Uring::kDepth);
  } else {
    std::printf("io_uring baseline left out: %s (kernel.io_uring_disabled?)\n",
                uring_unusable_.c_str());
  }
  std::fflush(stdout);

  std::vector<Case> cases;
  for (bool rx : {false, true}) {
    if ((rx && !o_.rx) || (!rx && !o_.tx)) continue;
    for (const Size& s : kSizes) {
      if (!o_.sizes.empty() && std::ranges::find(o_.sizes, s.key) == o_.sizes.end()) continue;
      if (o_.dpdk && s.gso) continue;  // testpmd's virtio-user negotiates no offloads
      Case c{rx, &s, {}, {}, {}, {}, 0};
      if (!rx) {
        auto frame = make_frame(s, guest_mac_, vp0_mac_, ipv4(10, 97, 0, 2), ipv4(10, 97, 1, 1));
        const Pool vpd_pool = make_pool(*fe_, frame, o_.ring);
        frame = make_frame(s, guest_mac_, base_mac_, ipv4(10, 96, 0, 2), ipv4(10, 96, 1, 1));
        const Pool base_pool = make_pool(*fe_, frame, o_.ring);
        for (int k = 0; k < o_.repeat; ++k) {
          keep_best(c.vpd, o_.dpdk ? dpdk_vpd(s, false) : vpd_tx(vpd_pool), k);
          if (o_.dpdk) keep_best(c.peer, dpdk_peer(s, false), k);
          keep_best(c.base, base_tx(base_pool), k);
          if (uring_unusable_.empty()) keep_best(c.uring, uring_tx(base_pool), k);
        }
      } else {
        for (int k = 0; k < o_.repeat; ++k) {
          Figures v = o_.dpdk ? dpdk_vpd(s, true) : vpd_rx(s);
          if (o_.dpdk) keep_best(c.peer, dpdk_peer(s, true), k);
          c.too_big += get(v.vpd, "rx_dropped_too_big");
          keep_best(c.vpd, std::move(v), k);
          keep_best(c.base, base_rx(s), k);
          if (uring_unusable_.empty()) keep_best(c.uring, uring_rx(s), k);
        }
      }
      std::printf("  %s %-10s vpd %s/s, %s loop %s/s", c.direction(), s.name,
                  rate(c.vpd.fps).c_str(), rx ? "read()" : "write()", rate(c.base.fps).c_str());
      if (uring_unusable_.empty()) std::printf(", io_uring %s/s", rate(c.uring.fps).c_str());
      if (o_.dpdk) std::printf(", DPDK net_vhost %s/s", rate(c.peer.fps).c_str());
      std::printf("\n");
      std::fflush(stdout);
      cases.push_back(std::move(c));
    }
  }
  print(cases);
  if (o_.keep) std::printf("\nvpd's directory (log: vpd.log): %s\n", vpd_.dir().c_str());
}

}  // namespace
}  // namespace vp::bench

int main(int argc, char** argv) {
  using namespace vp::bench;
  try {
    const Options o = parse_options(argc, argv);
    Bench bench(o);
    bench.setup();
    bench.run_all();
  } catch (const Fatal& f) {
    std::fprintf(stderr, "vpd_bench: %s\n", f.what.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vpd_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
