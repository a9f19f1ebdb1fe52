#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace vp::ctl {

/// `vpctl list`: one aligned row per endpoint.
std::string format_list(const nlohmann::json& endpoints);
/// `vpctl vp0`: one "key: value" line per setting and status item.
std::string format_show(const nlohmann::json& endpoint);
/// `vpctl vp0 stats`: the data path's counters, one per line.
std::string format_stats(const nlohmann::json& endpoint);
/// `vpctl vp0 qemu-args`: the VMM options that attach a guest to the endpoint, for QEMU
/// and for cloud-hypervisor.
std::string format_vmm_args(const nlohmann::json& endpoint);

/// `vpctl monitor`: one event (the protocol's event object) as one line:
/// "TIME ENDPOINT TYPE: MESSAGE", control characters shown as '?'; "-" for no endpoint.
std::string format_event(const nlohmann::json& event);

/// `vpctl --json vp0 qemu-args`: {"endpoint", "transport", "guest_mac", "shared_memory",
/// "qemu": {"args": [argv words], "notes": [...]}, "cloud_hypervisor": {...} (vhost-user)}.
nlohmann::json vmm_args_json(const nlohmann::json& endpoint);
/// `vpctl --json vp0 stats`: {"endpoint", "transport", "guest", "link_state", "counters"
/// (absent for transport=tap), "session" (while one runs), "refused_peers"}.
nlohmann::json stats_json(const nlohmann::json& endpoint);

}  // namespace vp::ctl
