#pragma once

// `vpctl vp0 libvirt-xml`: the libvirt domain XML that puts a guest on an endpoint, as
// `qemu-args` gives QEMU's options: the <interface> element and, for vhost-user, the
// <memoryBacking> the domain needs (vpd maps the guest's memory, so it must be shared).

#include <string>

#include <nlohmann/json.hpp>

#include "sys/error.hpp"

namespace vp::ctl {

struct LibvirtXml {
  std::string interface;       // <interface type=...>...</interface>
  std::string memory_backing;  // <memoryBacking>...</memoryBacking>; "" when not needed
  std::string note;            // what the operator must know besides (one sentence), or ""
};

/// From an endpoint as `vpctl --json vp0` shows it. Refused (with why) for a transport
/// libvirt has no interface for.
Result<LibvirtXml> libvirt_xml(const nlohmann::json& endpoint);

/// The two elements and the note as vpctl prints them.
std::string format_libvirt_xml(const LibvirtXml& xml);

}  // namespace vp::ctl
