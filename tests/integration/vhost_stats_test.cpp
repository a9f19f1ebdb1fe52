// What vpctl shows of a live vhost-user session: `vpctl vp0` and `vpctl vp0 stats`.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/harness.hpp"
#include "support/vhost_frontend.hpp"
#include "sys/fd.hpp"
#include "vhost/messages.hpp"
#include "virtio/queue.hpp"

namespace vp::test {
namespace {

// The value after "key:" on its line of vpctl's key: value output.
std::string value_of(const std::string& text, const std::string& key) {
  size_t at = text.rfind(key + ":", 0) == 0 ? 0 : text.find("\n" + key + ":");
  if (at == std::string::npos) return "<no " + key + ">";
  if (at) ++at;
  std::string line = text.substr(at + key.size() + 1, text.find('\n', at) - at - key.size() - 1);
  return line.substr(line.find_first_not_of(' '));
}

TEST(VhostSessionView, show_and_stats_report_the_live_session) {
  ASSERT_EQ(enter_private_netns(), "");
  TempDir dir;
  Vpd vpd(dir.path());
  ASSERT_EQ(vpd.start(), "");
  ASSERT_EQ(vpd.ctl({"vp0", "create", "address=10.96.0.1/24", "up"}).status, 0);
  EXPECT_EQ(value_of(vpd.ctl({"vp0", "stats"}).out, "guest"),
            "listening on " + vpd.runtime_dir() + "/vp0.sock");

  auto fe = VhostFrontend::connect(vpd.runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
  ASSERT_TRUE(fe) << fe.error().message;
  ASSERT_TRUE((*fe)->negotiate(~virtio::kFeatureRingPacked, ~0ull));
  ASSERT_TRUE((*fe)->set_mem_table());
  ASSERT_TRUE((*fe)->setup_queue(0, 64));
  ASSERT_TRUE((*fe)->setup_queue(1, 64));
  // One frame from the guest: 12 header bytes and a broadcast Ethernet frame.
  std::vector<std::byte> frame(12 + 60, std::byte{0});
  std::memset(frame.data() + 12, 0xff, 6);
  frame[12 + 6] = std::byte{0x52};
  frame[12 + 12] = std::byte{0x88};  // a local experimental EtherType: the kernel ignores it
  frame[12 + 13] = std::byte{0xb5};
  ASSERT_TRUE((*fe)->post_tx(1, frame));
  ASSERT_TRUE((*fe)->kick(1));
  for (int i = 0; i < 500 && !(*fe)->next_used(1); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  const std::string show = vpd.ctl({"vp0"}).out;
  EXPECT_EQ(value_of(show, "guest"), "connected") << show;
  EXPECT_NE(value_of(show, "negotiated").find("VERSION_1"), std::string::npos) << show;
  EXPECT_EQ(value_of(show, "ring"), "split") << show;
  EXPECT_EQ(value_of(show, "queues running"), "2 of 2") << show;
  EXPECT_EQ(value_of(show, "link"), "up, carrier on") << show;

  const std::string stats = vpd.ctl({"vp0", "stats"}).out;
  EXPECT_EQ(value_of(stats, "tx_packets"), "1") << stats;
  EXPECT_EQ(value_of(stats, "tx_bytes"), "60") << stats;
  EXPECT_EQ(value_of(stats, "tx_dropped_malformed_chain"), "0") << stats;
  const auto j = vpd.ctl_json({"vp0", "stats"});
  EXPECT_EQ(j["counters"].value("tx_packets", 0), 1u) << j.dump(2);
  // Counters only the stream transport can move are left out; vhost-user's own are there.
  for (const char* stream_only :
       {"stream_bad_length", "stream_truncated", "stream_peer_full", "rx_dropped_offload"}) {
    EXPECT_FALSE(j["counters"].contains(stream_only)) << stream_only << ": " << j.dump(2);
  }
  EXPECT_TRUE(j["counters"].contains("kicks")) << j.dump(2);
  EXPECT_TRUE(j["counters"].contains("dirty_pages_logged")) << j.dump(2);
}

// A broadcast frame with a local experimental EtherType (the kernel ignores it), behind a
// 12-byte virtio-net header.
std::vector<std::byte> experimental_frame() {
  std::vector<std::byte> frame(12 + 60, std::byte{0});
  std::memset(frame.data() + 12, 0xff, 6);
  frame[12 + 6] = std::byte{0x52};
  frame[12 + 12] = std::byte{0x88};
  frame[12 + 13] = std::byte{0xb5};
  return frame;
}

// `vpctl vp0 stats -i 1 -c 3`: each line says what moved in its interval. Frames sent after
// the first line was printed show up, all of them, in the deltas of the next two lines, and
// each line's counters are the one before's plus its delta.
TEST(VhostSessionView, stats_interval_lines_count_what_moved_between_views) {
  ASSERT_EQ(enter_private_netns(), "");
  TempDir dir;
  Vpd vpd(dir.path());
  ASSERT_EQ(vpd.start(), "");
  ASSERT_EQ(vpd.ctl({"vp0", "create", "up"}).status, 0);
  auto fe = VhostFrontend::connect(vpd.runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
  ASSERT_TRUE(fe) << fe.error().message;
  ASSERT_TRUE((*fe)->negotiate(~virtio::kFeatureRingPacked, ~0ull));
  ASSERT_TRUE((*fe)->set_mem_table());
  ASSERT_TRUE((*fe)->setup_queue(0, 64));
  ASSERT_TRUE((*fe)->setup_queue(1, 64));

  const std::string command =
      std::string(VPCTL_BINARY) + " --socket " + vpd.socket() + " --json vp0 stats -i 1 -c 3";
  FILE* out = ::popen(command.c_str(), "r");
  ASSERT_NE(out, nullptr);
  auto next_line = [&] {
    char buf[8192];
    return std::fgets(buf, sizeof buf, out) ? nlohmann::json::parse(buf, nullptr, false)
                                            : nlohmann::json();
  };
  std::vector<nlohmann::json> lines{next_line()};
  ASSERT_TRUE(lines[0].is_object()) << lines[0].dump();
  const auto frame = experimental_frame();
  constexpr unsigned kFrames = 10;
  for (unsigned i = 0; i < kFrames; ++i) ASSERT_TRUE((*fe)->post_tx(1, frame));
  ASSERT_TRUE((*fe)->kick(1));
  unsigned used = 0;
  for (int i = 0; i < 500 && used < kFrames; ++i) {
    while ((*fe)->next_used(1)) ++used;
    if (used < kFrames) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(used, kFrames);
  lines.push_back(next_line());
  lines.push_back(next_line());
  EXPECT_EQ(::pclose(out), 0);

  uint64_t sent = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& l = lines[i];
    ASSERT_TRUE(l.is_object() && l.contains("delta")) << i << ": " << l.dump();
    EXPECT_EQ(l["endpoint"], "vp0");
    EXPECT_FALSE(l["restarted"].get<bool>()) << l.dump();
    EXPECT_GT(l["seconds"].get<double>(), 0.5) << l.dump();
    if (i > 0) {
      for (const char* key : {"tx_packets", "tx_bytes", "kicks"}) {
        EXPECT_EQ(l["counters"][key].get<uint64_t>(),
                  lines[i - 1]["counters"][key].get<uint64_t>() + l["delta"][key].get<uint64_t>())
            << key << " in line " << i;
      }
      sent += l["delta"]["tx_packets"].get<uint64_t>();
    }
  }
  EXPECT_EQ(sent, kFrames);
  EXPECT_EQ(
      lines[1]["delta"]["tx_bytes"].get<uint64_t>() + lines[2]["delta"]["tx_bytes"].get<uint64_t>(),
      kFrames * 60);

  // The text form: the header (two lines) and one line per interval, starting with the time.
  const auto text = vpd.ctl({"vp0", "stats", "-i", "0.2", "-c", "2"});
  EXPECT_EQ(text.status, 0) << text.err;
  EXPECT_EQ(text.out.rfind("vp0 every 0.2 s", 0), 0u) << text.out;
  EXPECT_EQ(std::count(text.out.begin(), text.out.end(), '\n'), 4) << text.out;
  EXPECT_NE(text.out.find("tx is guest→host"), std::string::npos) << text.out;
}

TEST(VhostSessionView, stats_interval_refuses_bad_options_and_an_endpoint_without_counters) {
  ASSERT_EQ(enter_private_netns(), "");
  TempDir dir;
  Vpd vpd(dir.path());
  ASSERT_EQ(vpd.start(), "");
  ASSERT_EQ(vpd.ctl({"vp0", "create"}).status, 0);
  for (const std::vector<std::string>& bad : {std::vector<std::string>{"vp0", "stats", "-i", "0"},
                                              {"vp0", "stats", "-i", "x"},
                                              {"vp0", "stats", "-i"},
                                              {"vp0", "stats", "-c", "0"},
                                              {"vp0", "stats", "--rate"}}) {
    const auto r = vpd.ctl(bad);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find("stats"), std::string::npos) << r.err;
  }
  const auto missing = vpd.ctl({"vp9", "stats", "-i", "1", "-c", "1"});
  EXPECT_EQ(missing.status, 1) << missing.err;
  ASSERT_EQ(vpd.ctl({"vp1", "create", "transport=tap"}).status, 0);
  const auto tap = vpd.ctl({"vp1", "stats", "-i", "1", "-c", "1"});
  EXPECT_EQ(tap.status, 1) << tap.out << tap.err;
  EXPECT_NE(tap.err.find("ip -s link show vp1"), std::string::npos) << tap.err;
}

TEST(VhostSessionView, send_rarp_announces_the_guest_mac_on_the_tap) {
  ASSERT_EQ(enter_private_netns(), "");
  TempDir dir;
  Vpd vpd(dir.path());
  ASSERT_EQ(vpd.start(), "");
  ASSERT_EQ(vpd.ctl({"vp0", "create", "up"}).status, 0);
  auto fe = VhostFrontend::connect(vpd.runtime_dir() + "/vp0.sock", VhostFrontend::Options{});
  ASSERT_TRUE(fe) << fe.error().message;
  ASSERT_TRUE((*fe)->negotiate(~virtio::kFeatureRingPacked, ~0ull));
  ASSERT_NE((*fe)->acked_protocol_features() & vhost::bit(vhost::ProtocolFeature::kRarp), 0u);
  // Watch what the kernel receives on vp0.
  Fd capture = test::packet_socket("vp0");
  ASSERT_TRUE(capture);

  const uint8_t mac[8] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0, 0};
  ASSERT_TRUE((*fe)->request(vhost::Request::kSendRarp,
                             std::as_bytes(std::span<const uint8_t>(mac, sizeof mac))));
  bool announced = false;
  for (int i = 0; i < 20 && !announced; ++i) {
    pollfd p{capture.get(), POLLIN, 0};
    if (::poll(&p, 1, 250) != 1) continue;
    uint8_t frame[2048];
    const ssize_t n = ::recv(capture.get(), frame, sizeof frame, 0);
    announced = n >= 42 && std::memcmp(frame + 6, mac, 6) == 0 && frame[12] == 0x80 &&
                frame[13] == 0x35 && std::memcmp(frame + 22, mac, 6) == 0;
  }
  EXPECT_TRUE(announced) << vpd.log();
}

}  // namespace
}  // namespace vp::test
