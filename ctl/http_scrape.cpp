#include "ctl/http_scrape.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "sys/str.hpp"

namespace vp::ctl {

ScrapeAsk parse_scrape_request(std::string_view head) {
  const size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol == std::string_view::npos ? head.find('\n') : eol);
  // METHOD SP TARGET SP HTTP/1.x
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return ScrapeAsk::kBadRequest;
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return ScrapeAsk::kBadRequest;
  }
  const std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!version.starts_with("HTTP/1.") || version.size() != 8 || target.empty()) {
    return ScrapeAsk::kBadRequest;
  }
  if (method != "GET" && method != "HEAD") return ScrapeAsk::kBadMethod;
  if (const size_t q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  if (target != "/metrics") return ScrapeAsk::kNotFound;
  return method == "HEAD" ? ScrapeAsk::kHead : ScrapeAsk::kMetrics;
}

ScrapeAnswer answer_scrape(ScrapeAsk ask, const MetricsSource& metrics) {
  switch (ask) {
    case ScrapeAsk::kMetrics:
    case ScrapeAsk::kHead: {
      ScrapeAnswer a;
      // vpd not running, or it refused: 503, so that Prometheus records the target as down.
      if (!metrics(a.body)) a.status = 503;
      return a;
    }
    case ScrapeAsk::kNotFound:
      return {404, "vpd's metrics are at /metrics\n"};
    case ScrapeAsk::kBadMethod:
      return {405, "only GET and HEAD of /metrics are served\n"};
    case ScrapeAsk::kBadRequest:
      break;
  }
  return {400, "not an HTTP/1.x request\n"};
}

std::string http_response(const ScrapeAnswer& answer, bool head_only) {
  const char* reason = answer.status == 200   ? "OK"
                       : answer.status == 400 ? "Bad Request"
                       : answer.status == 404 ? "Not Found"
                       : answer.status == 405 ? "Method Not Allowed"
                                              : "Service Unavailable";
  std::string out = str("HTTP/1.1 ", answer.status, " ", reason, "\r\n");
  out += answer.status == 200 ? "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                              : "Content-Type: text/plain; charset=utf-8\r\n";
  if (answer.status == 405) out += "Allow: GET, HEAD\r\n";
  out += str("Content-Length: ", answer.body.size(), "\r\n");
  out += "Connection: close\r\n\r\n";
  if (!head_only) out += answer.body;
  return out;
}

namespace {

// Reads until the blank line that ends the head, kMaxScrapeHead bytes or the deadline.
// False when none came whole.
bool read_head(int fd, int timeout_ms, std::string& head) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[1024];
  while (head.find("\r\n\r\n") == std::string::npos && head.find("\n\n") == std::string::npos) {
    if (head.size() >= kMaxScrapeHead) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    const ssize_t n = ::read(fd, buf, std::min(sizeof buf, kMaxScrapeHead - head.size()));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return false;
    head.append(buf, static_cast<size_t>(n));
  }
  return true;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

int serve_scrape(int in_fd, int out_fd, int timeout_ms, const MetricsSource& metrics) {
  std::string head;
  // A client that sends nothing whole in time gets nothing: there is no request to answer.
  if (!read_head(in_fd, timeout_ms, head)) {
    if (head.size() >= kMaxScrapeHead) {
      (void)write_all(out_fd, http_response({400, "the request head is too long\n"}, false));
    }
    return 1;
  }
  const ScrapeAsk ask = parse_scrape_request(head);
  const ScrapeAnswer answer = answer_scrape(ask, metrics);
  const bool sent = write_all(out_fd, http_response(answer, ask == ScrapeAsk::kHead));
  return sent && answer.status == 200 ? 0 : 1;
}

}  // namespace vp::ctl
