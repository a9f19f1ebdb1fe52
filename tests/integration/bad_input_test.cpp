// Hostile and mistaken control requests against a real vpd, through vpctl and as raw JSON
// on the control socket. Every refusal must name its stable error code, leave the
// endpoints, the kernel and state.json exactly as they were, and keep vpd serving; no
// client, however it behaves, may hold up another. Each test runs in a network namespace
// of its own, so it needs root.

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <latch>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/journal.hpp"
#include "control/state_file.hpp"
#include "support/harness.hpp"
#include "sys/fd.hpp"
#include "sys/unix_socket.hpp"

namespace vp {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Generous bounds for waiting only; no test asserts how long anything took.
constexpr std::chrono::milliseconds kWait = 10s;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// `text`, shortened for a failure message.
std::string clip(const std::string& text) {
  return text.size() <= 400 ? text : text.substr(0, 400) + "...";
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

/// `ip -j -d link show` output without the fields that tick on their own (bridge timers).
json without_timers(json j) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end();) {
      if (it.key().find("timer") != std::string::npos) {
        it = j.erase(it);
      } else {
        *it = without_timers(*it);
        ++it;
      }
    }
  } else if (j.is_array()) {
    for (auto& e : j) e = without_timers(e);
  }
  return j;
}

/// Names of every interface in the current namespace, sorted.
std::vector<std::string> link_names() {
  std::vector<std::string> names;
  json links = test::ip_json({"link", "show"});
  if (!links.is_array()) return names;
  for (const auto& l : links) names.push_back(l.value("ifname", ""));
  std::sort(names.begin(), names.end());
  return names;
}

/// Names of the endpoints in a `vpctl --json list` answer.
std::vector<std::string> endpoint_names(const json& list) {
  std::vector<std::string> names;
  if (!list.is_array()) return names;
  for (const auto& e : list) names.push_back(e.value("name", ""));
  std::sort(names.begin(), names.end());
  return names;
}

/// Checks that `line` is exactly {"version":1,"ok":false,"error":{"code":CODE,"message":...}}
/// with a non-empty message containing `part`.
::testing::AssertionResult is_error_line(const std::string& line, const std::string& code,
                                         const std::string& part = "") {
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return ::testing::AssertionFailure() << "not a JSON object: " << line;
  }
  const json want_keys = {"error", "ok", "version"};
  json keys = json::array();
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  if (keys != want_keys) return ::testing::AssertionFailure() << "unexpected fields: " << line;
  if (j["version"] != 1 || j["ok"] != false) {
    return ::testing::AssertionFailure() << "not a version-1 refusal: " << line;
  }
  const json& e = j["error"];
  if (!e.is_object() || e.size() != 2 || !e.contains("code") || !e.contains("message") ||
      !e["code"].is_string() || !e["message"].is_string()) {
    return ::testing::AssertionFailure() << "error is not {code, message}: " << line;
  }
  if (e["code"] != code) {
    return ::testing::AssertionFailure()
           << "code " << e["code"] << ", want " << code << ": " << line;
  }
  const std::string message = e["message"];
  if (message.empty()) return ::testing::AssertionFailure() << "empty message: " << line;
  if (message.find(part) == std::string::npos) {
    return ::testing::AssertionFailure() << "message lacks '" << part << "': " << line;
  }
  return ::testing::AssertionSuccess();
}

/// The parsed line when it is a version-1 success ({"version":1,"ok":true,"result":...}).
/// The parsed line when it is a version-1 success ({"version":1,"ok":true,"result":...});
/// an empty object otherwise.
json ok_result(const std::optional<std::string>& line) {
  if (!line) return json::object();
  json j = json::parse(*line, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("version", 0) != 1 ||
      j.value("ok", false) != true || !j.contains("result") || j["result"].is_null()) {
    return json::object();
  }
  return j["result"];
}

std::string request(std::string_view op, std::string_view endpoint = "",
                    const std::vector<std::string>& args = {}) {
  json j{{"version", 1}, {"op", op}};
  if (!endpoint.empty()) j["endpoint"] = endpoint;
  if (!args.empty()) j["args"] = args;
  return j.dump() + "\n";
}

/// One raw connection to the control socket, for what vpctl never does.
class Conn {
 public:
  explicit Conn(const std::string& path) {
    auto fd = connect_unix(path);
    if (fd) {
      fd_ = std::move(*fd);
    } else {
      error_ = fd.error().message;
    }
  }

  bool connected() const { return fd_.valid(); }
  const std::string& error() const { return error_; }

  enum class Sent { kAll, kClosed, kStuck };
  /// Sends all of `bytes`; kClosed when vpd closed the connection, kStuck when vpd stopped
  /// reading for `timeout`.
  Sent send(std::string_view bytes, std::chrono::milliseconds timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n =
          ::send(fd_.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return Sent::kStuck;
        pollfd p{fd_.get(), POLLOUT, 0};
        ::poll(&p, 1, static_cast<int>(left.count()));
        continue;
      }
      return Sent::kClosed;
    }
    return Sent::kAll;
  }

  void shut_write() { ::shutdown(fd_.get(), SHUT_WR); }

  /// The next line from vpd, without its newline; nullopt on end of stream or timeout.
  std::optional<std::string> line(std::chrono::milliseconds timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string l = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return l;
      }
      if (!fill(deadline)) return std::nullopt;
    }
  }

  /// Whether vpd closes the connection (end of stream or reset) within `timeout`; what
  /// arrives on the way is kept for line().
  bool closed_by_vpd(std::chrono::milliseconds timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (fill(deadline)) {
    }
    return eof_;
  }

  /// Whether anything (data or end of stream) is ready to read right now.
  bool readable_now() {
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  /// Bytes received but not yet returned by line().
  const std::string& pending() const { return buffer_; }

 private:
  bool fill(std::chrono::steady_clock::time_point deadline) {
    if (eof_) return false;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_.get(), POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      char buf[65536];
      const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        buffer_.append(buf, static_cast<size_t>(n));
        return true;
      }
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      eof_ = true;  // 0 (orderly close) or ECONNRESET (vpd closed with our bytes unread)
      return false;
    }
  }

  Fd fd_;
  std::string error_;
  std::string buffer_;
  bool eof_ = false;
};

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(test::enter_private_netns(), "");
    ASSERT_TRUE(test::sh("ip link add br0 type bridge"));
    ASSERT_TRUE(test::sh("ip link add ve0 type veth peer name ve1"));
    vpd_ = std::make_unique<test::Vpd>(dir_.path());
    // A short request-line bound (the default is 30 s), so the trickle test waits 3 s, not 30.
    ASSERT_EQ(vpd_->start({"--request-timeout", "3"}), "");
    test::Run r = vpd_->ctl({"vp0", "create", "mac=02:00:00:00:00:01", "peerfeats=0x19c3",
                             "address=10.1.0.1/24", "bridge=br0", "mtu=1400", "up"});
    ASSERT_EQ(r.status, 0) << r.err;
    r = vpd_->ctl({"vp1", "create", "transport=stream", "mac=02:00:00:00:00:02"});
    ASSERT_EQ(r.status, 0) << r.err;
    baseline_ = snapshot();
    ASSERT_EQ(endpoint_names(baseline_.list), (std::vector<std::string>{"vp0", "vp1"}));
    ASSERT_FALSE(baseline_.state.empty());
    ASSERT_TRUE(baseline_.vp0.is_object() && baseline_.vp1.is_object() &&
                baseline_.ve0.is_object());
    ASSERT_EQ(baseline_.vp0_addresses, std::vector<std::string>{"10.1.0.1/24"});
  }

  void TearDown() override {
    if (!vpd_) return;
    const std::string log = vpd_->log();
    EXPECT_TRUE(vpd_->alive()) << "vpd died; its log:\n" << log;
    EXPECT_EQ(vpd_->stop(), 0) << log;
    for (const char* crash : {"terminate called", "Segmentation fault", "Aborted",
                              "AddressSanitizer", "runtime error:", "Assertion"}) {
      EXPECT_EQ(log.find(crash), std::string::npos) << "vpd's log shows a crash:\n" << log;
    }
  }

  std::string state_path() const { return vpd_->state_dir() + "/state.json"; }

  struct Snapshot {
    std::string state;  // state.json, byte for byte
    json list;          // vpctl --json list
    std::vector<std::string> links;
    json vp0, vp1, ve0, br0;
    std::vector<std::string> vp0_addresses;
  };

  Snapshot snapshot() const {
    Snapshot s;
    // The saved state as vpd would load it; while a test keeps the journal aside
    // (JOURNAL.aside), with that journal.
    const std::string journal = control::journal_path(state_path());
    auto saved = control::decode_state(read_file(state_path()));
    s.state = read_file(state_path());
    if (saved &&
        control::replay_journal(
            *saved, read_file(::access((journal + ".aside").c_str(), F_OK) == 0 ? journal + ".aside"
                                                                                : journal))) {
      s.state = control::encode_state(*saved);
    }
    s.list = vpd_->ctl_json({"list"});
    s.links = link_names();
    s.vp0 = without_timers(test::link_json("vp0"));
    s.vp1 = without_timers(test::link_json("vp1"));
    s.ve0 = without_timers(test::link_json("ve0"));
    const json br0 = test::link_json("br0");
    s.br0 = br0.is_object() ? br0["ifindex"] : json();
    s.vp0_addresses = test::addresses_of("vp0");
    return s;
  }

  /// vpd still serves, and nothing it owns or saved differs from the baseline.
  void expect_unchanged() {
    ASSERT_TRUE(vpd_->alive()) << vpd_->log();
    test::Run list = vpd_->ctl({"list"});
    EXPECT_EQ(list.status, 0) << list.err;
    const Snapshot now = snapshot();
    EXPECT_EQ(now.state, baseline_.state) << "state.json changed";
    EXPECT_EQ(now.list, baseline_.list) << "vpctl list changed";
    EXPECT_EQ(now.links, baseline_.links) << "the set of interfaces changed";
    EXPECT_EQ(now.vp0, baseline_.vp0) << "vp0 changed in the kernel";
    EXPECT_EQ(now.vp1, baseline_.vp1) << "vp1 changed in the kernel";
    EXPECT_EQ(now.ve0, baseline_.ve0) << "ve0 changed in the kernel";
    EXPECT_EQ(now.br0, baseline_.br0);
    EXPECT_EQ(now.vp0_addresses, baseline_.vp0_addresses);
  }

  /// `vpctl ARGS...` is refused with `code` (exit 1, "(code)" on stderr, the same code in
  /// --json), and nothing changed.
  void refuse(const std::vector<std::string>& args, const std::string& code,
              const std::string& part = "") {
    SCOPED_TRACE(clip("vpctl " + joined(args)));
    test::Run r = vpd_->ctl(args);
    EXPECT_EQ(r.status, 1) << clip(r.err);
    EXPECT_NE(r.err.find("(" + code + ")"), std::string::npos) << clip(r.err);
    EXPECT_NE(r.err.find(part), std::string::npos) << clip(r.err);
    EXPECT_EQ(r.out, "");
    json j = vpd_->ctl_json(args);
    const bool coded = j.is_object() && j.contains("error") && j["error"].is_object();
    EXPECT_EQ(coded ? j["error"].value("code", "") : "", code) << clip(j.dump());
    expect_unchanged();
  }

  /// The raw request line `line` (a newline is added) is refused with `code`, as the one
  /// line of the answer, and nothing changed.
  void refuse_raw(const std::string& line, const std::string& code, const std::string& part = "") {
    SCOPED_TRACE("request " + line.substr(0, 200));
    const std::string reply = test::raw_exchange(vpd_->socket(), line + "\n");
    ASSERT_FALSE(reply.empty()) << "no answer";
    EXPECT_EQ(std::count(reply.begin(), reply.end(), '\n'), 1) << reply;
    EXPECT_EQ(reply.back(), '\n');
    EXPECT_TRUE(is_error_line(reply.substr(0, reply.find('\n')), code, part));
    expect_unchanged();
  }

  test::TempDir dir_;
  std::unique_ptr<test::Vpd> vpd_;
  Snapshot baseline_;
};

// ---- one stable error code at a time ----------------------------------------------------

TEST_F(BadInput, invalid_mac) {
  refuse({"vp0", "mac=01:00:5e:00:00:01"}, "invalid-mac", "multicast");
  refuse({"vp0", "mac=000000000000"}, "invalid-mac", "all-zero");
  refuse({"vp0", "mac=a0b0c0d0e0"}, "invalid-mac", "12 hex digits");
  refuse({"vp0", "mac=g0b0c0d0e0f0"}, "invalid-mac", "hex digit");
  refuse({"vp0", "mac=a0:b0-c0:d0:e0:f0"}, "invalid-mac");
  refuse({"vp7", "create", "mac=ff:ff:ff:ff:ff:ff"}, "invalid-mac");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":["mac=03:00:00:00:00:01"]})",
             "invalid-mac", "multicast");
}

TEST_F(BadInput, duplicate_mac) {
  refuse({"vp1", "mac=02:00:00:00:00:01"}, "duplicate-mac", "vp0");
  refuse({"vp7", "create", "mac=02-00-00-00-00-01"}, "duplicate-mac", "vp0");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"vp7","args":["mac=020000000002"]})",
             "duplicate-mac", "vp1");
}

TEST_F(BadInput, duplicate_path) {
  const std::string vp0_socket = vpd_->runtime_dir() + "/vp0.sock";
  refuse({"vp1", "bind=" + vp0_socket}, "duplicate-path", "vp0");
  refuse({"vp7", "create", "peer=" + vp0_socket}, "duplicate-path", "vp0");
}

TEST_F(BadInput, no_such_endpoint) {
  refuse({"vp9", "up"}, "no-such-endpoint", "vp9");
  refuse({"vp9"}, "no-such-endpoint", "vp9");
  refuse({"vp9", "destroy"}, "no-such-endpoint", "vp9");
  refuse({"ve0", "mtu=1400"}, "no-such-endpoint", "ve0");
  refuse_raw(R"({"version":1,"op":"show","endpoint":"vp9"})", "no-such-endpoint");
  refuse_raw(R"({"version":1,"op":"destroy","endpoint":"vp9"})", "no-such-endpoint");
}

TEST_F(BadInput, endpoint_exists) {
  refuse({"vp0", "create"}, "endpoint-exists", "vp0");
  refuse({"vp1", "create", "mtu=9000"}, "endpoint-exists", "vp1");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"vp0"})", "endpoint-exists");
}

TEST_F(BadInput, name_too_long) {
  // vpctl checks a NAME itself (usage error, exit 2) before asking vpd.
  test::Run r = vpd_->ctl({"abcdefghijklmnop", "create"});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("15"), std::string::npos) << r.err;
  expect_unchanged();
  refuse({"create", "name=abcdefghijklmno"}, "name-too-long", "14");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"abcdefghijklmnop"})", "name-too-long", "15");
  refuse_raw(R"({"version":1,"op":"show","endpoint":"abcdefghijklmnop"})", "name-too-long");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"abcdefghijklmnop","args":["up"]})",
             "name-too-long");
}

TEST_F(BadInput, invalid_name) {
  refuse({"create", "name=a/b"}, "invalid-name");
  refuse({"create", "name=.."}, "invalid-name");
  refuse({"create", "name="}, "invalid-name");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"a/b"})", "invalid-name");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"a b"})", "invalid-name");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"a:0"})", "invalid-name");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"a\u0000b"})", "invalid-name");
  refuse_raw(R"({"version":1,"op":"create","endpoint":".."})", "invalid-name");
  // vpctl's own words cannot name an endpoint.
  refuse_raw(R"({"version":1,"op":"create","endpoint":"up"})", "invalid-name");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"list"})", "invalid-name");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"tso4"})", "invalid-name");
}

TEST_F(BadInput, no_such_bridge) {
  refuse({"vp0", "bridge=br9"}, "no-such-bridge", "br9");
  refuse({"vp7", "create", "bridge=br9"}, "no-such-bridge", "br9");
  // An interface that exists but is not a bridge.
  refuse({"vp1", "bridge=ve0"}, "no-such-bridge", "not a bridge");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp1","args":["bridge=lo"]})", "no-such-bridge",
             "not a bridge");
}

TEST_F(BadInput, name_taken) {
  // Interfaces vpd does not own are never taken over: a veth, a bridge, lo, a foreign TAP.
  ASSERT_TRUE(test::sh("ip tuntap add dev vp5 mode tap"));
  baseline_ = snapshot();
  const json vp5 = test::link_json("vp5");
  refuse({"ve0", "create"}, "name-taken", "ve0");
  refuse({"br0", "create", "mtu=1400"}, "name-taken", "br0");
  refuse({"lo", "create"}, "name-taken");
  refuse({"vp5", "create"}, "name-taken", "vp5");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"ve1"})", "name-taken", "ve1");
  EXPECT_EQ(test::link_json("vp5"), vp5);
}

TEST_F(BadInput, bad_peerfeats) {
  // Unknown bits: the message names them.
  refuse({"vp0", "peerfeats=0x8000"}, "bad-peerfeats", "bit 15 ");
  refuse({"vp0", "peerfeats=0x30"}, "bad-peerfeats", "bits 4, 5 ");
  refuse({"vp0", "peerfeats=0x8000000000000000"}, "bad-peerfeats", "bit 63 ");
  refuse({"vp0", "peerfeats=banana"}, "bad-peerfeats", "not a number");
  refuse({"vp0", "peerfeats=0x"}, "bad-peerfeats");
  refuse({"vp0", "peerfeats=0x10000000000000000"}, "bad-peerfeats");
  // A stream endpoint has no virtio-net header: no offload can be negotiated.
  refuse({"vp1", "peerfeats=0x1"}, "bad-peerfeats", "stream");
  refuse({"vp7", "create", "transport=stream", "peerfeats=0x3"}, "bad-peerfeats", "stream");
  // Switching vp0 (peerfeats=0x19c3) to stream keeps its mask, which stream cannot carry.
  refuse({"vp0", "transport=stream"}, "bad-peerfeats", "stream");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":["peerfeats=0x4"]})",
             "bad-peerfeats", "bit 2 ");
}

TEST_F(BadInput, bad_value) {
  refuse({"vp0", "mtu=10"}, "bad-value", "mtu");
  refuse({"vp0", "mtu=65522"}, "bad-value", "mtu");
  refuse({"vp0", "mtu=abc"}, "bad-value", "mtu");
  refuse({"vp0", "mtu="}, "bad-value", "mtu");
  refuse({"vp0", "priority=200"}, "bad-value", "priority");
  refuse({"vp0", "priority=-1"}, "bad-value", "priority");
  refuse({"vp0", "transport=foo"}, "bad-value", "transport");
  refuse({"vp0", "peer=relative/path"}, "bad-value", "absolute");
  refuse({"vp0", "bind="}, "bad-value", "bind");
  refuse({"vp0", "bind=/" + std::string(120, 'x')}, "bad-value", "108");
  refuse({"vp7", "create", "mtu=10"}, "bad-value", "mtu");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":["priority=100"]})", "bad-value",
             "priority");
}

TEST_F(BadInput, invalid_address) {
  refuse({"vp0", "address=300.1.1.1/24"}, "invalid-address", "300.1.1.1");
  refuse({"vp0", "address=10.0.0.1/40"}, "invalid-address", "prefix");
  refuse({"vp0", "address=10.0.0.1/"}, "invalid-address", "prefix");
  refuse({"vp0", "address=224.0.0.1/4"}, "invalid-address", "unicast");
  refuse({"vp0", "address=ff02::1/64"}, "invalid-address", "multicast");
  refuse({"vp0", "address=::/64"}, "invalid-address", "unspecified");
  refuse({"vp0", "-address=nonsense"}, "invalid-address");
  refuse({"vp7", "create", "address=1.2.3"}, "invalid-address");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":["address=fd00::1/129"]})",
             "invalid-address", "prefix");
}

TEST_F(BadInput, unknown_key) {
  refuse({"vp0", "colour=blue"}, "unknown-key", "colour=blue");
  refuse({"vp0", "frobnicate"}, "unknown-key", "frobnicate");
  refuse({"vp0", "-mtu"}, "unknown-key", "-mtu");
  refuse({"vp0", "10.0.0.300"}, "invalid-address", "10.0.0.300");  // meant as an address
  refuse({"vp7", "create", "colour=blue"}, "unknown-key");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":["up","MTU=1500"]})", "unknown-key",
             "MTU=1500");
}

TEST_F(BadInput, conflicting_settings) {
  refuse({"vp0", "up", "down"}, "conflicting-settings", "up and down");
  refuse({"vp0", "down", "up"}, "conflicting-settings");
  refuse({"vp0", "address=10.2.0.1/24", "-address=10.2.0.1/24"}, "conflicting-settings");
  refuse({"vp0", "bridge=vp0"}, "conflicting-settings", "own bridge");
  refuse({"vp0", "peer=/tmp/same.sock", "bind=/tmp/same.sock"}, "conflicting-settings");
  refuse({"vp0", "name=xy"}, "conflicting-settings", "name=");
  refuse({"vp7", "create", "transport=tap", "bind=/tmp/vp7.sock"}, "conflicting-settings",
         "transport=tap");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":["mtu=1500","destroy"]})",
             "conflicting-settings", "destroy");
  refuse_raw(R"({"version":1,"op":"destroy","endpoint":"vp0","args":["up"]})",
             "conflicting-settings", "destroy");
}

// A create request must never destroy: `vpctl vp0 create destroy` sends op "create" with
// args ["destroy"].
TEST_F(BadInput, create_request_carrying_destroy_is_refused) {
  refuse({"vp0", "create", "destroy"}, "conflicting-settings");
  refuse_raw(R"({"version":1,"op":"create","endpoint":"vp1","args":["destroy"]})",
             "conflicting-settings");
}

TEST_F(BadInput, bad_request) {
  refuse_raw("garbage", "bad-request", "JSON");
  refuse_raw("{\"version\":1,\"op\":", "bad-request", "JSON");
  refuse_raw("\xff\xfe{}", "bad-request");
  refuse_raw(R"([{"version":1,"op":"list"}])", "bad-request", "object");
  refuse_raw(R"("list")", "bad-request", "object");
  refuse_raw("{}", "bad-request", "version");
  refuse_raw(R"({"version":"1","op":"list"})", "bad-request", "version");
  refuse_raw(R"({"version":1.0,"op":"list"})", "bad-request", "version");
  refuse_raw(R"({"version":1})", "bad-request", "op");
  refuse_raw(R"({"version":1,"op":7})", "bad-request", "op");
  refuse_raw(R"({"version":1,"op":"explode"})", "bad-request", "explode");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":[1500]})", "bad-request", "args");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":"mtu=1500"})", "bad-request",
             "args");
  refuse_raw(R"({"version":1,"op":"set","endpoint":"vp0","args":[null]})", "bad-request");
  refuse_raw(R"({"version":1,"op":"show","endpoint":7})", "bad-request", "endpoint");
  refuse_raw(R"({"version":1,"op":"list","colour":"blue"})", "bad-request", "colour");
  refuse_raw(R"({"version":1,"op":"show"})", "bad-request", "endpoint");
  refuse_raw(R"({"version":1,"op":"set","args":["up"]})", "bad-request", "endpoint");
  // Deep nesting just under the size limit, bare and inside a field.
  refuse_raw(std::string(30000, '[') + std::string(30000, ']'), "bad-request");
  refuse_raw(R"({"version":1,"op":"list","args":)" + std::string(30000, '[') +
                 std::string(30000, ']') + "}",
             "bad-request");
}

TEST_F(BadInput, unsupported_version) {
  refuse_raw(R"({"version":2,"op":"list"})", "unsupported-version", "2");
  refuse_raw(R"({"version":0,"op":"create","endpoint":"vp7"})", "unsupported-version");
  refuse_raw(R"({"version":4294967297,"op":"list"})", "unsupported-version");
  refuse_raw(R"({"version":-1,"op":"list"})", "unsupported-version");
}

TEST_F(BadInput, request_too_large_without_newline_is_answered_then_closed) {
  Conn c(vpd_->socket());
  ASSERT_TRUE(c.connected()) << c.error();
  // No newline and no shutdown: vpd must decide on its own.
  const std::string big = R"({"version":1,"op":"list","endpoint":")" + std::string(70 * 1024, 'x');
  const Conn::Sent sent = c.send(big);
  EXPECT_NE(sent, Conn::Sent::kStuck);
  const auto reply = c.line();
  ASSERT_TRUE(reply) << "no answer";
  EXPECT_TRUE(is_error_line(*reply, "request-too-large", "64 KiB"));
  EXPECT_TRUE(c.closed_by_vpd()) << "vpd kept the connection open";
  EXPECT_EQ(c.pending(), "");
  expect_unchanged();
}

TEST_F(BadInput, request_too_large_with_newline_is_refused) {
  // A complete line just over the limit, in one write: refused like any longer one, even
  // when vpd happens to see all of it at once.
  for (size_t extra : {1u, 100u, 4000u, 16000u}) {
    SCOPED_TRACE("line of 64 KiB + " + std::to_string(extra) + " bytes");
    std::string line = R"({"version":1,"op":"create","endpoint":"vp7","args":["up"],"x":")";
    line += std::string(64 * 1024 + extra - line.size() - 2, 'x') + "\"}";
    ASSERT_EQ(line.size(), 64 * 1024 + extra);
    Conn c(vpd_->socket());
    ASSERT_TRUE(c.connected()) << c.error();
    c.send(line + "\n" + request("hello"));
    c.shut_write();
    EXPECT_TRUE(c.closed_by_vpd());
    // One answer, the refusal; nothing after it on a connection vpd gave up on.
    const std::string replies = c.pending();
    EXPECT_EQ(std::count(replies.begin(), replies.end(), '\n'), 1) << clip(replies);
    EXPECT_TRUE(is_error_line(replies.substr(0, replies.find('\n')), "request-too-large"));
    expect_unchanged();
  }
  // The same through vpctl, with one enormous argument.
  refuse({"vp0", "bind=/" + std::string(70 * 1024, 'x')}, "request-too-large");
}

TEST_F(BadInput, requests_before_a_too_large_one_are_answered) {
  Conn c(vpd_->socket());
  ASSERT_TRUE(c.connected()) << c.error();
  c.send(request("hello") + request("show", "vp0") + std::string(100 * 1024, 'x'));
  json hello = ok_result(c.line());
  EXPECT_EQ(hello.value("daemon", ""), "vpd");
  json show = ok_result(c.line());
  EXPECT_EQ(show.value("name", ""), "vp0");
  const auto refused = c.line();
  ASSERT_TRUE(refused);
  EXPECT_TRUE(is_error_line(*refused, "request-too-large"));
  EXPECT_TRUE(c.closed_by_vpd());
  expect_unchanged();
}

TEST_F(BadInput, state_write_failure_undoes_the_change) {
  // A directory where the journal goes makes every save fail (the journal so far waits
  // beside it).
  const std::string tmp = control::journal_path(state_path());
  ASSERT_EQ(::rename(tmp.c_str(), (tmp + ".aside").c_str()), 0);
  ASSERT_EQ(::mkdir(tmp.c_str(), 0700), 0);
  refuse({"vp0", "mtu=9000", "down"}, "state-write-failed");
  refuse({"vp7", "create"}, "state-write-failed");
  refuse({"vp1", "destroy"}, "state-write-failed");
  ASSERT_EQ(::rmdir(tmp.c_str()), 0);
  ASSERT_EQ(::rename((tmp + ".aside").c_str(), tmp.c_str()), 0);
  test::Run r = vpd_->ctl({"vp0", "mtu=9000"});
  EXPECT_EQ(r.status, 0) << r.err;
  const json vp0 = test::link_json("vp0");
  ASSERT_TRUE(vp0.is_object());
  EXPECT_EQ(vp0["mtu"], 9000);
}

// ---- how clients behave -----------------------------------------------------------------

TEST_F(BadInput, silent_clients_do_not_block_others) {
  std::vector<std::unique_ptr<Conn>> silent;
  for (int i = 0; i < 20; ++i) {
    silent.push_back(std::make_unique<Conn>(vpd_->socket()));
    ASSERT_TRUE(silent.back()->connected()) << silent.back()->error();
  }
  for (int i = 0; i < 3; ++i) {
    test::Run r = vpd_->ctl({"list"});
    EXPECT_EQ(r.status, 0) << r.err;
  }
  test::Run r = vpd_->ctl({"vp5", "create", "up"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_FALSE(test::link_json("vp5").is_null());
  r = vpd_->ctl({"vp5", "destroy"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(test::link_json("vp5").is_null());
  // They were neither answered nor dropped, and are served when they do speak.
  for (auto& s : silent) EXPECT_FALSE(s->readable_now());
  ASSERT_EQ(silent.front()->send(request("hello")), Conn::Sent::kAll);
  EXPECT_EQ(ok_result(silent.front()->line()).value("daemon", ""), "vpd");
}

TEST_F(BadInput, half_a_line_waits_for_the_rest) {
  Conn half(vpd_->socket());
  ASSERT_TRUE(half.connected()) << half.error();
  ASSERT_EQ(half.send(R"({"version":1,"op":"sh)"), Conn::Sent::kAll);
  test::Run r = vpd_->ctl({"vp0"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("vp0"), std::string::npos);
  r = vpd_->ctl({"vp1", "mtu=1300"});
  EXPECT_EQ(r.status, 0) << r.err;
  const std::string other = test::raw_exchange(vpd_->socket(), request("hello"));
  EXPECT_EQ(ok_result(other.substr(0, other.find('\n'))).value("daemon", ""), "vpd");
  EXPECT_FALSE(half.readable_now()) << "vpd answered (or dropped) half a request";
  ASSERT_EQ(half.send(R"(ow","endpoint":"vp1"})"
                      "\n"),
            Conn::Sent::kAll);
  json show = ok_result(half.line());
  EXPECT_EQ(show.value("name", ""), "vp1");
  EXPECT_EQ(show.value("mtu", 0), 1300);
}

TEST_F(BadInput, half_a_line_trickled_a_byte_at_a_time_is_answered_then_closed_after_the_bound) {
  Conn trickler(vpd_->socket());
  ASSERT_TRUE(trickler.connected()) << trickler.error();
  ASSERT_EQ(trickler.send(R"({"version":1,"op":"hello","endpoint":")"), Conn::Sent::kAll);
  // A byte every second: never silent for the 30 s that close an idle client, yet the line
  // never ends. vpd's bound (--request-timeout 3) is checked on its tick, half of that.
  std::optional<std::string> reply;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!reply && std::chrono::steady_clock::now() < deadline) {
    reply = trickler.line(1s);
    if (!reply && trickler.send("x") != Conn::Sent::kAll) break;
  }
  ASSERT_TRUE(reply) << "vpd neither answered nor closed the trickling client";
  EXPECT_TRUE(is_error_line(*reply, "request-timeout", "incomplete for 3 s"));
  EXPECT_TRUE(trickler.closed_by_vpd()) << "vpd kept the connection open";
  EXPECT_NE(vpd_->log().find("without its newline for 3 s"), std::string::npos) << vpd_->log();
  // Everyone else is served as before.
  const std::string other = test::raw_exchange(vpd_->socket(), request("hello"));
  EXPECT_EQ(ok_result(other.substr(0, other.find('\n'))).value("daemon", ""), "vpd");
}

TEST_F(BadInput, several_requests_on_one_connection_are_answered_in_order) {
  Conn c(vpd_->socket());
  ASSERT_TRUE(c.connected()) << c.error();
  const std::string batch = request("hello") + request("create", "vp5", {"mtu=1300"}) +
                            request("show", "vp5") + "garbage\n" + "\n" + request("show", "vp9") +
                            request("set", "vp5", {"mtu=1200"}) + request("destroy", "vp5") +
                            request("list");
  ASSERT_EQ(c.send(batch), Conn::Sent::kAll);
  EXPECT_EQ(ok_result(c.line()).value("daemon", ""), "vpd");
  EXPECT_EQ(ok_result(c.line()).value("mtu", 0), 1300);
  json show = ok_result(c.line());
  EXPECT_EQ(show.value("name", ""), "vp5");
  EXPECT_EQ(show.value("mtu", 0), 1300);
  auto garbage = c.line();
  ASSERT_TRUE(garbage);
  EXPECT_TRUE(is_error_line(*garbage, "bad-request"));  // and the connection goes on
  auto missing = c.line();
  ASSERT_TRUE(missing);
  EXPECT_TRUE(is_error_line(*missing, "no-such-endpoint", "vp9"));
  EXPECT_EQ(ok_result(c.line()).value("mtu", 0), 1200);
  EXPECT_EQ(ok_result(c.line()).value("destroyed", ""), "vp5");
  EXPECT_EQ(endpoint_names(ok_result(c.line())), (std::vector<std::string>{"vp0", "vp1"}));
  // Nothing more: the blank line got no answer.
  c.shut_write();
  EXPECT_TRUE(c.closed_by_vpd());
  EXPECT_EQ(c.pending(), "");
  expect_unchanged();
}

TEST_F(BadInput, last_request_without_newline_is_answered_at_shutdown) {
  std::string reply =
      test::raw_exchange(vpd_->socket(), R"({"version":1,"op":"show","endpoint":"vp0"})");
  ASSERT_EQ(std::count(reply.begin(), reply.end(), '\n'), 1) << reply;
  EXPECT_EQ(ok_result(reply.substr(0, reply.find('\n'))).value("name", ""), "vp0");

  reply = test::raw_exchange(vpd_->socket(), request("hello") + R"({"version":1,"op":"list"})");
  ASSERT_EQ(std::count(reply.begin(), reply.end(), '\n'), 2) << reply;
  const size_t first = reply.find('\n');
  EXPECT_EQ(ok_result(reply.substr(0, first)).value("daemon", ""), "vpd");
  EXPECT_EQ(endpoint_names(ok_result(reply.substr(first + 1, reply.size() - first - 2))),
            (std::vector<std::string>{"vp0", "vp1"}));

  // Garbage at the end is still answered (as garbage), then the connection closes.
  reply = test::raw_exchange(vpd_->socket(), "nonsense");
  EXPECT_TRUE(is_error_line(reply.substr(0, reply.find('\n')), "bad-request"));
  expect_unchanged();
}

TEST_F(BadInput, hundred_parallel_clients_all_succeed) {
  constexpr int kClients = 100;
  struct Outcome {
    std::string created;  // the name vpd gave or confirmed
    bool shown = false;
    std::string problem;
  };
  std::vector<Outcome> outcomes(kClients);
  std::latch start(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      Outcome& o = outcomes[i];
      start.arrive_and_wait();
      if (i % 2 == 0) {
        // vpctl processes, letting vpd pick the name.
        json created = vpd_->ctl_json({"create", "mtu=1300"});
        o.created = created.is_object() ? created.value("name", "") : "";
        if (o.created.empty()) {
          o.problem = "vpctl create: " + created.dump();
          return;
        }
        json shown = vpd_->ctl_json({o.created});
        o.shown = shown.is_object() && shown.value("name", "") == o.created &&
                  shown.value("mtu", 0) == 1300;
      } else {
        // Raw connections, several requests each.
        Conn c(vpd_->socket());
        if (!c.connected()) {
          o.problem = c.error();
          return;
        }
        const std::string name = "c" + std::to_string(i);
        c.send(request("create", name, {"up"}) + request("show", name) + request("hello"));
        json created = ok_result(c.line());
        json shown = ok_result(c.line());
        json hello = ok_result(c.line());
        o.created = created.is_object() ? created.value("name", "") : "";
        o.shown = shown.is_object() && shown.value("name", "") == name &&
                  hello.value("daemon", "") == "vpd";
        if (o.created != name) o.problem = "raw create of " + name + " failed";
      }
    });
  }
  for (auto& t : threads) t.join();

  std::set<std::string> names{"vp0", "vp1"};
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(outcomes[i].problem, "") << "client " << i;
    EXPECT_TRUE(outcomes[i].shown) << "client " << i;
    EXPECT_TRUE(names.insert(outcomes[i].created).second)
        << "client " << i << " got a name another client got: " << outcomes[i].created;
  }
  ASSERT_TRUE(vpd_->alive()) << vpd_->log();
  const std::vector<std::string> expected(names.begin(), names.end());
  json list = vpd_->ctl_json({"list"});
  EXPECT_EQ(endpoint_names(list), expected);
  std::set<std::string> macs;
  for (const auto& e : list) macs.insert(e.value("mac", ""));
  EXPECT_EQ(macs.size(), expected.size()) << "two endpoints share a MAC";
  // The kernel and the state file agree with the list.
  const std::vector<std::string> links = link_names();
  for (const auto& n : expected) {
    EXPECT_TRUE(std::binary_search(links.begin(), links.end(), n)) << n << " has no TAP";
  }
  auto saved = control::load_state(state_path());  // state.json and its journal
  ASSERT_TRUE(saved) << saved.error().message;
  json state = json::parse(control::encode_state(*saved), nullptr, false);
  ASSERT_TRUE(state.is_object());
  EXPECT_EQ(endpoint_names(state["endpoints"]), expected);
}

TEST_F(BadInput, twenty_clients_creating_one_name_get_one_endpoint) {
  constexpr int kClients = 20;
  std::vector<test::Run> runs(kClients);
  std::latch start(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      runs[i] = vpd_->ctl({"race0", "create", "mac=02:00:00:00:0a:" + std::to_string(10 + i)});
    });
  }
  for (auto& t : threads) t.join();
  int created = 0;
  for (const auto& r : runs) {
    if (r.status == 0) {
      ++created;
    } else {
      EXPECT_EQ(r.status, 1) << r.err;
      EXPECT_NE(r.err.find("(endpoint-exists)"), std::string::npos) << r.err;
    }
  }
  EXPECT_EQ(created, 1);
  EXPECT_EQ(endpoint_names(vpd_->ctl_json({"list"})),
            (std::vector<std::string>{"race0", "vp0", "vp1"}));
  EXPECT_FALSE(test::link_json("race0").is_null());
}

TEST_F(BadInput, client_that_never_reads_does_not_stall_others) {
  // How long is one answer to "list"?
  const std::string one = test::raw_exchange(vpd_->socket(), request("list"));
  ASSERT_GT(one.size(), 100u);

  Conn hog(vpd_->socket());
  ASSERT_TRUE(hog.connected()) << hog.error();
  // About 1 MiB of answers it will not read: less than vpd's limit for pending output.
  std::string batch;
  while (batch.size() / request("list").size() * one.size() < 1024 * 1024) batch += request("list");
  ASSERT_EQ(hog.send(batch), Conn::Sent::kAll);
  // While its answers are stuck, everybody else is served.
  for (int i = 0; i < 3; ++i) {
    test::Run r = vpd_->ctl({"list"});
    EXPECT_EQ(r.status, 0) << r.err;
  }
  test::Run r = vpd_->ctl({"vp5", "create"});
  EXPECT_EQ(r.status, 0) << r.err;
  r = vpd_->ctl({"vp5", "destroy"});
  EXPECT_EQ(r.status, 0) << r.err;
  const std::string hello = test::raw_exchange(vpd_->socket(), request("hello"));
  EXPECT_EQ(ok_result(hello.substr(0, hello.find('\n'))).value("daemon", ""), "vpd");

  // Past the limit vpd gives up on it (rather than buffering without end).
  Conn::Sent sent = Conn::Sent::kAll;
  for (int i = 0; i < 64 && sent == Conn::Sent::kAll; ++i) sent = hog.send(batch);
  EXPECT_EQ(sent, Conn::Sent::kClosed) << "vpd neither closed the connection nor bounded it";
  EXPECT_NE(vpd_->log().find("does not read its responses"), std::string::npos) << vpd_->log();

  // Clients that hang up without reading their answers do no harm either.
  for (int i = 0; i < 20; ++i) {
    Conn gone(vpd_->socket());
    ASSERT_TRUE(gone.connected());
    gone.send(request("list") + request("list"));
  }
  expect_unchanged();
}

TEST_F(BadInput, client_beyond_the_connection_limit_is_told_busy) {
  constexpr size_t kLimit = 256;  // ControlServer::kMaxClients
  std::vector<std::unique_ptr<Conn>> held;
  for (size_t i = 0; i < kLimit; ++i) {
    held.push_back(std::make_unique<Conn>(vpd_->socket()));
    ASSERT_TRUE(held.back()->connected()) << held.back()->error();
    // An answer proves vpd accepted this one before the next connects.
    ASSERT_EQ(held.back()->send(request("hello")), Conn::Sent::kAll);
    ASSERT_TRUE(ok_result(held.back()->line()).contains("daemon")) << "client " << i;
  }
  Conn extra(vpd_->socket());
  ASSERT_TRUE(extra.connected());
  const auto busy = extra.line();
  ASSERT_TRUE(busy);
  EXPECT_TRUE(is_error_line(*busy, "busy"));
  EXPECT_TRUE(extra.closed_by_vpd());
  // vpctl says so too, whether or not vpd has closed the connection before vpctl sent
  // its request (several tries, to meet both orders).
  test::Run r;
  for (int i = 0; i < 5; ++i) {
    r = vpd_->ctl({"list"});
    if (r.status != 1 || r.err.find("(busy)") == std::string::npos) break;
  }
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("(busy)"), std::string::npos) << r.err;

  held.clear();
  // Once they are gone, vpd serves again (it may notice the hang-ups a moment later).
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  for (;;) {
    r = vpd_->ctl({"list"});
    if (r.status == 0 || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(r.status, 0) << r.err;
  expect_unchanged();
}

}  // namespace
}  // namespace vp
