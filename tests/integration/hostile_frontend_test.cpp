// Misbehaving vhost-user front-ends against a real vpd, while another endpoint carries
// traffic. vp0 takes the abuse; vp1 has a well-behaved front-end that exchanges ARP with the
// kernel on a thread of its own for the whole test. Every test ends with the same checks:
// vpd still answers vpctl, a fresh exchange on vp1 passes, vp0 takes a well-behaved
// front-end again, and vpd holds exactly the fds it held before and not much more memory.
// Each test runs in a network namespace of its own, so it needs root.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/harness.hpp"
#include "support/vhost_frontend.hpp"
#include "sys/unix_socket.hpp"
#include "virtio/queue.hpp"

namespace vp::test {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using vhost::Request;

constexpr uint32_t kRx = 0;
constexpr uint32_t kTx = 1;
// Slack for vpd's resident memory after the abuse (allocator noise, logging buffers).
// AddressSanitizer keeps freed memory in quarantine (up to 256 MiB) instead of reusing it, so
// under scripts/sanitize RSS grows with every allocation; leaks are LeakSanitizer's job there.
#if defined(__SANITIZE_ADDRESS__)
constexpr long kRssSlackKiB = 64 * 1024;
#else
constexpr long kRssSlackKiB = 8 * 1024;
#endif

// A guest on one endpoint: its MAC and 10.<net>.0.2; the endpoint's TAP holds 10.<net>.0.1.
struct Guest {
  std::array<uint8_t, 6> mac;
  uint8_t net;
};
constexpr Guest kVp0Guest{{0x52, 0x54, 0x00, 0x00, 0x00, 0x02}, 98};
constexpr Guest kVp1Guest{{0x52, 0x54, 0x00, 0x00, 0x01, 0x02}, 97};

template <typename T>
std::span<const std::byte> bytes(const T& value) {
  return vhost::wire_bytes(value);
}

// A virtio_net_hdr_mrg_rxbuf (no offload), then an ARP request from the guest asking for the
// host's address on the endpoint.
std::vector<std::byte> arp_request(const Guest& g) {
  std::vector<uint8_t> f(12, 0);
  auto put = [&](std::initializer_list<uint8_t> b) { f.insert(f.end(), b); };
  put({0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  f.insert(f.end(), g.mac.begin(), g.mac.end());
  put({0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01});
  f.insert(f.end(), g.mac.begin(), g.mac.end());
  put({10, g.net, 0, 2, 0, 0, 0, 0, 0, 0, 10, g.net, 0, 1});
  std::vector<std::byte> out(f.size());
  std::memcpy(out.data(), f.data(), f.size());
  return out;
}

// One ARP request from the guest through vpd to the kernel and the kernel's reply back
// through vpd to the guest's RX ring. "" on success, else what did not happen. With
// `resend`, the request goes again each second without a reply: right after a session
// starts the kernel may still drop what it sends while linkwatch brings the TAP up.
std::string arp_round_trip(VhostFrontend& fe, const Guest& g, std::chrono::milliseconds timeout,
                           bool resend = false) {
  while (fe.outstanding(kRx) < 32 && fe.post_rx(kRx)) {
  }
  if (auto k = fe.kick(kRx); !k) return "kick RX: " + k.error().message;
  auto posted = fe.post_tx(kTx, arp_request(g));
  if (!posted) return "post_tx: " + posted.error().message;
  if (auto k = fe.kick(kTx); !k) return "kick TX: " + k.error().message;
  bool sent = false;
  bool replied = false;
  auto last_request = steady_clock::now();
  const auto deadline = last_request + timeout;
  while (!(sent && replied) && steady_clock::now() < deadline) {
    if (resend && sent && steady_clock::now() - last_request > 1s) {
      last_request = steady_clock::now();
      if (fe.post_tx(kTx, arp_request(g))) (void)fe.kick(kTx);
    }
    bool any = false;
    while (fe.next_used(kTx)) sent = any = true;
    while (auto used = fe.next_used(kRx)) {
      any = true;
      if (used->len < 12u + 42u) continue;
      const auto* b = reinterpret_cast<const uint8_t*>(fe.buffer(kRx, used->id).data()) + 12;
      const bool arp_reply = b[12] == 0x08 && b[13] == 0x06 && b[21] == 2;
      if (arp_reply && std::memcmp(b, g.mac.data(), 6) == 0 && b[28] == 10 && b[29] == g.net &&
          b[31] == 1) {
        replied = true;
      }
    }
    if (any) {
      while (fe.outstanding(kRx) < 32 && fe.post_rx(kRx)) {
      }
      (void)fe.kick(kRx);
    } else {
      std::this_thread::sleep_for(2ms);
    }
  }
  if (!sent) return "vpd did not give the TX buffer back";
  if (!replied) return "no ARP reply reached the guest";
  return "";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t fd_count(pid_t pid) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

long rss_kib(pid_t pid) {
  const std::string status = slurp("/proc/" + std::to_string(pid) + "/status");
  const size_t at = status.find("VmRSS:");
  return at == std::string::npos ? -1 : std::stol(status.substr(at + 6));
}

// utime + stime of the process, in clock ticks.
long cpu_ticks(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  long utime = 0;
  long stime = 0;
  // Fields 3..13 come before utime (14) and stime (15).
  for (int i = 3; i <= 13; ++i) rest >> field;
  rest >> utime >> stime;
  return utime + stime;
}

// Sends one message with any fds, past what the codec allows (it caps fds at kMaxFds).
bool send_with_fds(int socket, const vhost::Header& header, std::span<const std::byte> payload,
                   std::span<const int> fds) {
  std::vector<std::byte> data(vhost::kHeaderSize + payload.size());
  std::memcpy(data.data(), &header, vhost::kHeaderSize);
  if (!payload.empty())
    std::memcpy(data.data() + vhost::kHeaderSize, payload.data(), payload.size());
  iovec iov{data.data(), data.size()};
  std::vector<unsigned char> control(CMSG_SPACE(fds.size() * sizeof(int)));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), fds.data(), fds.size() * sizeof(int));
  pollfd p{socket, POLLOUT, 0};
  if (::poll(&p, 1, 5000) != 1) return false;
  return ::sendmsg(socket, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
}

// Whether vpd closes `socket` within `timeout` (whatever it still sends before is read and
// dropped).
::testing::AssertionResult closed_by_vpd(int socket, std::chrono::milliseconds timeout = 5000ms) {
  const auto deadline = steady_clock::now() + timeout;
  while (steady_clock::now() < deadline) {
    pollfd p{socket, POLLIN, 0};
    if (::poll(&p, 1, 100) != 1) continue;
    char buf[4096];
    const ssize_t n = ::recv(socket, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "vpd kept the connection open";
}

// A `monitor` subscriber on vpd's control socket (the raw protocol, as vpctl monitor speaks
// it); invalid if vpd did not take the subscription.
Fd subscribe(const std::string& control_socket) {
  auto c = connect_unix(control_socket);
  if (!c) return Fd();
  const std::string request = "{\"version\":1,\"op\":\"monitor\"}\n";
  if (::send(c->get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return Fd();
  }
  std::string line;
  char ch = 0;
  pollfd p{c->get(), POLLIN, 0};
  while (::poll(&p, 1, 5000) == 1 && ::recv(c->get(), &ch, 1, 0) == 1 && ch != '\n') line += ch;
  return line.find("\"subscribed\":true") != std::string::npos ? std::move(*c) : Fd();
}

// The first event of `type` on `endpoint` that the subscriber `fd` receives within `timeout`
// (null if none).
nlohmann::json next_event(int fd, const std::string& endpoint, const std::string& type,
                          std::chrono::milliseconds timeout) {
  const auto deadline = steady_clock::now() + timeout;
  std::string line;
  while (steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) != 1) continue;
    char ch = 0;
    if (::recv(fd, &ch, 1, 0) != 1) return nullptr;
    if (ch != '\n') {
      line += ch;
      continue;
    }
    const auto j = nlohmann::json::parse(line, nullptr, false);
    line.clear();
    if (j.is_object() && j.contains("event") && j["event"].value("endpoint", "") == endpoint &&
        j["event"].value("type", "") == type) {
      return j["event"];
    }
  }
  return nullptr;
}

// The bound vpd is given (--message-timeout) for one message to arrive whole, and how long
// past it the test waits for the disconnect at most.
constexpr auto kStallBound = 3s;
constexpr auto kStallWait = kStallBound + 20s;

class HostileFrontend : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(enter_private_netns(), "");
    vpd_ = std::make_unique<Vpd>(dir_.path());
    // A short message bound (the default is 10 s), so the stall tests wait 3 s, not 10.
    ASSERT_EQ(vpd_->start({"--message-timeout", std::to_string(kStallBound.count())}), "");
    ASSERT_EQ(vpd_->ctl({"vp0", "create", "address=10.98.0.1/24", "up"}).status, 0) << vpd_->log();
    ASSERT_EQ(vpd_->ctl({"vp1", "create", "address=10.97.0.1/24", "up"}).status, 0) << vpd_->log();
    good_ = attach_good("vp1");
    ASSERT_TRUE(good_);
    ASSERT_EQ(arp_round_trip(*good_, kVp1Guest, 5s), "") << vpd_->log();
    // One whole session on vp0 first, so that whatever vpd sets up once is in the baseline.
    {
      auto warm = attach_good("vp0");
      ASSERT_TRUE(warm);
      ASSERT_EQ(arp_round_trip(*warm, kVp0Guest, 5s, true), "") << vpd_->log();
    }
    ASSERT_TRUE(wait_vp0_idle());
    fds_before_ = settled_fd_count();
    rss_before_ = rss_kib(vpd_->pid());
    ASSERT_GT(fds_before_, 0u);
    ASSERT_GT(rss_before_, 0);
    start_traffic();
  }

  void TearDown() override { stop_traffic(); }

  // A front-end that negotiates as QEMU does (split rings), sends the memory table and starts
  // both rings of `endpoint`; null (with a failure recorded) if any step fails.
  std::unique_ptr<VhostFrontend> attach_good(const std::string& endpoint) {
    auto fe = VhostFrontend::connect(vpd_->runtime_dir() + "/" + endpoint + ".sock",
                                     VhostFrontend::Options{});
    if (!fe) {
      ADD_FAILURE() << "connect: " << fe.error().message;
      return nullptr;
    }
    VhostFrontend& f = **fe;
    Result<void> ok = f.negotiate(~virtio::kFeatureRingPacked, ~0ull);
    if (ok) ok = f.set_mem_table();
    if (ok) ok = f.setup_queue(kRx, 256);
    if (ok) ok = f.setup_queue(kTx, 256);
    if (!ok) {
      ADD_FAILURE() << endpoint << ": " << ok.error().message << "\n" << vpd_->log();
      return nullptr;
    }
    if (!wait_operstate_up(endpoint)) return nullptr;
    return std::move(*fe);
  }

  // The kernel sends on a TAP only once linkwatch has made it operationally up.
  bool wait_operstate_up(const std::string& endpoint) {
    for (int i = 0; i < 500; ++i) {
      if (link_json(endpoint).value("operstate", "") == "UP") return true;
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << endpoint << " is not operationally up: " << link_json(endpoint).dump();
    return false;
  }

  // A front-end on vp0 that negotiated everything (REPLY_ACK included) and sent nothing else.
  std::unique_ptr<VhostFrontend> hostile() {
    if (!wait_vp0_idle()) return nullptr;
    VhostFrontend::Options options;
    auto fe = VhostFrontend::connect(vpd_->runtime_dir() + "/vp0.sock", options);
    if (!fe) {
      ADD_FAILURE() << "connect: " << fe.error().message;
      return nullptr;
    }
    if (auto ok = (*fe)->negotiate(~virtio::kFeatureRingPacked, ~0ull); !ok) {
      ADD_FAILURE() << "negotiate: " << ok.error().message << "\n" << vpd_->log();
      return nullptr;
    }
    if (((*fe)->acked_protocol_features() & vhost::bit(vhost::ProtocolFeature::kReplyAck)) == 0) {
      ADD_FAILURE() << "vpd offers REPLY_ACK";
      return nullptr;
    }
    return std::move(*fe);
  }

  // vp0 has no session (the last one has ended) and listens.
  ::testing::AssertionResult wait_vp0_idle() {
    std::string guest;
    for (int i = 0; i < 500; ++i) {
      guest = vpd_->ctl_json({"vp0"})["status"].value("guest", "");
      if (guest == "listening") return ::testing::AssertionSuccess();
      std::this_thread::sleep_for(20ms);
    }
    return ::testing::AssertionFailure() << "vp0 guest: " << guest << "\n" << vpd_->log();
  }

  // vpd's fd count once it has settled: equal to `want` (when given) within 15 s, or unchanged
  // over three readings 100 ms apart within 5 s; else the last reading. 15 s: a flood of
  // refused connections holds a timerfd until its 10 s log interval is over.
  size_t settled_fd_count(size_t want = 0) {
    size_t last = fd_count(vpd_->pid());
    int same = 0;
    for (int i = 0; i < (want != 0 ? 150 : 50); ++i) {
      if (want != 0 && last == want) return last;
      std::this_thread::sleep_for(100ms);
      const size_t now = fd_count(vpd_->pid());
      same = now == last ? same + 1 : 0;
      last = now;
      if (want == 0 && same >= 3) return last;
    }
    return last;
  }

  // Sends `request` with NEED_REPLY and checks that vpd answers it with a nack (u64 1) and
  // keeps the session (a GET_FEATURES round trip right after).
  ::testing::AssertionResult nacked(VhostFrontend& fe, uint32_t request,
                                    std::span<const std::byte> payload,
                                    std::span<const int> fds = {}) {
    const vhost::Header header{request, vhost::kVersion | vhost::kFlagNeedReply,
                               static_cast<uint32_t>(payload.size())};
    if (auto ok = fe.send_raw(header, payload, fds); !ok) {
      return ::testing::AssertionFailure() << "send: " << ok.error().message;
    }
    auto reply = fe.wait_reply(static_cast<Request>(request));
    if (!reply) {
      return ::testing::AssertionFailure() << "no reply: " << reply.error().message << "\n"
                                           << vpd_->log();
    }
    if (reply->payload.size() != sizeof(uint64_t) || reply->u64() != 1) {
      return ::testing::AssertionFailure() << "not a nack: " << reply->u64();
    }
    if (auto ok = fe.sync(); !ok) {
      return ::testing::AssertionFailure()
             << "session gone after the nack: " << ok.error().message << "\n"
             << vpd_->log();
    }
    return ::testing::AssertionSuccess();
  }
  ::testing::AssertionResult nacked(VhostFrontend& fe, Request request,
                                    std::span<const std::byte> payload,
                                    std::span<const int> fds = {}) {
    return nacked(fe, vhost::code(request), payload, fds);
  }

  // vp1's front-end exchanges ARP with the kernel every 20 ms until stop_traffic().
  void start_traffic() {
    stop_ = false;
    traffic_ = std::thread([this] {
      while (!stop_) {
        const std::string why = arp_round_trip(*good_, kVp1Guest, 5s);
        if (why.empty()) {
          ++rounds_;
        } else {
          ++failures_;
          std::lock_guard lock(mutex_);
          if (first_failure_.empty()) first_failure_ = why;
        }
        std::this_thread::sleep_for(20ms);
      }
    });
  }
  void stop_traffic() {
    stop_ = true;
    if (traffic_.joinable()) traffic_.join();
  }

  // What every test asserts after its abuse.
  void expect_unharmed() {
    // vp1 keeps passing traffic right after the abuse, while vp0's session winds down.
    const int rounds = rounds_.load();
    for (int i = 0; i < 500 && rounds_.load() < rounds + 3 && failures_.load() == 0; ++i) {
      std::this_thread::sleep_for(20ms);
    }
    stop_traffic();
    ASSERT_TRUE(vpd_->alive()) << vpd_->log();
    EXPECT_EQ(failures_.load(), 0) << "vp1 lost traffic during the abuse: " << first_failure_;
    EXPECT_GT(rounds_.load(), 0) << "vp1 carried traffic during the abuse";

    // vpd still serves control requests.
    const auto list = vpd_->ctl_json({"list"});
    ASSERT_TRUE(list.is_array()) << list.dump() << vpd_->log();
    EXPECT_EQ(list.size(), 2u) << list.dump();
    EXPECT_EQ(vpd_->ctl_json({"vp1"})["status"].value("guest", ""), "connected");

    // A fresh exchange on vp1.
    EXPECT_EQ(arp_round_trip(*good_, kVp1Guest, 5s), "") << vpd_->log();

    // Back to the baseline: vp0 idle, every fd the abuse brought in closed, memory returned.
    ASSERT_TRUE(wait_vp0_idle());
    const size_t fds_after = settled_fd_count(fds_before_);
    const long rss_after = rss_kib(vpd_->pid());
    EXPECT_EQ(fds_after, fds_before_) << slurp_fds();
    EXPECT_LE(rss_after, rss_before_ + kRssSlackKiB) << "VmRSS grew from " << rss_before_ << " kB";
    std::printf("[ measured ] fds %zu -> %zu, VmRSS %ld kB -> %ld kB, vp1 exchanges %d\n",
                fds_before_, fds_after, rss_before_, rss_after, rounds_.load());

    // vp0 takes a well-behaved front-end again, and lets it go.
    {
      auto fe = attach_good("vp0");
      ASSERT_TRUE(fe);
      EXPECT_EQ(arp_round_trip(*fe, kVp0Guest, 5s, true), "") << vpd_->log();
    }
    ASSERT_TRUE(wait_vp0_idle());
    EXPECT_EQ(settled_fd_count(fds_before_), fds_before_) << slurp_fds();
  }

  std::string slurp_fds() {
    std::string out = "vpd's fds:\n";
    std::error_code ec;
    const std::string dir = "/proc/" + std::to_string(vpd_->pid()) + "/fd";
    for (auto it = std::filesystem::directory_iterator(dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      out += "  " + it->path().filename().string() + " -> " +
             std::filesystem::read_symlink(it->path(), ec).string() + "\n";
    }
    return out;
  }

  // The memory table entry of the front-end's region `i`, as set_mem_table() sends it.
  static vhost::MemoryRegion wire(const VhostFrontend& fe, uint32_t i) {
    return vhost::MemoryRegion{fe.region(i).gpa, fe.region(i).size, fe.region_uva(i), 0};
  }
  static std::span<const std::byte> table_bytes(const vhost::MemoryTable& table) {
    return bytes(table).first(vhost::kMemoryTableHeaderSize +
                              table.nregions * sizeof(vhost::MemoryRegion));
  }

  TempDir dir_;
  std::unique_ptr<Vpd> vpd_;
  std::unique_ptr<VhostFrontend> good_;  // vp1's; owned by the traffic thread while it runs
  size_t fds_before_ = 0;
  long rss_before_ = 0;

  std::thread traffic_;
  std::atomic<bool> stop_{false};
  std::atomic<int> rounds_{0};
  std::atomic<int> failures_{0};
  std::mutex mutex_;
  std::string first_failure_;
};

TEST_F(HostileFrontend, truncated_messages_end_only_their_own_session) {
  const vhost::Header set_features{vhost::code(Request::kSetFeatures), vhost::kVersion, 8};
  const auto* head = reinterpret_cast<const char*>(&set_features);
  // Half a header, a whole header without its payload, a header with half its payload.
  for (const size_t cut : {size_t{6}, vhost::kHeaderSize, vhost::kHeaderSize + 4}) {
    auto fe = hostile();
    ASSERT_TRUE(fe);
    std::string partial(head, vhost::kHeaderSize);
    partial.append(8, '\0');
    ASSERT_EQ(::send(fe->socket(), partial.data(), cut, MSG_NOSIGNAL), static_cast<ssize_t>(cut));
    // While the message hangs incomplete, vpd serves everyone else.
    const int rounds = rounds_.load();
    EXPECT_EQ(vpd_->ctl({"vp1"}).status, 0);
    for (int i = 0; i < 250 && rounds_.load() < rounds + 3; ++i) std::this_thread::sleep_for(20ms);
    EXPECT_GE(rounds_.load(), rounds + 3) << "vp1 stalled behind a half-sent message on vp0";
    fe.reset();  // closes inside the message
    EXPECT_TRUE(wait_vp0_idle()) << "cut after " << cut << " bytes";
  }
  EXPECT_NE(vpd_->log().find("inside a message"), std::string::npos) << vpd_->log();
  expect_unharmed();
}

TEST_F(HostileFrontend, message_left_half_sent_ends_the_session_and_the_endpoint_serves_again) {
  const std::string path = vpd_->runtime_dir() + "/vp0.sock";
  const vhost::Header set_features{vhost::code(Request::kSetFeatures), vhost::kVersion, 8};
  std::string whole(reinterpret_cast<const char*>(&set_features), vhost::kHeaderSize);
  whole.append(8, '\0');

  // 7 of the 12 header bytes, then nothing.
  {
    auto fe = hostile();
    ASSERT_TRUE(fe);
    Fd monitor = subscribe(vpd_->socket());
    ASSERT_TRUE(monitor.valid()) << vpd_->log();
    ASSERT_EQ(::send(fe->socket(), whole.data(), 7, MSG_NOSIGNAL), 7);
    // Meanwhile the endpoint is held: a second front-end is turned away as busy.
    auto second = connect_unix(path);
    ASSERT_TRUE(second);
    EXPECT_TRUE(closed_by_vpd(second->get())) << "a second front-end was served";
    EXPECT_TRUE(closed_by_vpd(fe->socket(), kStallWait)) << vpd_->log();
    EXPECT_NE(vpd_->log().find("the front-end sent 7 of the 12 header bytes of a message and not "
                               "the rest within 3 s: disconnected"),
              std::string::npos)
        << vpd_->log();
    // Subscribers are told why.
    const auto ended = next_event(monitor.get(), "vp0", "frontend-disconnected", 10s);
    EXPECT_EQ(ended.is_object() ? ended.value("reason", "") : "",
              "the front-end sent 7 of the 12 header bytes of a message and not the rest within "
              "3 s: disconnected")
        << ended.dump();
    EXPECT_TRUE(wait_vp0_idle());
  }

  // A whole header, 3 of its 8 payload bytes, then one more byte every 1 s: the bound is on the
  // message, not on the silence, so trickling does not keep it open.
  {
    auto fe = hostile();
    ASSERT_TRUE(fe);
    const auto start = steady_clock::now();
    ASSERT_EQ(::send(fe->socket(), whole.data(), 15, MSG_NOSIGNAL), 15);
    bool closed = false;
    for (size_t sent = 15; sent < whole.size() - 1 && !closed; ++sent) {
      closed = closed_by_vpd(fe->socket(), 1s);
      if (!closed) (void)::send(fe->socket(), whole.data() + sent, 1, MSG_NOSIGNAL);
    }
    if (!closed) closed = closed_by_vpd(fe->socket(), kStallWait);
    EXPECT_TRUE(closed) << vpd_->log();
    EXPECT_GE(steady_clock::now() - start, kStallBound - 1s) << "closed before the bound";
    EXPECT_NE(vpd_->log().find("the front-end sent the 12-byte header of SET_FEATURES and "),
              std::string::npos)
        << vpd_->log();
    EXPECT_NE(vpd_->log().find(" of the 8 payload bytes it announces and not the rest within "
                               "3 s: disconnected"),
              std::string::npos)
        << vpd_->log();
  }
  expect_unharmed();
}

TEST_F(HostileFrontend, messages_sent_slowly_in_halves_within_the_bound_are_served) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  const vhost::Header get_features{vhost::code(Request::kGetFeatures), vhost::kVersion, 0};
  const auto* head = reinterpret_cast<const char*>(&get_features);
  const uint64_t sessions =
      vpd_->ctl_json({"vp0"})["status"]["session"].value("sessions", uint64_t{0});
  // Half of one request; 2 s later its rest and half of the next; 2 s later the rest of that.
  // Each stays incomplete for less than the 3 s bound, both together for longer.
  ASSERT_EQ(::send(fe->socket(), head, 6, MSG_NOSIGNAL), 6);
  std::this_thread::sleep_for(2s);
  std::string rest_and_half(head + 6, vhost::kHeaderSize - 6);
  rest_and_half.append(head, 6);
  ASSERT_EQ(::send(fe->socket(), rest_and_half.data(), rest_and_half.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(rest_and_half.size()));
  auto first = fe->wait_reply(Request::kGetFeatures);
  ASSERT_TRUE(first) << first.error().message << "\n" << vpd_->log();
  std::this_thread::sleep_for(2s);
  ASSERT_EQ(::send(fe->socket(), head + 6, vhost::kHeaderSize - 6, MSG_NOSIGNAL),
            static_cast<ssize_t>(vhost::kHeaderSize - 6));
  auto second = fe->wait_reply(Request::kGetFeatures);
  ASSERT_TRUE(second) << second.error().message << "\n" << vpd_->log();
  EXPECT_EQ(second->u64(), first->u64());
  EXPECT_TRUE(fe->sync());
  // The same session throughout.
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"]["session"].value("sessions", uint64_t{0}), sessions);
  EXPECT_EQ(vpd_->log().find("not the rest within"), std::string::npos) << vpd_->log();
  fe.reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, wrong_payload_sizes_are_refused_and_oversized_ones_end_the_session) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  const std::array<std::byte, 16> sixteen{};
  // SET_VRING_NUM takes 8 bytes, SET_FEATURES 8, SET_OWNER none.
  EXPECT_TRUE(nacked(*fe, Request::kSetVringNum, std::span(sixteen).first(4)));
  EXPECT_TRUE(nacked(*fe, Request::kSetFeatures, sixteen));
  EXPECT_TRUE(nacked(*fe, Request::kSetOwner, std::span(sixteen).first(1)));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringAddr, std::span(sixteen).first(8)));
  // A memory table that announces two regions and carries one (and one fd).
  vhost::MemoryTable table;
  table.nregions = 2;
  table.regions[0] = wire(*fe, 0);
  const int fd0 = fe->region_fd(0);
  EXPECT_TRUE(
      nacked(*fe, Request::kSetMemTable,
             bytes(table).first(vhost::kMemoryTableHeaderSize + sizeof(vhost::MemoryRegion)),
             std::span(&fd0, 1)));
  // A request vpd does not know, as large as a payload may be, is drained and refused.
  const std::vector<std::byte> page(vhost::kMaxPayloadSize);
  EXPECT_TRUE(nacked(*fe, 999, page));
  // GET_CONFIG whose head disagrees with its size: the front-end waits for a body that
  // cannot be given, so vpd closes.
  vhost::ConfigHead config{0, 200, 0};
  std::vector<std::byte> short_config(vhost::kConfigHeadSize + 12);
  std::memcpy(short_config.data(), &config, sizeof config);
  ASSERT_TRUE(fe->send(Request::kGetConfig, short_config));
  EXPECT_TRUE(closed_by_vpd(fe->socket()));
  fe.reset();

  // A header announcing more than any payload may carry ends the session at once.
  fe = hostile();
  ASSERT_TRUE(fe);
  const vhost::Header huge{vhost::code(Request::kSetFeatures), vhost::kVersion, 1u << 20};
  ASSERT_EQ(::send(fe->socket(), &huge, sizeof huge, MSG_NOSIGNAL),
            static_cast<ssize_t>(sizeof huge));
  EXPECT_TRUE(closed_by_vpd(fe->socket()));
  fe.reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, missing_and_surplus_fds_are_refused_and_forty_end_the_session) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  Fd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(efd);
  const int one[] = {efd.get()};
  const int two[] = {efd.get(), efd.get()};
  const int eight[] = {efd.get(), efd.get(), efd.get(), efd.get(),
                       efd.get(), efd.get(), efd.get(), efd.get()};
  const uint64_t ring0 = 0;
  // No fd where one is needed (NOFD clear), and one where NOFD says there is none.
  EXPECT_TRUE(nacked(*fe, Request::kSetVringKick, bytes(ring0)));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringCall, bytes(ring0)));
  const uint64_t ring0_nofd = vhost::kVringNoFdMask;
  EXPECT_TRUE(nacked(*fe, Request::kSetVringCall, bytes(ring0_nofd), one));
  // A memory table of one region without its fd; a region table with two fds per region.
  vhost::MemoryTable table;
  table.nregions = 1;
  table.regions[0] = wire(*fe, 0);
  EXPECT_TRUE(nacked(*fe, Request::kSetMemTable, table_bytes(table)));
  EXPECT_TRUE(nacked(*fe, Request::kSetMemTable, table_bytes(table), two));
  // fds on requests that take none; the most one message may carry.
  const uint64_t features = fe->acked_features();
  EXPECT_TRUE(nacked(*fe, Request::kSetFeatures, bytes(features), eight));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringKick, bytes(ring0), two));

  // 40 eventfds on one message: more than the protocol allows, so the stream cannot be
  // trusted any more and the session ends; none of the 40 may stay open in vpd.
  std::vector<Fd> forty;
  std::vector<int> raw;
  for (int i = 0; i < 40; ++i) {
    forty.emplace_back(::eventfd(0, EFD_CLOEXEC));
    ASSERT_TRUE(forty.back());
    raw.push_back(forty.back().get());
  }
  const vhost::Header call{vhost::code(Request::kSetVringCall),
                           vhost::kVersion | vhost::kFlagNeedReply, sizeof ring0};
  ASSERT_TRUE(send_with_fds(fe->socket(), call, bytes(ring0), raw));
  EXPECT_TRUE(closed_by_vpd(fe->socket()));
  fe.reset();
  // The same on a connection that never negotiated, on a request vpd does not know.
  ASSERT_TRUE(wait_vp0_idle());
  auto bare = connect_unix(vpd_->runtime_dir() + "/vp0.sock");
  ASSERT_TRUE(bare);
  const vhost::Header unknown{77, vhost::kVersion, 0};
  ASSERT_TRUE(send_with_fds(bare->get(), unknown, {}, raw));
  EXPECT_TRUE(closed_by_vpd(bare->get()));
  bare->reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, fds_that_are_not_memory_files_are_refused_as_guest_memory) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  vhost::MemoryTable table;
  table.nregions = 1;
  table.regions[0] = wire(*fe, 0);
  Fd efd(::eventfd(0, EFD_CLOEXEC));
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  Fd pipe_r(pipe_fds[0]);
  Fd pipe_w(pipe_fds[1]);
  Fd zero(::open("/dev/zero", O_RDWR | O_CLOEXEC));
  Fd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  Fd small(::memfd_create("too-small", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(small.get(), 4096), 0);
  for (const auto& [what, fd] :
       {std::pair{"an eventfd", efd.get()}, std::pair{"a pipe", pipe_r.get()},
        std::pair{"/dev/zero", zero.get()}, std::pair{"a socket", sock.get()},
        std::pair{"a 4 KiB memfd for 16 MiB", small.get()}}) {
    EXPECT_TRUE(nacked(*fe, Request::kSetMemTable, table_bytes(table), std::span(&fd, 1))) << what;
  }
  // An offset past the end of the real memfd.
  table.regions[0].mmap_offset = 1ull << 40;
  const int fd0 = fe->region_fd(0);
  EXPECT_TRUE(nacked(*fe, Request::kSetMemTable, table_bytes(table), std::span(&fd0, 1)));
  // Nothing of it stuck: the real table is taken and the rings run.
  ASSERT_TRUE(fe->set_mem_table()) << vpd_->log();
  ASSERT_TRUE(fe->setup_queue(kRx, 256));
  ASSERT_TRUE(fe->setup_queue(kTx, 256));
  ASSERT_TRUE(wait_operstate_up("vp0"));
  EXPECT_EQ(arp_round_trip(*fe, kVp0Guest, 5s, true), "") << vpd_->log();
  fe.reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, overlapping_memory_regions_are_refused) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  const vhost::MemoryRegion r0 = wire(*fe, 0);
  const vhost::MemoryRegion r1 = wire(*fe, 1);
  const int fds[] = {fe->region_fd(0), fe->region_fd(1)};
  auto two = [&](vhost::MemoryRegion a, vhost::MemoryRegion b) {
    vhost::MemoryTable table;
    table.nregions = 2;
    table.regions[0] = a;
    table.regions[1] = b;
    return table;
  };
  // The second region's guest range inside the first's (its own mapping elsewhere).
  vhost::MemoryRegion gpa_inside = r1;
  gpa_inside.guest_phys_addr = r0.guest_phys_addr + (4 << 20);
  EXPECT_TRUE(nacked(*fe, Request::kSetMemTable, table_bytes(two(r0, gpa_inside)), fds));
  // The second region's front-end addresses inside the first's (the first's file, later on).
  vhost::MemoryRegion uva_inside = r1;
  uva_inside.userspace_addr = r0.userspace_addr + (4 << 20);
  uva_inside.mmap_offset = 4 << 20;
  const int same_file[] = {fe->region_fd(0), fe->region_fd(0)};
  EXPECT_TRUE(nacked(*fe, Request::kSetMemTable, table_bytes(two(r0, uva_inside)), same_file));
  // The same region twice.
  EXPECT_TRUE(nacked(*fe, Request::kSetMemTable, table_bytes(two(r0, r0)), same_file));
  // A region ending exactly where it would wrap the address space.
  vhost::MemoryRegion wraps = r1;
  wraps.guest_phys_addr = ~0ull - (1 << 20);
  EXPECT_TRUE(nacked(*fe, Request::kSetMemTable, table_bytes(two(r0, wraps)), fds));
  // ADD_MEM_REG of a region that overlaps one already in the table.
  ASSERT_TRUE(fe->set_mem_table()) << vpd_->log();
  if (fe->acked_protocol_features() & vhost::bit(vhost::ProtocolFeature::kConfigureMemSlots)) {
    auto again = fe->add_mem_reg(0);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, "vhost-nack");
    const vhost::SingleMemoryRegion overlapping{0, gpa_inside};
    EXPECT_TRUE(nacked(*fe, Request::kAddMemReg, bytes(overlapping), std::span(&fds[1], 1)));
  }
  ASSERT_TRUE(fe->setup_queue(kRx, 256));
  ASSERT_TRUE(fe->setup_queue(kTx, 256));
  ASSERT_TRUE(wait_operstate_up("vp0"));
  EXPECT_EQ(arp_round_trip(*fe, kVp0Guest, 5s, true), "") << vpd_->log();
  fe.reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, ring_addresses_outside_guest_memory_are_refused) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  ASSERT_TRUE(fe->set_mem_table()) << vpd_->log();
  ASSERT_TRUE(fe->request(Request::kSetVringNum, bytes(vhost::VringState{kRx, 256})));
  const uint64_t base = fe->region_uva(0);
  const uint64_t end = base + fe->region(0).size;
  const vhost::VringAddr good{kRx, 0, base, base + 0x2000, base + 0x1000, 0};
  auto with = [&](auto change) {
    vhost::VringAddr a = good;
    change(a);
    return a;
  };
  const vhost::VringAddr cases[] = {
      with([](auto& a) { a.desc_user_addr = 0x1000; }),          // below every region
      with([&](auto& a) { a.desc_user_addr = end - 16; }),       // runs past the region's end
      with([&](auto& a) { a.used_user_addr = end; }),            // just past the end
      with([](auto& a) { a.avail_user_addr = ~0ull - 8; }),      // wraps the address space
      with([&](auto& a) { a.used_user_addr = base + 0x2002; }),  // misaligned used ring
      with([](auto& a) { a.flags = 2; }),                        // an undefined flag bit
  };
  for (const auto& addr : cases) {
    EXPECT_TRUE(nacked(*fe, Request::kSetVringAddr, bytes(addr)))
        << std::hex << addr.desc_user_addr << " " << addr.avail_user_addr << " "
        << addr.used_user_addr;
  }
  // A chain that points outside guest memory once the ring runs: given back, nothing sent.
  ASSERT_TRUE(fe->setup_queue(kRx, 256));
  ASSERT_TRUE(fe->setup_queue(kTx, 256));
  auto tx_packets = [&] {
    return vpd_->ctl_json({"vp0"})["status"]["counters"].value("tx_packets", uint64_t{0});
  };
  const uint64_t sent_before = tx_packets();
  const Segment outside[] = {{0x7000'0000'0000ull, 64, false}};
  ASSERT_TRUE(fe->post_chain(kTx, outside));
  ASSERT_TRUE(fe->kick(kTx));
  std::optional<UsedBuffer> returned;
  for (int i = 0; i < 1000 && !returned; ++i) {
    returned = fe->next_used(kTx);
    if (!returned) std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(returned) << "the chain is given back\n" << vpd_->log();
  EXPECT_EQ(returned->len, 0u);
  EXPECT_EQ(tx_packets(), sent_before) << "nothing reached the TAP";
  const auto session = vpd_->ctl_json({"vp0"})["status"]["session"];
  EXPECT_EQ(session.value("broken_queues", nlohmann::json::array()).size(), 0u) << session.dump();
  ASSERT_TRUE(wait_operstate_up("vp0"));
  EXPECT_EQ(arp_round_trip(*fe, kVp0Guest, 5s, true), "") << vpd_->log();
  fe.reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, queue_index_out_of_range_is_refused) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  ASSERT_TRUE(fe->set_mem_table());
  Fd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int one[] = {efd.get()};
  EXPECT_TRUE(nacked(*fe, Request::kSetVringNum, bytes(vhost::VringState{2, 256})));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringNum, bytes(vhost::VringState{0xffffffffu, 256})));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringBase, bytes(vhost::VringState{1000, 0})));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringEnable, bytes(vhost::VringState{7, 1})));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringAddr, bytes(vhost::VringAddr{2, 0, 0, 0, 0, 0})));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringKick, bytes(uint64_t{255}), one));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringCall, bytes(uint64_t{2}), one));
  EXPECT_TRUE(nacked(*fe, Request::kSetVringErr, bytes(uint64_t{3}), one));
  // GET_VRING_BASE must be answered with a base; there is none for ring 2, so vpd closes.
  ASSERT_TRUE(fe->send(Request::kGetVringBase, bytes(vhost::VringState{2, 0})));
  EXPECT_TRUE(closed_by_vpd(fe->socket()));
  fe.reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, mem_table_replaced_while_queues_run) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  ASSERT_TRUE(fe->set_mem_table());
  ASSERT_TRUE(fe->setup_queue(kRx, 256));
  ASSERT_TRUE(fe->setup_queue(kTx, 256));
  ASSERT_TRUE(wait_operstate_up("vp0"));
  ASSERT_EQ(arp_round_trip(*fe, kVp0Guest, 5s, true), "") << vpd_->log();
  // The kernel keeps sending to the guest while the table changes under the rings.
  ASSERT_TRUE(sh("ip neigh replace 10.98.0.2 lladdr 52:54:00:00:00:02 dev vp0 nud permanent"));
  Fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  to.sin_addr.s_addr = htonl(0x0a620002);  // 10.98.0.2
  // A table without region 0, which holds the rings: accepted, but the rings cannot start.
  vhost::MemoryTable only_region1;
  only_region1.nregions = 1;
  only_region1.regions[0] = wire(*fe, 1);
  const int fd1 = fe->region_fd(1);
  for (int i = 0; i < 50; ++i) {
    for (int j = 0; j < 8; ++j) {
      (void)::sendto(udp.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    }
    while (fe->next_used(kRx)) {
    }
    while (fe->outstanding(kRx) < 32 && fe->post_rx(kRx)) {
    }
    (void)fe->kick(kRx);
    if (i % 10 == 9) {
      ASSERT_TRUE(fe->request(Request::kSetMemTable, table_bytes(only_region1), std::span(&fd1, 1)))
          << vpd_->log();
      EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"]["session"].value("queues_running", 99), 0)
          << "rings outside the new memory stay stopped";
    }
    ASSERT_TRUE(fe->set_mem_table()) << "table " << i << "\n" << vpd_->log();
  }
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"]["session"].value("queues_running", 0), 2);
  ASSERT_TRUE(wait_operstate_up("vp0"));
  EXPECT_EQ(arp_round_trip(*fe, kVp0Guest, 5s, true), "") << vpd_->log();
  fe.reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, connect_disconnect_storm_of_a_thousand) {
  const std::string path = vpd_->runtime_dir() + "/vp0.sock";
  const vhost::Header get_features{vhost::code(Request::kGetFeatures), vhost::kVersion, 0};
  const auto deadline = steady_clock::now() + 60s;
  int done = 0;
  for (; done < 1000 && steady_clock::now() < deadline; ++done) {
    auto c = connect_unix(path);
    ASSERT_TRUE(c) << "connect " << done << ": " << c.error().message << "\n" << vpd_->log();
    // Some close at once, some after a request whose reply they never read, some inside a
    // header.
    if (done % 3 == 1) {
      (void)::send(c->get(), &get_features, sizeof get_features, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else if (done % 3 == 2) {
      (void)::send(c->get(), &get_features, 6, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  }
  EXPECT_EQ(done, 1000) << "the storm took more than 60 s";
  EXPECT_TRUE(vpd_->alive()) << vpd_->log();
  expect_unharmed();
}

TEST_F(HostileFrontend, connect_storm_against_a_connected_endpoint_leaves_its_session_alone) {
  auto fe = attach_good("vp0");
  ASSERT_TRUE(fe);
  ASSERT_EQ(arp_round_trip(*fe, kVp0Guest, 5s, true), "") << vpd_->log();
  auto sessions = [&] {
    return vpd_->ctl_json({"vp0"})["status"]["session"].value("sessions", uint64_t{0});
  };
  const uint64_t sessions_before = sessions();
  const std::string path = vpd_->runtime_dir() + "/vp0.sock";
  const vhost::Header reset{vhost::code(Request::kResetOwner), vhost::kVersion, 0};
  const auto deadline = steady_clock::now() + 60s;
  int done = 0;
  for (; done < 1000 && steady_clock::now() < deadline; ++done) {
    auto c = connect_unix(path);
    ASSERT_TRUE(c) << "connect " << done << ": " << c.error().message << "\n" << vpd_->log();
    // A request that would reset the device, had it reached the session.
    (void)::send(c->get(), &reset, sizeof reset, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  EXPECT_EQ(done, 1000) << "the storm took more than 60 s";
  EXPECT_EQ(sessions(), sessions_before) << "every connection was turned away";
  // Logged one by one only the first few of every 10 s; the rest summed once each interval
  // is over.
  for (int i = 0; i < 300 && vpd_->log().find("more refused connections on vp0 in the last 10 s") ==
                                 std::string::npos;
       ++i) {
    std::this_thread::sleep_for(100ms);
  }
  const std::string log = vpd_->log();
  EXPECT_NE(log.find("more refused connections on vp0 in the last 10 s"), std::string::npos);
  size_t one_by_one = 0;
  for (size_t at = log.find("one is connected"); at != std::string::npos;
       at = log.find("one is connected", at + 1)) {
    ++one_by_one;
  }
  EXPECT_LE(one_by_one, 5u * 7) << "at most 5 per 10 s interval of the (at most 60 s) storm";
  EXPECT_EQ(vpd_->ctl_json({"vp0"})["status"]["session"].value("queues_running", 0), 2);
  EXPECT_EQ(arp_round_trip(*fe, kVp0Guest, 5s, true), "") << vpd_->log();
  fe.reset();
  expect_unharmed();
}

TEST_F(HostileFrontend, frontend_that_never_reads_replies_costs_vpd_neither_memory_nor_cpu) {
  auto fe = hostile();
  ASSERT_TRUE(fe);
  const pid_t pid = vpd_->pid();
  const long rss_start = rss_kib(pid);
  // GET_FEATURES needs a reply; send until the socket stays full for half a second.
  const vhost::Header get_features{vhost::code(Request::kGetFeatures), vhost::kVersion, 0};
  size_t sent = 0;
  const auto deadline = steady_clock::now() + 30s;
  while (steady_clock::now() < deadline) {
    const ssize_t n =
        ::send(fe->socket(), &get_features, sizeof get_features, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(sizeof get_features)) {
      ++sent;
      continue;
    }
    ASSERT_TRUE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        << "vpd closed or broke the stream: " << std::strerror(errno);
    pollfd p{fe->socket(), POLLOUT, 0};
    if (::poll(&p, 1, 500) == 0) break;
  }
  ASSERT_LT(steady_clock::now(), deadline) << "vpd kept reading without bound (" << sent << ")";
  EXPECT_GT(sent, 0u);
  // Stalled: vpd must wait for the front-end, not spin on the requests it cannot answer.
  const long ticks_before = cpu_ticks(pid);
  const auto t0 = steady_clock::now();
  std::this_thread::sleep_for(2s);
  const long ticks = cpu_ticks(pid) - ticks_before;
  const double seconds = std::chrono::duration<double>(steady_clock::now() - t0).count();
  const long hz = ::sysconf(_SC_CLK_TCK);
  std::printf("[ measured ] %zu requests queued; vpd used %ld ticks in %.2f s while stalled\n",
              sent, ticks, seconds);
  EXPECT_LT(static_cast<double>(ticks), 0.25 * seconds * static_cast<double>(hz))
      << "vpd busy while the front-end reads nothing";
  EXPECT_LE(rss_kib(pid), rss_start + kRssSlackKiB);
  // Control and vp1 are served meanwhile (the traffic thread); the session still works once
  // the front-end reads: every queued request gets its answer, in order.
  EXPECT_EQ(vpd_->ctl({"vp0"}).status, 0);
  size_t answered = 0;
  for (; answered < sent; ++answered) {
    auto r = fe->wait_reply(Request::kGetFeatures);
    ASSERT_TRUE(r) << answered << " of " << sent << ": " << r.error().message;
  }
  EXPECT_TRUE(fe->sync());
  fe.reset();
  expect_unharmed();
}

}  // namespace
}  // namespace vp::test
