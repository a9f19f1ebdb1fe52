#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace vp::ctl {

/// `vpctl metrics`: every endpoint of a `list` answer (counters, state, session) in the
/// Prometheus text exposition format 0.0.4. Counters are `vpd_<name>_total`; the data path's
/// counters carry `direction` ("from_guest": guest to TAP, "to_guest": TAP to guest); states
/// are gauges (an enum is one series per value, 1 for the current one). Every family has its
/// `# HELP` and `# TYPE` once, with all its samples under it.
std::string format_metrics(const nlohmann::json& endpoints);

}  // namespace vp::ctl
