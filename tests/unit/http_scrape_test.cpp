#include "ctl/http_scrape.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace vp::ctl {
namespace {

TEST(ParseScrapeRequest, get_and_head_of_metrics_are_scrapes) {
  EXPECT_EQ(parse_scrape_request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), ScrapeAsk::kMetrics);
  EXPECT_EQ(parse_scrape_request("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), ScrapeAsk::kMetrics);
  EXPECT_EQ(parse_scrape_request("HEAD /metrics HTTP/1.1\r\n\r\n"), ScrapeAsk::kHead);
}

TEST(ParseScrapeRequest, other_paths_methods_and_garbage_are_told_apart) {
  EXPECT_EQ(parse_scrape_request("GET / HTTP/1.1\r\n\r\n"), ScrapeAsk::kNotFound);
  EXPECT_EQ(parse_scrape_request("GET /metrics/x HTTP/1.1\r\n\r\n"), ScrapeAsk::kNotFound);
  EXPECT_EQ(parse_scrape_request("POST /metrics HTTP/1.1\r\n\r\n"), ScrapeAsk::kBadMethod);
  EXPECT_EQ(parse_scrape_request("GET /metrics\r\n\r\n"), ScrapeAsk::kBadRequest);
  EXPECT_EQ(parse_scrape_request("GET /metrics HTTP/2.0\r\n\r\n"), ScrapeAsk::kBadRequest);
  EXPECT_EQ(parse_scrape_request("GET  /metrics HTTP/1.1\r\n\r\n"), ScrapeAsk::kBadRequest);
  EXPECT_EQ(parse_scrape_request("\r\n\r\n"), ScrapeAsk::kBadRequest);
}

TEST(AnswerScrape, vpd_unreachable_is_503_with_the_sentence) {
  const ScrapeAnswer a = answer_scrape(ScrapeAsk::kMetrics, [](std::string& body) {
    body = "vpd is not reachable at /run/vpd/control.sock\n";
    return false;
  });
  EXPECT_EQ(a.status, 503);
  EXPECT_EQ(a.body, "vpd is not reachable at /run/vpd/control.sock\n");
}

TEST(AnswerScrape, errors_never_ask_vpd) {
  bool asked = false;
  const MetricsSource source = [&](std::string&) { return asked = true; };
  EXPECT_EQ(answer_scrape(ScrapeAsk::kNotFound, source).status, 404);
  EXPECT_EQ(answer_scrape(ScrapeAsk::kBadMethod, source).status, 405);
  EXPECT_EQ(answer_scrape(ScrapeAsk::kBadRequest, source).status, 400);
  EXPECT_FALSE(asked);
}

TEST(HttpResponse, a_scrape_has_the_exposition_type_and_its_length) {
  const std::string r = http_response({200, "vpd_up 1\n"}, false);
  EXPECT_EQ(r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: 9\r\nConnection: close\r\n\r\nvpd_up 1\n");
  const std::string head = http_response({200, "vpd_up 1\n"}, true);
  EXPECT_EQ(head.find("vpd_up"), std::string::npos);
  EXPECT_NE(head.find("Content-Length: 9\r\n"), std::string::npos);
  EXPECT_NE(http_response({405, "x\n"}, false).find("Allow: GET, HEAD\r\n"), std::string::npos);
}

// serve_scrape over a real socket pair: the request arrives in two parts, the answer whole.
TEST(ServeScrape, answers_a_request_that_arrives_in_parts) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  const std::string part1 = "GET /metr", part2 = "ics HTTP/1.1\r\nHost: h\r\n\r\n";
  ASSERT_EQ(::write(sv[1], part1.data(), part1.size()), static_cast<ssize_t>(part1.size()));
  ASSERT_EQ(::write(sv[1], part2.data(), part2.size()), static_cast<ssize_t>(part2.size()));
  const int rc = serve_scrape(sv[0], sv[0], 1000, [](std::string& body) {
    body = "vpd_endpoints 2\n";
    return true;
  });
  EXPECT_EQ(rc, 0);
  ::shutdown(sv[0], SHUT_WR);
  std::string got;
  char buf[512];
  for (ssize_t n; (n = ::read(sv[1], buf, sizeof buf)) > 0;)
    got.append(buf, static_cast<size_t>(n));
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got;
  EXPECT_EQ(got.substr(got.size() - 16), "vpd_endpoints 2\n");
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(ServeScrape, a_client_that_sends_no_whole_head_gets_nothing_in_time) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_EQ(::write(sv[1], "GET /metrics", 12), 12);
  bool asked = false;
  const int rc = serve_scrape(sv[0], sv[0], 50, [&](std::string&) { return asked = true; });
  EXPECT_EQ(rc, 1);
  EXPECT_FALSE(asked);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(ServeScrape, an_endless_head_is_refused_400) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  const std::string junk(kMaxScrapeHead + 100, 'a');
  ASSERT_EQ(::write(sv[1], junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  EXPECT_EQ(serve_scrape(sv[0], sv[0], 1000, [](std::string&) { return true; }), 1);
  char buf[64] = {};
  ASSERT_GT(::read(sv[1], buf, sizeof buf - 1), 0);
  EXPECT_EQ(std::string(buf).rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << buf;
  ::close(sv[0]);
  ::close(sv[1]);
}

}  // namespace
}  // namespace vp::ctl
