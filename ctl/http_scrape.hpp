#pragma once

// `vpctl metrics --http`: answers one HTTP request on stdin/stdout with `vpctl metrics`, so that
// systemd's socket activation (systemd/vpd-metrics.socket, Accept=yes) serves Prometheus
// scrapes without an HTTP server inside vpd. One process per scrape, one request per
// connection (Connection: close); GET and HEAD of /metrics only.

#include <functional>
#include <string>
#include <string_view>

namespace vp::ctl {

/// What the head of a request (request line and headers) asks for.
enum class ScrapeAsk {
  kMetrics,     ///< GET /metrics (a query string is ignored)
  kHead,        ///< HEAD /metrics: the headers only
  kNotFound,    ///< another path
  kBadMethod,   ///< another method
  kBadRequest,  ///< not an HTTP/1.x request line
};

/// Classifies the request line of `head` (the bytes up to the blank line).
ScrapeAsk parse_scrape_request(std::string_view head);

/// The body of an answer and its status: 200 with the exposition, or an error with a
/// sentence; `metrics` is called only for kMetrics and kHead.
struct ScrapeAnswer {
  int status = 200;
  std::string body;
};
/// The body source: the Prometheus text of every endpoint, or the sentence why vpd gave none.
using MetricsSource = std::function<bool(std::string& body_or_error)>;
ScrapeAnswer answer_scrape(ScrapeAsk ask, const MetricsSource& metrics);

/// A whole HTTP/1.1 response: status line, Content-Type (Prometheus' text format 0.0.4 for
/// 200, plain text otherwise), Content-Length, Connection: close; the body unless `head_only`.
std::string http_response(const ScrapeAnswer& answer, bool head_only);

/// Reads one request head from `in_fd` (at most kMaxHead bytes, within `timeout_ms`), answers
/// it on `out_fd`. Returns vpctl's exit status: 0 when a 200 went out, 1 otherwise.
inline constexpr size_t kMaxScrapeHead = 8192;
int serve_scrape(int in_fd, int out_fd, int timeout_ms, const MetricsSource& metrics);

}  // namespace vp::ctl
