// `vpctl monitor` against a real vpd (issue 14): the events of an endpoint's life, in order,
// as `vpctl --json monitor` prints them — create, set, a front-end that connects, starts its
// queues (carrier) and leaves, `ip link set vp0 down` behind vpd's back, a refused
// connection, a ring a hostile guest broke, destroy — plus a subscriber that never reads
// (vpd stays responsive and reports what it missed) and the text form.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "integration/vpd_fixture.hpp"
#include "support/vhost_frontend.hpp"
#include "sys/unix_socket.hpp"
#include "virtio/split_queue.hpp"

extern char** environ;

namespace vp::test {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kRx = 0;
constexpr uint32_t kTx = 1;

// A running `vpctl --socket S [--json] monitor ARGS...`, its stdout and stderr on pipes.
class MonitorProcess {
 public:
  MonitorProcess(const std::string& socket, bool json, const std::vector<std::string>& args = {}) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return;
    std::vector<std::string> words{VPCTL_BINARY, "--socket", socket};
    if (json) words.emplace_back("--json");
    words.emplace_back("monitor");
    words.insert(words.end(), args.begin(), args.end());
    ChildIo io;
    io.stdout_fd = out[1];
    io.stderr_fd = err[1];
    process_ = Child(words, io);
    ::close(out[1]);
    ::close(err[1]);
    out_.reset(out[0]);
    err_.reset(err[0]);
  }

  /// Waits until vpctl says on stderr that the subscription runs.
  bool wait_subscribed(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!contains(err_text_, "watching")) {
      if (!read_some(err_, err_text_, deadline)) return false;
    }
    return true;
  }

  /// The next stdout line, or nullopt after `timeout` or at EOF.
  std::optional<std::string> next_line(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const size_t nl = out_text_.find('\n'); nl != std::string::npos) {
        std::string line = out_text_.substr(0, nl);
        out_text_.erase(0, nl + 1);
        return line;
      }
      if (!read_some(out_, out_text_, deadline)) return std::nullopt;
    }
  }

  /// Events (JSON lines) until one of `endpoint` has type `type`; every event read is kept in
  /// events(). False after `timeout`.
  bool wait_for(const std::string& endpoint, const std::string& type,
                std::chrono::milliseconds timeout = 10s) {
    for (const auto& e : events_) {
      if (e.value("endpoint", "") == endpoint && e.value("type", "") == type) return true;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      auto line = next_line(left);
      if (!line) return false;
      json e = json::parse(*line, nullptr, false);
      events_.push_back(e);
      if (e.value("endpoint", "") == endpoint && e.value("type", "") == type) return true;
    }
  }

  /// The types of `endpoint`'s events read so far, in order.
  std::vector<std::string> types_of(const std::string& endpoint) const {
    std::vector<std::string> out;
    for (const auto& e : events_) {
      if (e.value("endpoint", "") == endpoint) out.push_back(e.value("type", ""));
    }
    return out;
  }
  /// The first event of `endpoint` with `type` (null if none was read).
  json first(const std::string& endpoint, const std::string& type) const {
    for (const auto& e : events_) {
      if (e.value("endpoint", "") == endpoint && e.value("type", "") == type) return e;
    }
    return nullptr;
  }
  const std::vector<json>& events() const { return events_; }
  const std::string& err_text() const { return err_text_; }

  /// Waits for the process to exit; its status (128+SIGKILL after `timeout`: then killed).
  int wait_exit(std::chrono::milliseconds timeout = 10s) { return process_.wait_exit(timeout); }

 private:
  static bool read_some(const Fd& fd, std::string& into,
                        std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) return false;
    into.append(buf, static_cast<size_t>(n));
    return true;
  }

  Child process_;
  Fd out_;
  Fd err_;
  std::string out_text_;
  std::string err_text_;
  std::vector<json> events_;
};

// True when `want` appears in `have` in this order (other types may come between).
::testing::AssertionResult in_order(const std::vector<std::string>& have,
                                    const std::vector<std::string>& want) {
  size_t at = 0;
  for (const auto& t : have) {
    if (at < want.size() && t == want[at]) ++at;
  }
  if (at == want.size()) return ::testing::AssertionSuccess();
  std::string text;
  for (const auto& t : have) text += t + " ";
  return ::testing::AssertionFailure()
         << "expected ... " << want[at] << " ... in order; got: " << text;
}

const std::regex kRfc3339Utc(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");

class Monitor : public VpdFixture {
 protected:
  void SetUp() override {
    VpdFixture::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_EQ(vpd().start(), "");
  }

  // A front-end that negotiates as QEMU does (split rings), sends its memory table and starts
  // both rings of `endpoint`.
  std::unique_ptr<VhostFrontend> attach(const std::string& endpoint) {
    auto fe = attach_like_qemu(vpd().runtime_dir() + "/" + endpoint + ".sock");
    if (!fe) {
      ADD_FAILURE() << endpoint << ": " << fe.error().message << "\n" << vpd().log();
      return nullptr;
    }
    return std::move(*fe);
  }
};

TEST_F(Monitor, endpoint_life_arrives_as_json_events_in_order) {
  MonitorProcess mon(vpd().socket(), /*json=*/true);
  ASSERT_TRUE(mon.wait_subscribed()) << mon.err_text() << vpd().log();

  ok({"vp0", "create", "address=10.77.0.1/24", "up"});
  ok({"vp0", "mtu=1400"});
  {
    auto fe = attach("vp0");
    ASSERT_TRUE(fe);
    ASSERT_TRUE(mon.wait_for("vp0", "carrier-up")) << vpd().log();
    ASSERT_TRUE(sh("ip link set vp0 down"));
    ASSERT_TRUE(mon.wait_for("vp0", "put-back")) << vpd().log();
  }  // the front-end closes its socket
  ASSERT_TRUE(mon.wait_for("vp0", "frontend-disconnected")) << vpd().log();
  ok({"vp0", "destroy"});
  ASSERT_TRUE(mon.wait_for("vp0", "destroyed")) << vpd().log();

  EXPECT_TRUE(in_order(mon.types_of("vp0"),
                       {"created", "changed", "frontend-connected", "queues-started", "carrier-up",
                        "put-back", "frontend-disconnected", "destroyed"}));
  for (const auto& e : mon.events()) {
    EXPECT_TRUE(std::regex_match(e.value("time", ""), kRfc3339Utc)) << e.dump();
    EXPECT_FALSE(e.value("message", "").empty()) << e.dump();
  }
  const json changed = mon.first("vp0", "changed");
  EXPECT_EQ(changed["keys"], json({"mtu"})) << changed.dump();
  const json connected = mon.first("vp0", "frontend-connected");
  EXPECT_EQ(connected["frontend"].value("pid", 0), ::getpid()) << connected.dump();
  EXPECT_EQ(connected["frontend"].value("uid", -1), 0) << connected.dump();
  EXPECT_EQ(connected.value("socket", ""), vpd().runtime_dir() + "/vp0.sock");
  const json started = mon.first("vp0", "queues-started");
  EXPECT_EQ(started.value("queues", 0), 2) << started.dump();
  EXPECT_GE(started.value("queues_running", 0), 1) << started.dump();
  EXPECT_EQ(mon.first("vp0", "put-back")["found"], json({"down"}));
  EXPECT_TRUE(contains(mon.first("vp0", "frontend-disconnected").value("reason", ""), "closed"));
  // The link watch put vp0 back up.
  EXPECT_TRUE(has_flag(link_json("vp0"), "UP") || link_json("vp0").is_null());
}

TEST_F(Monitor, endpoint_destroyed_with_a_frontend_attached_ends_its_session_events_first) {
  ok({"vp0", "create", "address=10.77.0.1/24", "up"});
  MonitorProcess mon(vpd().socket(), /*json=*/true, {"vp0"});
  ASSERT_TRUE(mon.wait_subscribed()) << mon.err_text() << vpd().log();
  auto fe = attach("vp0");
  ASSERT_TRUE(fe);
  ASSERT_TRUE(mon.wait_for("vp0", "carrier-up")) << vpd().log();
  ok({"vp0", "destroy"});  // the front-end is still connected
  ASSERT_TRUE(mon.wait_for("vp0", "destroyed")) << vpd().log();
  const std::vector<std::string> types = mon.types_of("vp0");
  const auto at = [&](const std::string& type) {
    return std::find(types.begin(), types.end(), type) - types.begin();
  };
  const auto destroyed = at("destroyed");
  for (const char* type : {"frontend-disconnected", "queues-stopped", "carrier-down"}) {
    EXPECT_LT(at(type), destroyed)
        << type << " missing before destroyed: " << ::testing::PrintToString(types);
  }
  EXPECT_EQ(mon.first("vp0", "frontend-disconnected").value("reason", ""), "endpoint detached");
  const json stopped = mon.first("vp0", "queues-stopped");
  EXPECT_EQ(stopped.value("queues_running", -1), 0) << stopped.dump();
}

// transport=tap: vpd has no session, so the kernel's carrier (a VMM has the TAP open) is what
// the events report.
TEST_F(Monitor, a_vmm_opening_and_closing_a_tap_endpoint_is_carrier_up_and_down) {
  ok({"vp0", "create", "transport=tap", "up"});
  MonitorProcess mon(vpd().socket(), /*json=*/true, {"vp0"});
  ASSERT_TRUE(mon.wait_subscribed()) << mon.err_text();
  // What QEMU's tap_open() does: /dev/net/tun, TUNSETIFF by name.
  Fd vmm(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  ASSERT_TRUE(vmm);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "vp0", IFNAMSIZ - 1);
  ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  ASSERT_EQ(::ioctl(vmm.get(), TUNSETIFF, &ifr), 0) << std::strerror(errno);
  ASSERT_TRUE(mon.wait_for("vp0", "carrier-up")) << vpd().log();
  vmm.reset();
  ASSERT_TRUE(mon.wait_for("vp0", "carrier-down")) << vpd().log();
  EXPECT_EQ(mon.first("vp0", "carrier-up").value("message", ""),
            "vp0 has carrier: a VMM opened the TAP");
  EXPECT_TRUE(in_order(mon.types_of("vp0"), {"carrier-up", "carrier-down"}));
}

TEST_F(Monitor, connection_refused_by_allow_is_an_event_and_the_endpoint_stays_listening) {
  ok({"vp0", "create", "allow=12345", "up"});
  MonitorProcess mon(vpd().socket(), /*json=*/true, {"vp0"});
  ASSERT_TRUE(mon.wait_subscribed()) << mon.err_text();
  auto conn = connect_unix(vpd().runtime_dir() + "/vp0.sock");
  ASSERT_TRUE(conn);
  ASSERT_TRUE(mon.wait_for("vp0", "frontend-refused")) << vpd().log();
  const json refused = mon.first("vp0", "frontend-refused");
  EXPECT_EQ(refused.value("reason", ""), "allow") << refused.dump();
  EXPECT_EQ(refused["peer"].value("uid", -1), 0) << refused.dump();
  EXPECT_EQ(refused["peer"].value("pid", 0), ::getpid()) << refused.dump();
  EXPECT_TRUE(contains(refused.value("message", ""), "not in allow=")) << refused.dump();
  EXPECT_EQ(show("vp0")["status"].value("guest", ""), "listening");
  EXPECT_EQ(mon.types_of("vp0"), std::vector<std::string>{"frontend-refused"});
}

TEST_F(Monitor, ring_a_guest_broke_is_an_event) {
  ok({"vp0", "create", "up"});
  MonitorProcess mon(vpd().socket(), /*json=*/true);
  ASSERT_TRUE(mon.wait_subscribed()) << mon.err_text();
  auto fe = attach("vp0");
  ASSERT_TRUE(fe);
  ASSERT_TRUE(mon.wait_for("vp0", "queues-started")) << vpd().log();
  // GUEST: an avail index 1000 entries ahead on a 256-entry ring.
  const auto tx = fe->layout(kTx);
  ASSERT_TRUE(tx);
  const uint64_t gpa = tx->driver + 2;  // struct virtq_avail { le16 flags; le16 idx; ... }
  auto* idx = reinterpret_cast<uint16_t*>(fe->region_uva(0) + (gpa - fe->region(0).gpa));
  __atomic_store_n(idx, static_cast<uint16_t>(1000), __ATOMIC_RELEASE);
  ASSERT_TRUE(fe->kick(kTx));
  ASSERT_TRUE(mon.wait_for("vp0", "ring-broken")) << vpd().log();
  const json broken = mon.first("vp0", "ring-broken");
  EXPECT_EQ(broken.value("queue", ""), "tx0") << broken.dump();
  EXPECT_FALSE(broken.value("reason", "").empty()) << broken.dump();
}

TEST_F(Monitor, subscriber_that_never_reads_stalls_nothing_and_learns_what_it_lost) {
  ok({"vp0", "create", "allow=12345", "up"});
  // A subscriber speaking the protocol itself, with a small receive buffer, that reads only
  // its ok and then nothing while thousands of events happen.
  auto sub = connect_unix(vpd().socket());
  ASSERT_TRUE(sub);
  const int small = 4096;
  ::setsockopt(sub->get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  const std::string request = "{\"version\":1,\"op\":\"monitor\"}\n";
  ASSERT_EQ(::send(sub->get(), request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string in;
  char buf[65536];
  while (in.find('\n') == std::string::npos) {
    pollfd p{sub->get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no answer to monitor";
    const ssize_t n = ::recv(sub->get(), buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    in.append(buf, static_cast<size_t>(n));
  }
  EXPECT_TRUE(contains(in.substr(0, in.find('\n')), "\"ok\":true")) << in;
  in.erase(0, in.find('\n') + 1);

  // Each refused connection is one event of about 300 bytes: 8000 of them are well over the
  // subscriber's 1 MiB backlog plus what the socket buffers hold.
  constexpr int kRefusals = 8000;
  for (int i = 0; i < kRefusals; ++i) {
    auto c = connect_unix(vpd().runtime_dir() + "/vp0.sock");
    ASSERT_TRUE(c) << i << ": " << c.error().message;
  }
  // vpd still answers everyone else, at once.
  Output list = ok({"list"});
  EXPECT_TRUE(contains(list.out, "vp0")) << list.out;
  ok({"vp1", "create", "up"});
  EXPECT_EQ(show("vp0")["status"].value("refused_peers", 0), kRefusals);

  // Now it reads: every refusal (and vp1's created) arrived or is counted in a "lost" event,
  // which comes once it has read everything it was sent.
  uint64_t delivered = 0, lost = 0;
  bool saw_vp1 = false, saw_vp2 = false;
  auto take = [&] {
    for (size_t nl; (nl = in.find('\n')) != std::string::npos;) {
      json line = json::parse(in.substr(0, nl), nullptr, false);
      in.erase(0, nl + 1);
      const json& e = line["event"];
      const std::string type = e.value("type", "");
      const std::string endpoint = e.value("endpoint", "");
      if (type == "frontend-refused") ++delivered;
      if (type == "lost") lost += e.value("count", 0u);
      if (type == "created") (endpoint == "vp1" ? saw_vp1 : saw_vp2) = true;
    }
  };
  auto read_until = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      pollfd p{sub->get(), POLLIN, 0};
      if (::poll(&p, 1, 1000) != 1) continue;
      const ssize_t n = ::recv(sub->get(), buf, sizeof buf, 0);
      if (n <= 0) return false;  // vpd closed the subscriber
      in.append(buf, static_cast<size_t>(n));
      take();
    }
    return done();
  };
  take();
  ASSERT_TRUE(read_until([&] { return lost > 0; })) << "no lost event; delivered " << delivered;
  EXPECT_LT(delivered, static_cast<uint64_t>(kRefusals));
  EXPECT_EQ(delivered + lost + (saw_vp1 ? 1 : 0), static_cast<uint64_t>(kRefusals) + 1)
      << "delivered " << delivered << ", lost " << lost;
  // Events after the loss reach it again.
  ok({"vp2", "create", "up"});
  EXPECT_TRUE(read_until([&] { return saw_vp2; })) << vpd().log();
}

TEST_F(Monitor, text_form_is_one_readable_line_per_event_and_count_ends_it) {
  MonitorProcess mon(vpd().socket(), /*json=*/false, {"--count", "2"});
  ASSERT_TRUE(mon.wait_subscribed()) << mon.err_text();
  ok({"vp0", "create", "up"});
  ok({"vp0", "destroy"});
  const auto first = mon.next_line();
  const auto second = mon.next_line();
  ASSERT_TRUE(first && second) << mon.err_text();
  const std::regex line(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z vp0 (created|destroyed): .+)");
  EXPECT_TRUE(std::regex_match(*first, line)) << *first;
  EXPECT_TRUE(contains(*first, " vp0 created: created with ")) << *first;
  EXPECT_TRUE(contains(*second, " vp0 destroyed: destroyed (by uid 0 pid ")) << *second;
  EXPECT_EQ(mon.wait_exit(), 0);
  EXPECT_FALSE(mon.next_line(100ms)) << "nothing after the second event";
}

TEST_F(Monitor, timeout_ends_a_quiet_monitor_and_bad_options_are_usage_errors) {
  MonitorProcess quiet(vpd().socket(), /*json=*/true, {"--timeout", "1"});
  ASSERT_TRUE(quiet.wait_subscribed()) << quiet.err_text();
  EXPECT_EQ(quiet.wait_exit(10s), 0);
  Output bad = vpd().ctl({"monitor", "--count", "zero"});
  EXPECT_EQ(bad.status, 2);
  EXPECT_TRUE(contains(bad.err, "--count takes a whole number of events from 1")) << bad.err;
  Output word = vpd().ctl({"monitor", "create"});
  EXPECT_EQ(word.status, 2);
  EXPECT_TRUE(contains(word.err, "'create' is a vpctl word")) << word.err;
  Output two = vpd().ctl({"monitor", "vp0", "vp1"});
  EXPECT_EQ(two.status, 2);
  EXPECT_TRUE(contains(two.err, "one endpoint or all")) << two.err;
}

TEST_F(Monitor, seventeenth_subscriber_is_refused_busy_and_the_others_keep_theirs) {
  std::vector<Fd> subscribers;
  for (int i = 0; i < 16; ++i) {
    auto c = connect_unix(vpd().socket());
    ASSERT_TRUE(c);
    const std::string request = "{\"version\":1,\"op\":\"monitor\"}\n";
    ASSERT_EQ(::send(c->get(), request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    subscribers.push_back(std::move(*c));
  }
  // Each has its ok before the next one asks, so that all 16 count.
  for (auto& c : subscribers) {
    pollfd p{c.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    char buf[512];
    const ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    EXPECT_TRUE(contains(std::string(buf, static_cast<size_t>(n)), "\"ok\":true"));
  }
  Output busy = vpd().ctl({"monitor"});
  EXPECT_EQ(busy.status, 1);
  EXPECT_TRUE(contains(busy.err, "(busy)")) << busy.err;
  // The 16 still get events.
  ok({"vp0", "create", "up"});
  for (auto& c : subscribers) {
    pollfd p{c.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    char buf[4096];
    const ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    EXPECT_TRUE(contains(std::string(buf, static_cast<size_t>(n)), "\"type\":\"created\""));
  }
  // One goes: its place is free again.
  subscribers.pop_back();
  MonitorProcess again(vpd().socket(), /*json=*/true, {"--timeout", "1"});
  EXPECT_TRUE(again.wait_subscribed()) << again.err_text();
}

TEST_F(Monitor, quiet_subscriber_outlives_the_idle_sweep_that_closes_a_quiet_client) {
  MonitorProcess mon(vpd().socket(), /*json=*/true);
  ASSERT_TRUE(mon.wait_subscribed()) << mon.err_text();
  // A client that connects and says nothing: the sweep (every 5 s, after 30 s idle) closes it.
  auto idle = connect_unix(vpd().socket());
  ASSERT_TRUE(idle);
  bool idle_closed = false;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!idle_closed && std::chrono::steady_clock::now() < deadline) {
    pollfd p{idle->get(), POLLIN, 0};
    if (::poll(&p, 1, 1000) == 1) {
      char c;
      idle_closed = ::recv(idle->get(), &c, 1, MSG_DONTWAIT) == 0;
    }
  }
  ASSERT_TRUE(idle_closed) << "the idle sweep never ran";
  // The subscriber, just as quiet for as long, still gets the next event.
  ok({"vp0", "create", "up"});
  EXPECT_TRUE(mon.wait_for("vp0", "created")) << mon.err_text() << vpd().log();
}

}  // namespace
}  // namespace vp::test
