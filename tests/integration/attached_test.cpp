// What's attached: the front-end process vpctl names (pid, uid, executable, VM name, since
// when), the link state in the session's terms, the stats and qemu-args JSON objects, the
// `show`/`set` aliases, and `vpctl metrics` checked by Prometheus's own promtool.

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "integration/vpd_fixture.hpp"

extern char** environ;

namespace vp::test {
namespace {

using namespace std::chrono_literals;

// A stand-in VMM: a Python process whose command line carries QEMU's `-name`, connecting
// to (or, serving, accepting on) a Unix socket and then holding the connection.
class FakeVmm {
 public:
  FakeVmm(const std::string& socket, bool serve, const std::vector<std::string>& vmm_args) {
    const std::string program = serve ? "import socket,sys,time\n"
                                        "s=socket.socket(socket.AF_UNIX)\n"
                                        "s.bind(sys.argv[1]); s.listen(1)\n"
                                        "c,_=s.accept()\n"
                                        "time.sleep(120)\n"
                                      : "import socket,sys,time\n"
                                        "s=socket.socket(socket.AF_UNIX)\n"
                                        "s.connect(sys.argv[1])\n"
                                        "time.sleep(120)\n";
    std::vector<std::string> words{"/usr/bin/python3", "-c", program, socket};
    words.insert(words.end(), vmm_args.begin(), vmm_args.end());
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
  }
  ~FakeVmm() { stop(); }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }
  /// readlink /proc/PID/exe, as vpd should report it.
  std::string exe() const {
    char buf[4096];
    const ssize_t n =
        ::readlink(("/proc/" + std::to_string(pid_) + "/exe").c_str(), buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }

 private:
  pid_t pid_ = -1;
};

class Attached : public VpdFixture {
 protected:
  /// Waits until vp's guest state is `state`; returns its last status.
  json wait_guest(const std::string& name, const std::string& state) {
    json status;
    for (int i = 0; i < 500; ++i) {
      status = show(name)["status"];
      if (status.value("guest", "") == state) break;
      std::this_thread::sleep_for(20ms);
    }
    return status;
  }

  // The value after "key:" on its line of vpctl's key: value output.
  static std::string value_of(const std::string& text, const std::string& key) {
    size_t at = text.rfind(key + ":", 0) == 0 ? 0 : text.find("\n" + key + ":");
    if (at == std::string::npos) return "<no " + key + ">";
    if (at) ++at;
    std::string line = text.substr(at + key.size() + 1, text.find('\n', at) - at - key.size() - 1);
    return line.substr(line.find_first_not_of(' '));
  }
};

TEST_F(Attached, qemu_on_bind_is_named_by_pid_exe_and_vm_name_and_its_queues_not_started) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "up"});
  const std::string sock = vpd().runtime_dir() + "/vp0.sock";
  const auto before = std::chrono::system_clock::now();
  FakeVmm vmm(sock, false, {"-name", "guest=web1,debug-threads=on"});
  ASSERT_GT(vmm.pid(), 0);
  const json status = wait_guest("vp0", "connected");
  ASSERT_EQ(status.value("guest", ""), "connected") << status.dump(2) << vpd().log();
  const json f = status["frontend"];
  EXPECT_EQ(f.value("pid", 0), vmm.pid()) << f.dump();
  EXPECT_EQ(f.value("uid", -1), static_cast<int>(::getuid()));
  EXPECT_EQ(f.value("gid", -1), static_cast<int>(::getgid()));
  EXPECT_EQ(f.value("exe", ""), vmm.exe());
  EXPECT_EQ(f.value("vm_name", ""), "web1");
  const int64_t since = f.value("connected_since_unix", int64_t{0});
  const int64_t start =
      std::chrono::duration_cast<std::chrono::seconds>(before.time_since_epoch()).count();
  EXPECT_GE(since, start - 1);
  EXPECT_LE(since, start + 30);
  EXPECT_EQ(f.value("connected_since", "").size(), std::string("2026-12-03T17:30:02Z").size());
  // Connected, but no driver started the queues: no carrier, and vpctl says why.
  EXPECT_EQ(status.value("link_state", ""), "guest-not-started") << status.dump(2);
  const std::string human = ok({"vp0"}).out;
  EXPECT_EQ(value_of(human, "link"),
            "up, no carrier (guest connected, driver has not started its queues)")
      << human;
  EXPECT_EQ(value_of(human, "guest"), "connected") << human;
  EXPECT_EQ(value_of(human, "vm name"), "web1") << human;
  EXPECT_TRUE(contains(value_of(human, "frontend"), "pid " + std::to_string(vmm.pid()))) << human;
  EXPECT_TRUE(contains(ok({"list"}).out, "  guest: VM web1, pid " + std::to_string(vmm.pid())))
      << ok({"list"}).out;
  EXPECT_TRUE(contains(vpd().log(), "VM web1")) << vpd().log();

  // It goes away: no frontend, no guest attached.
  vmm.stop();
  const json idle = wait_guest("vp0", "listening");
  EXPECT_EQ(idle.value("guest", ""), "listening") << idle.dump(2);
  EXPECT_FALSE(idle.contains("frontend")) << idle.dump(2);
  EXPECT_EQ(idle.value("link_state", ""), "no-guest") << idle.dump(2);
  EXPECT_EQ(value_of(ok({"vp0"}).out, "link"), "up, no carrier (no guest attached)");
}

TEST_F(Attached, a_vmm_vpd_dials_on_peer_is_named_too) {
  ASSERT_EQ(vpd().start(), "");
  const std::string sock = path("qemu-stream.sock");
  FakeVmm vmm(sock, true, {"-m", "256M", "-name", "g2"});
  ASSERT_GT(vmm.pid(), 0);
  for (int i = 0; i < 200 && ::access(sock.c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ok({"vp0", "create", "transport=stream", "peerfeats=0", "peer=" + sock, "up"});
  const json status = wait_guest("vp0", "connected");
  ASSERT_EQ(status.value("guest", ""), "connected") << status.dump(2) << vpd().log();
  EXPECT_EQ(status["frontend"].value("pid", 0), vmm.pid()) << status.dump(2);
  EXPECT_EQ(status["frontend"].value("vm_name", ""), "g2") << status.dump(2);
  EXPECT_EQ(status.value("link_state", ""), "carrier-up") << status.dump(2);
  EXPECT_EQ(value_of(ok({"vp0"}).out, "link"), "up, carrier on");
}

TEST_F(Attached, stats_and_qemu_args_json_are_their_own_objects) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "guest-mac=52:54:00:12:34:56"});
  const json shown = show("vp0");
  EXPECT_EQ(shown.value("guest_mac", ""), "52:54:00:12:34:56");
  EXPECT_FALSE(shown["status"].contains("guest_mac")) << "one guest_mac field";
  EXPECT_TRUE(shown["toggles"].is_array()) << shown.dump(2);
  EXPECT_TRUE(contains_name(shown["toggles"], "tso4")) << shown.dump(2);
  EXPECT_TRUE(shown["status"]["features"].is_array()) << shown.dump(2);
  EXPECT_EQ(shown["status"].value("guest", ""), "listening");

  const json stats = vpd().ctl_json({"vp0", "stats"});
  EXPECT_NE(stats, shown);
  EXPECT_EQ(stats.value("endpoint", ""), "vp0") << stats.dump(2);
  EXPECT_EQ(stats.value("guest", ""), "listening") << stats.dump(2);
  EXPECT_TRUE(stats["counters"].is_object()) << stats.dump(2);
  EXPECT_EQ(stats["counters"].value("tx_packets", 1), 0) << stats.dump(2);
  EXPECT_FALSE(stats.contains("status")) << stats.dump(2);

  const json args = vpd().ctl_json({"vp0", "qemu-args"});
  EXPECT_NE(args, shown);
  ASSERT_TRUE(args["qemu"]["args"].is_array()) << args.dump(2);
  const json& a = args["qemu"]["args"];
  EXPECT_NE(std::find(a.begin(), a.end(), json("-chardev")), a.end()) << args.dump(2);
  EXPECT_NE(std::find(a.begin(), a.end(),
                      json("socket,id=vp0,path=" + vpd().runtime_dir() + "/vp0.sock,reconnect=1")),
            a.end())
      << args.dump(2);
  EXPECT_EQ(args.value("shared_memory", false), true);
  EXPECT_TRUE(args["cloud_hypervisor"]["args"].is_array()) << args.dump(2);
}

TEST_F(Attached, show_and_set_are_aliases) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "up"});
  EXPECT_EQ(ok({"show", "vp0"}).out, ok({"vp0"}).out);
  ok({"vp0", "set", "mtu=1400"});
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1400);
  EXPECT_EQ(show("vp0").value("mtu", 0), 1400);
  EXPECT_EQ(vpd().ctl({"show"}).status, 2);
  EXPECT_EQ(vpd().ctl({"show", "vp0", "mtu=1300"}).status, 2);
  EXPECT_EQ(vpd().ctl({"vp0", "set"}).status, 2);
  EXPECT_EQ(vpd().ctl({"--json", "metrics"}).status, 2);
  EXPECT_EQ(vpd().ctl({"metrics", "vp0"}).status, 2);
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 1400) << "a usage error changes nothing";
}

// promtool (Debian's prometheus package, which scripts/install-deps --tests installs) must
// accept `vpctl metrics` as it is: this test fails, not skips, without it.
TEST_F(Attached, metrics_pass_promtool_check_metrics) {
  ASSERT_EQ(::access("/usr/bin/promtool", X_OK), 0)
      << "promtool is missing: install Debian's prometheus package (scripts/install-deps "
         "--tests)";
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "up"});
  ok({"vp1", "create", "transport=stream", "peerfeats=0"});
  ok({"vp2", "create", "transport=tap"});
  FakeVmm vmm(vpd().runtime_dir() + "/vp0.sock", false, {"-name", "guest=m\"1"});
  ASSERT_EQ(wait_guest("vp0", "connected").value("guest", ""), "connected") << vpd().log();

  const Output m = ok({"metrics"});
  const std::string file = path("metrics.prom");
  std::ofstream(file) << m.out;
  const Output check = run({"sh", "-c", "promtool check metrics < " + file});
  EXPECT_EQ(check.status, 0) << "promtool:\n" << check.out << check.err << "\nmetrics:\n" << m.out;
  EXPECT_EQ(check.out + check.err, "") << "promtool found problems:\n" << check.out << check.err;

  EXPECT_TRUE(contains(m.out, "# TYPE vpd_packets_total counter\n")) << m.out;
  EXPECT_TRUE(contains(m.out, "vpd_packets_total{endpoint=\"vp0\",direction=\"from_guest\"} 0\n"))
      << m.out;
  EXPECT_TRUE(contains(m.out, "vpd_guest_state{endpoint=\"vp0\",state=\"connected\"} 1\n"))
      << m.out;
  EXPECT_TRUE(contains(m.out, "vpd_guest_state{endpoint=\"vp1\",state=\"listening\"} 1\n"))
      << m.out;
  EXPECT_TRUE(contains(m.out, "vpd_guest_state{endpoint=\"vp2\",state=\"not-attached\"} 1\n"))
      << m.out;
  EXPECT_TRUE(contains(m.out, "vm_name=\"m\\\"1\"")) << m.out;
  EXPECT_TRUE(contains(m.out, "pid=\"" + std::to_string(vmm.pid()) + "\"")) << m.out;
  EXPECT_TRUE(contains(m.out, "vpd_endpoints 3\n")) << m.out;
  // transport=tap has no data path in vpd: no counters for vp2.
  EXPECT_FALSE(contains(m.out, "vpd_packets_total{endpoint=\"vp2\"")) << m.out;
}

}  // namespace
}  // namespace vp::test
