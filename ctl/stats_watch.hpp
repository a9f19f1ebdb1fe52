#pragma once

#include <ctime>
#include <string>

#include <nlohmann/json.hpp>

namespace vp::ctl {

/// `vpctl vp0 stats -i SECONDS`: what moved between two views of an endpoint taken `seconds`
/// apart (`now` is when the later one was taken):
/// {"endpoint", "time" (RFC 3339, UTC), "seconds", "restarted", "delta": {counter: count},
///  "per_second": {counter: rate}, "counters": {counter: value}}.
/// A counter that went down means a new session started counting from zero: the interval is
/// then measured from zero ("restarted": true) rather than shown as negative.
nlohmann::json stats_interval_json(const nlohmann::json& before, const nlohmann::json& after,
                                   double seconds, std::time_t now);

/// The header printed once, above the interval lines: the columns and which way tx and rx go.
std::string format_stats_interval_header(const std::string& endpoint, double interval);
/// One line per interval from stats_interval_json(): packets and Mbit/s each way, drops per
/// second, then every other counter that moved, as "name +N".
std::string format_stats_interval(const nlohmann::json& interval);

}  // namespace vp::ctl
