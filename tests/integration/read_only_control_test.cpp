// The read-only control socket against a real vpd: control-ro.sock beside control.sock answers
// what changes nothing (list, show, stats, qemu-args, libvirt-xml, metrics, version, monitor)
// and refuses create, set and destroy with code "permission" and a sentence, leaving the
// endpoints, the kernel and the state file as they were; its file is 0660 root:vpd-ro when
// that group exists, else 0600 root; a user of group vpd-ro only reaches it through vpctl's
// fallback from control.sock; its clients have their own connection and monitor limits, so
// they cannot lock out control.sock's; a file in its way stops vpd's start with a sentence;
// and under socket activation vpd tells the two passed sockets apart by their
// FileDescriptorName=.

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/vpd_fixture.hpp"
#include "sys/unix_socket.hpp"

extern char** environ;

namespace vp::test {
namespace {

using namespace std::chrono_literals;

constexpr char kRefusal[] =
    "is read-only; run vpctl as root or as a member of group vpd to create, change or destroy "
    "endpoints";

// How often `needle` occurs in `text`.
size_t occurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Reads one line from `fd` (up to 20 s); "" at EOF or when nothing comes.
std::string read_line(int fd, std::string& buffer) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  for (;;) {
    if (const size_t nl = buffer.find('\n'); nl != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      return line;
    }
    if (std::chrono::steady_clock::now() > deadline) return "";
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return "";
    buffer.append(buf, static_cast<size_t>(n));
  }
}

bool send_line(int fd, const std::string& line) {
  return ::send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size());
}

/// Removes, on destruction, the group it created (only one this test made).
struct GroupGuard {
  std::string name;
  bool created = false;
  ~GroupGuard() {
    if (created) sh("groupdel " + name);
  }
};

class ReadOnlyControl : public VpdFixture {
 protected:
  std::string ro_socket() { return vpd().runtime_dir() + "/control-ro.sock"; }

  /// vpctl --socket control-ro.sock ARGS.
  Output ro(const std::vector<std::string>& args) {
    std::vector<std::string> argv{VPCTL_BINARY, "--socket", ro_socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  }
  json ro_json(const std::vector<std::string>& args) {
    std::vector<std::string> words{"--json"};
    words.insert(words.end(), args.begin(), args.end());
    return json::parse(ro(words).out, nullptr, false);
  }

  /// vpctl ARGS through control-ro.sock, expected to be refused as a change.
  void expect_refused(const std::vector<std::string>& args) {
    const Output r = ro(args);
    EXPECT_EQ(r.status, 1) << joined(args) << "\nstdout: " << r.out << "\nstderr: " << r.err;
    EXPECT_TRUE(contains(r.err, "(permission)")) << joined(args) << ": " << r.err;
    EXPECT_TRUE(contains(r.err, ro_socket() + ") " + kRefusal)) << joined(args) << ": " << r.err;
  }
};

TEST_F(ReadOnlyControl, list_show_stats_metrics_and_version_are_answered) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "mtu=1400", "up"});
  ok({"vp1", "create", "transport=stream"});

  const json list = ro_json({"list"});
  ASSERT_TRUE(list.is_array()) << list.dump();
  ASSERT_EQ(list.size(), 2u) << list.dump(2);
  EXPECT_EQ(list[0].value("name", ""), "vp0");
  EXPECT_EQ(list[1].value("name", ""), "vp1");

  const json shown = ro_json({"vp0"});
  EXPECT_EQ(shown.value("mtu", 0), 1400) << shown.dump(2);
  EXPECT_EQ(shown.value("transport", ""), "vhost-user");
  EXPECT_EQ(ro_json({"show", "vp1"}).value("transport", ""), "stream");

  const Output stats = ro({"vp0", "stats"});
  EXPECT_EQ(stats.status, 0) << stats.err;
  EXPECT_TRUE(contains(stats.out, "vp0")) << stats.out;
  EXPECT_TRUE(ro_json({"vp0", "stats"}).contains("counters")) << ro({"--json", "vp0", "stats"}).out;

  const Output metrics = ro({"metrics"});
  EXPECT_EQ(metrics.status, 0) << metrics.err;
  EXPECT_TRUE(contains(metrics.out, "vpd_endpoints 2")) << metrics.out;
  EXPECT_TRUE(contains(metrics.out, "endpoint=\"vp1\"")) << metrics.out;

  const Output args = ro({"vp0", "qemu-args"});
  EXPECT_EQ(args.status, 0) << args.err;
  EXPECT_TRUE(contains(args.out, vpd().runtime_dir() + "/vp0.sock")) << args.out;
  const Output xml = ro({"vp0", "libvirt-xml"});
  EXPECT_EQ(xml.status, 0) << xml.err;
  EXPECT_TRUE(contains(xml.out, "<interface type='vhostuser'>")) << xml.out;

  const Output version = ro({"version"});
  EXPECT_EQ(version.status, 0) << version.err;
  EXPECT_TRUE(contains(version.out, "2 endpoints")) << version.out;
}

TEST_F(ReadOnlyControl, monitor_sees_a_change_made_on_control_sock) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create"});
  auto fd = connect_unix(ro_socket());
  ASSERT_TRUE(fd) << fd.error().message;
  std::string in;
  ASSERT_TRUE(send_line(fd->get(), "{\"version\":1,\"op\":\"monitor\"}\n"));
  const json subscribed = json::parse(read_line(fd->get(), in), nullptr, false);
  ASSERT_EQ(subscribed.value("ok", false), true) << subscribed.dump();

  ok({"vp0", "mtu=1400"});
  json event = json::object();
  for (int i = 0; i < 20 && event.value("/event/type"_json_pointer, "") != "changed"; ++i) {
    const std::string line = read_line(fd->get(), in);
    ASSERT_FALSE(line.empty()) << "no changed event came through control-ro.sock";
    event = json::parse(line, nullptr, false);
  }
  EXPECT_EQ(event["event"].value("type", ""), "changed") << event.dump();
  EXPECT_EQ(event["event"].value("endpoint", ""), "vp0") << event.dump();
  EXPECT_EQ(event["event"]["keys"], json::array({"mtu"})) << event.dump();

  // The subscribed connection still takes requests, and still only read-only ones.
  ASSERT_TRUE(send_line(fd->get(), "{\"version\":1,\"op\":\"destroy\",\"endpoint\":\"vp0\"}\n"));
  const json refused = json::parse(read_line(fd->get(), in), nullptr, false);
  EXPECT_EQ(refused.value("ok", true), false) << refused.dump();
  EXPECT_EQ(refused["error"].value("code", ""), "permission") << refused.dump();
  ASSERT_TRUE(send_line(fd->get(), "{\"version\":1,\"op\":\"show\",\"endpoint\":\"vp0\"}\n"));
  const json shown = json::parse(read_line(fd->get(), in), nullptr, false);
  EXPECT_EQ(shown["result"].value("mtu", 0), 1400) << shown.dump();

  // `vpctl monitor` itself, through control-ro.sock.
  const Output watched = ro({"monitor", "--timeout", "1"});
  EXPECT_EQ(watched.status, 0) << watched.err;
  EXPECT_TRUE(contains(watched.err, "watching vpd's events")) << watched.err;
}

TEST_F(ReadOnlyControl, create_set_and_destroy_are_refused_and_change_nothing) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "mtu=1400", "up"});
  const json before = snapshot();

  expect_refused({"vp1", "create"});
  expect_refused({"create"});
  expect_refused({"vp0", "mtu=9000"});
  expect_refused({"vp0", "set", "down"});
  expect_refused({"vp0", "destroy"});
  expect_refused({"vp0", "-mtu"});
  // A set that would create or destroy through its settings is refused as a set.
  expect_refused({"vp2", "set", "create"});

  EXPECT_EQ(snapshot(), before);
  EXPECT_TRUE(link_json("vp0").is_object());
  EXPECT_FALSE(link_json("vp1").is_object());
  EXPECT_EQ(show("vp0").value("mtu", 0), 1400);
  EXPECT_TRUE(contains(vpd().log(), "vp0: refused destroy (permission) from uid 0")) << vpd().log();

  // A raw request of an op this vpd does not know is a bad request, as on control.sock.
  const std::string answer =
      raw_exchange(ro_socket(), "{\"version\":1,\"op\":\"reload\"}\n", 5000ms);
  EXPECT_TRUE(contains(answer, "\"bad-request\"")) << answer;
  // control.sock still takes changes.
  ok({"vp0", "mtu=9000"});
  EXPECT_EQ(link_json("vp0").value("mtu", 0), 9000);
}

TEST_F(ReadOnlyControl, without_group_vpd_ro_the_socket_is_for_root_only) {
  if (::getgrnam("vpd-ro") != nullptr) GTEST_SKIP() << "this host has a group vpd-ro";
  ASSERT_EQ(vpd().start(), "");
  struct stat st {};
  ASSERT_EQ(::stat(ro_socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(occurrences(vpd().log(), "group vpd-ro does not exist"), 1u) << vpd().log();
  EXPECT_EQ(ro({"list"}).status, 0);
  // vpd made it, so it goes when vpd stops.
  EXPECT_EQ(vpd().stop(), 0);
  EXPECT_NE(::access(ro_socket().c_str(), F_OK), 0);
}

TEST_F(ReadOnlyControl, a_file_in_the_way_of_control_ro_sock_stops_the_start_with_a_sentence) {
  std::filesystem::create_directories(vpd().runtime_dir());
  write_text(ro_socket(), "not a socket\n");
  EXPECT_NE(vpd().start(), "");
  EXPECT_TRUE(contains(vpd().log(), ro_socket() + " exists and is not a socket; remove it"))
      << vpd().log();
  // Neither socket is left behind, and the file in the way is not touched.
  EXPECT_NE(::access(vpd().socket().c_str(), F_OK), 0);
  EXPECT_EQ(read_text(ro_socket()), "not a socket\n");
}

TEST_F(ReadOnlyControl, a_member_of_vpd_ro_reads_through_the_fallback_and_cannot_change) {
  GroupGuard guard{"vpd-ro"};
  if (::getgrnam("vpd-ro") == nullptr) {
    ASSERT_TRUE(sh("groupadd --system vpd-ro"));
    guard.created = true;
  }
  const group* g = ::getgrnam("vpd-ro");
  ASSERT_NE(g, nullptr);
  const gid_t gid = g->gr_gid;
  const group* full = ::getgrnam("vpd");
  ASSERT_TRUE(full == nullptr || full->gr_gid != gid);
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "mtu=1400"});
  struct stat st {};
  ASSERT_EQ(::stat(ro_socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, gid);
  EXPECT_FALSE(contains(vpd().log(), "group vpd-ro does not exist")) << vpd().log();
  const json before = snapshot();

  // User nobody with only group vpd-ro: control.sock (root, or root:vpd) turns it away.
  auto as_member = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv{
        "setpriv",        "--reuid=65534", "--regid=" + std::to_string(gid),
        "--clear-groups", VPCTL_BINARY,    "--socket",
        vpd().socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  const Output list = as_member({"--json", "list"});
  ASSERT_EQ(list.status, 0) << list.err;
  const json endpoints = json::parse(list.out, nullptr, false);
  ASSERT_TRUE(endpoints.is_array()) << list.out;
  ASSERT_EQ(endpoints.size(), 1u);
  EXPECT_EQ(endpoints[0].value("mtu", 0), 1400);
  const Output metrics = as_member({"metrics"});
  EXPECT_EQ(metrics.status, 0) << metrics.err;
  EXPECT_TRUE(contains(metrics.out, "vpd_endpoints 1")) << metrics.out;
  const Output watched = as_member({"monitor", "--timeout", "1"});
  EXPECT_EQ(watched.status, 0) << watched.err;

  // A change does not fall back: control.sock says who may, and nothing changes.
  const Output set = as_member({"vp0", "mtu=9000"});
  EXPECT_EQ(set.status, 3) << set.err;
  EXPECT_TRUE(contains(set.err, "Permission denied")) << set.err;
  EXPECT_TRUE(contains(set.err, "member of group vpd")) << set.err;
  // Pointed at control-ro.sock itself, vpd refuses it with the sentence.
  std::vector<std::string> direct{
      "setpriv",        "--reuid=65534", "--regid=" + std::to_string(gid),
      "--clear-groups", VPCTL_BINARY,    "--socket",
      ro_socket(),      "vp0",           "destroy"};
  const Output destroy = run(direct);
  EXPECT_EQ(destroy.status, 1) << destroy.err;
  EXPECT_TRUE(contains(destroy.err, kRefusal)) << destroy.err;
  EXPECT_EQ(snapshot(), before);

  // Without group vpd-ro the user reaches neither socket, and is told which groups help.
  const Output outsider = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               VPCTL_BINARY, "--socket", vpd().socket(), "list"});
  EXPECT_EQ(outsider.status, 3) << outsider.err;
  EXPECT_TRUE(contains(outsider.err, "group vpd-ro")) << outsider.err;
}

TEST_F(ReadOnlyControl, clients_of_control_ro_sock_cannot_crowd_out_control_sock) {
  ASSERT_EQ(vpd().start(), "");
  constexpr size_t kLimit = 256;    // ControlServer::kMaxClients, per socket
  constexpr size_t kMonitors = 16;  // ControlServer::kMaxSubscribers, per socket
  struct Conn {
    Fd fd;
    std::string in;
  };
  std::vector<Conn> held;
  for (size_t i = 0; i < kLimit; ++i) {
    auto fd = connect_unix(ro_socket());
    ASSERT_TRUE(fd) << fd.error().message;
    held.push_back({std::move(*fd), ""});
    Conn& c = held.back();
    // An answer proves vpd accepted this one before the next connects.
    const std::string op = i < kMonitors ? "monitor" : "hello";
    ASSERT_TRUE(send_line(c.fd.get(), "{\"version\":1,\"op\":\"" + op + "\"}\n"));
    const json answer = json::parse(read_line(c.fd.get(), c.in), nullptr, false);
    ASSERT_EQ(answer.value("ok", false), true) << "client " << i << ": " << answer.dump();
  }
  // The next one on control-ro.sock is told busy.
  const std::string busy = raw_exchange(ro_socket(), "{\"version\":1,\"op\":\"hello\"}\n");
  EXPECT_TRUE(contains(busy, "\"busy\"")) << busy;
  // A 17th monitor there is refused; control.sock still has room for its own.
  ASSERT_TRUE(send_line(held.back().fd.get(), "{\"version\":1,\"op\":\"monitor\"}\n"));
  const json refused = json::parse(read_line(held.back().fd.get(), held.back().in), nullptr, false);
  EXPECT_EQ(refused.value("/error/code"_json_pointer, ""), "busy") << refused.dump();
  auto admin = connect_unix(vpd().socket());
  ASSERT_TRUE(admin) << admin.error().message;
  std::string admin_in;
  ASSERT_TRUE(send_line(admin->get(), "{\"version\":1,\"op\":\"monitor\"}\n"));
  const json subscribed = json::parse(read_line(admin->get(), admin_in), nullptr, false);
  EXPECT_EQ(subscribed.value("ok", false), true) << subscribed.dump();

  // control.sock serves changes as before.
  ok({"vp0", "create", "mtu=1400"});
  EXPECT_EQ(show("vp0").value("mtu", 0), 1400);
  const json event = json::parse(read_line(held.front().fd.get(), held.front().in), nullptr, false);
  EXPECT_EQ(event.value("/event/type"_json_pointer, ""), "created") << event.dump();
}

/// Inode numbers of the listening Unix sockets bound to `path` (/proc/net/unix).
std::vector<unsigned long> listening_inodes(const std::string& path) {
  std::vector<unsigned long> out;
  std::istringstream all(file_text("/proc/net/unix"));
  std::string line;
  std::getline(all, line);  // header
  while (std::getline(all, line)) {
    std::istringstream fields(line);
    std::string num, refcount, protocol, flags, type, state, path_field;
    unsigned long inode = 0;
    fields >> num >> refcount >> protocol >> flags >> type >> state >> inode >> path_field;
    if (path_field == path && (std::stoul(flags, nullptr, 16) & 0x10000)) out.push_back(inode);
  }
  return out;
}

TEST_F(ReadOnlyControl, socket_activation_tells_the_two_passed_sockets_apart_by_name) {
  if (run({"systemd-socket-activate", "--version"}).status != 0) {
    GTEST_SKIP() << "systemd-socket-activate is not installed";
  }
  std::filesystem::create_directories(vpd().runtime_dir());
  const std::string full = vpd().socket();
  // Passed in the other order than vpd.socket's and with names only: the name decides.
  std::vector<std::string> words{"systemd-socket-activate",
                                 "-l",
                                 ro_socket(),
                                 "-l",
                                 full,
                                 "--fdname=control-ro:control",
                                 "-E",
                                 "NOTIFY_SOCKET=" + path("unused-notify.sock"),
                                 VPD_BINARY,
                                 "--config",
                                 vpd().config_path(),
                                 "--runtime-dir",
                                 vpd().runtime_dir(),
                                 "--state-dir",
                                 vpd().state_dir()};
  // SIGTERM at the end: vpd (the launcher execs it) stops as it does under systemd.
  ChildIo io = ChildIo::appending_to(vpd().log_path());
  io.stop_signal = SIGTERM;
  Child launcher(words, io);
  ASSERT_TRUE(launcher.started());
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while ((listening_inodes(full).empty() || listening_inodes(ro_socket()).empty()) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  const auto ro_inodes = listening_inodes(ro_socket());
  ASSERT_EQ(ro_inodes.size(), 1u) << vpd().log();

  // The first request (a read-only one, on control-ro.sock) starts vpd and is answered.
  const Output list = ro({"list"});
  EXPECT_EQ(list.status, 0) << list.err << "\nlog:\n" << vpd().log();
  EXPECT_TRUE(contains(vpd().log(), "(from systemd)")) << vpd().log();
  // vpd serves the passed sockets and made none of its own.
  EXPECT_EQ(listening_inodes(ro_socket()), ro_inodes);
  EXPECT_FALSE(contains(vpd().log(), "group vpd-ro does not exist")) << vpd().log();

  ok({"vp0", "create"});
  expect_refused({"vp0", "mtu=1400"});
  EXPECT_EQ(ro_json({"vp0"}).value("mtu", 0), 1500);
}

}  // namespace
}  // namespace vp::test
