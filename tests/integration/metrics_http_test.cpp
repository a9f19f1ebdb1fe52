// `vpctl metrics --http` behind socket activation, as systemd/vpd-metrics.socket runs it
// (systemd-socket-activate --accept --inetd stands in for PID 1), scraped over TCP on the test
// namespace's loopback: by hand (status, headers, errors) and by Prometheus itself.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
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

constexpr uint16_t kScrapePort = 19477;
constexpr uint16_t kPrometheusPort = 19090;

// Sends `request` to 127.0.0.1:port and returns all that comes back before the peer closes
// (or 10 s); "" when nothing listens.
std::string http_exchange(uint16_t port, const std::string& request) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return "";
  }
  std::string out;
  char buf[4096];
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string get(uint16_t port, const std::string& target) {
  return http_exchange(
      port, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

std::string body_of(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

class MetricsHttp : public VpdFixture {
 protected:
  void SetUp() override {
    VpdFixture::SetUp();
    for (const char* tool : {"/usr/bin/systemd-socket-activate", "/usr/bin/prometheus"}) {
      ASSERT_EQ(::access(tool, X_OK), 0)
          << tool << " is missing: scripts/install-deps --tests installs it (systemd, prometheus)";
    }
  }

  /// Socket activation as vpd-metrics.socket does it: one `vpctl metrics --http` per
  /// connection, the connection as its stdin and stdout.
  std::unique_ptr<Child> activate() {
    auto child = std::make_unique<Child>(std::vector<std::string>{
        "/usr/bin/systemd-socket-activate", "--listen=127.0.0.1:" + std::to_string(kScrapePort),
        "--accept", "--inetd", "--setenv=VPD_SOCKET=" + vpd().socket(), VPCTL_BINARY, "metrics",
        "--http"});
    // Listening is enough: a test connection would start a scrape.
    const std::string listening =
        "ss -Htln 'sport = :" + std::to_string(kScrapePort) + "' | grep -q LISTEN";
    for (int i = 0; i < 250 && !sh(listening); ++i) std::this_thread::sleep_for(20ms);
    return child;
  }
};

TEST_F(MetricsHttp, a_get_of_metrics_is_the_exposition_and_promtool_accepts_it) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "up"});
  ok({"vp1", "create", "transport=stream", "peerfeats=0"});
  const auto activated = activate();

  const std::string r = get(kScrapePort, "/metrics");
  ASSERT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_TRUE(contains(r, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n")) << r;
  const std::string body = body_of(r);
  EXPECT_TRUE(contains(r, "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n")) << r;
  EXPECT_TRUE(contains(body, "vpd_endpoints 2\n")) << body;
  EXPECT_TRUE(contains(body, "vpd_guest_state{endpoint=\"vp1\",state=\"listening\"} 1\n")) << body;
  const std::string file = path("scraped.prom");
  std::ofstream(file) << body;
  const Output check = run({"sh", "-c", "promtool check metrics < " + file});
  EXPECT_EQ(check.status, 0) << check.out << check.err;
  EXPECT_EQ(check.out + check.err, "") << "promtool found problems:\n" << check.out << check.err;

  // HEAD: the same headers, no body.
  const std::string head =
      http_exchange(kScrapePort, "HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_EQ(body_of(head), "") << head;
}

TEST_F(MetricsHttp, wrong_requests_get_their_status_and_vpd_down_is_503) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create"});
  const auto activated = activate();

  const std::string root = get(kScrapePort, "/");
  EXPECT_EQ(root.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u) << root;
  EXPECT_EQ(body_of(root), "vpd's metrics are at /metrics\n");
  const std::string post =
      http_exchange(kScrapePort, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << post;
  EXPECT_TRUE(contains(post, "\r\nAllow: GET, HEAD\r\n")) << post;
  const std::string junk = http_exchange(kScrapePort, "hello\r\n\r\n");
  EXPECT_EQ(junk.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << junk;

  // vpd stopped: the scrape says so with 503, which Prometheus records as the target down.
  EXPECT_EQ(vpd().stop(), 0);
  const std::string down = get(kScrapePort, "/metrics");
  EXPECT_EQ(down.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << down;
  EXPECT_EQ(body_of(down), "vpd is not reachable at " + vpd().socket() + "\n") << down;
  EXPECT_TRUE(activated->running()) << "one failed scrape must not stop the listener";
}

// Prometheus itself: its scraper parses the answer, records up == 1 and vpd's samples.
TEST_F(MetricsHttp, prometheus_scrapes_vpd_and_stores_its_samples) {
  ASSERT_EQ(vpd().start(), "");
  ok({"vp0", "create", "up"});
  ok({"vp1", "create"});
  ok({"vp2", "create"});
  const auto activated = activate();

  const std::string config = path("prometheus.yml");
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                           "scrape_configs:\n  - job_name: vpd\n    static_configs:\n"
                           "      - targets: ['127.0.0.1:"
                        << kScrapePort << "']\n";
  Child prometheus(
      {"/usr/bin/prometheus", "--config.file=" + config, "--storage.tsdb.path=" + path("tsdb"),
       "--web.listen-address=127.0.0.1:" + std::to_string(kPrometheusPort), "--log.level=error"});
  // Until Prometheus has scraped vpd at least once (within about 30 s; it scrapes every 1 s).
  std::string up, endpoints;
  for (int i = 0; i < 150 && (!contains(up, "\"1\"]") || !contains(endpoints, "\"3\"]")); ++i) {
    std::this_thread::sleep_for(200ms);
    up = body_of(get(kPrometheusPort, "/api/v1/query?query=up%7Bjob%3D%22vpd%22%7D"));
    endpoints = body_of(get(kPrometheusPort, "/api/v1/query?query=vpd_endpoints"));
  }
  // The answer's value is [time, "value"].
  EXPECT_TRUE(contains(up, "\"1\"]")) << "up{job=\"vpd\"}: " << up;
  EXPECT_TRUE(contains(endpoints, "\"3\"]")) << "vpd_endpoints: " << endpoints;
  const std::string state = body_of(get(
      kPrometheusPort,
      "/api/v1/query?query=vpd_guest_state%7Bendpoint%3D%22vp0%22%2Cstate%3D%22listening%22%7D"));
  EXPECT_TRUE(contains(state, "\"1\"]")) << state;
}

}  // namespace
}  // namespace vp::test
