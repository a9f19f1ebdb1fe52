#include "ctl/libvirt_xml.hpp"

#include "sys/str.hpp"

namespace vp::ctl {

using nlohmann::json;

namespace {

std::string field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Attribute values: the five characters XML reserves.
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '\'':
        out += "&apos;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

Result<LibvirtXml> libvirt_xml(const json& e) {
  const std::string name = field(e, "name");
  const std::string transport = field(e, "transport");
  const std::string bind = field(e, "bind");
  const std::string peer = field(e, "peer");
  const std::string guest_mac = field(e, "guest_mac");
  const int64_t queues = e.value("queues", int64_t{1});
  const int64_t mtu = e.value("mtu", int64_t{1500});
  // Shared by every transport: the guest's MAC, virtio, and what the guest should be told.
  std::string common = "  <mac address='" + escape(guest_mac) + "'/>\n  <model type='virtio'/>\n";
  if (mtu != 1500) common += "  <mtu size='" + std::to_string(mtu) + "'/>\n";
  LibvirtXml x;
  if (transport == "vhost-user") {
    // bind=: vpd listens, QEMU dials (and redials after a vpd restart); peer= only: QEMU
    // listens and vpd dials.
    const bool vpd_listens = !bind.empty();
    const std::string path = vpd_listens ? bind : peer;
    x.interface = "<interface type='vhostuser'>\n" + common + "  <source type='unix' path='" +
                  escape(path) + "' mode='" + (vpd_listens ? "client" : "server") + "'>\n" +
                  "    <reconnect enabled='yes' timeout='1'/>\n  </source>\n";
    if (queues > 1) x.interface += "  <driver queues='" + std::to_string(queues) + "'/>\n";
    x.interface += "</interface>\n";
    x.memory_backing =
        "<memoryBacking>\n  <source type='memfd'/>\n  <access mode='shared'/>\n</memoryBacking>\n";
    x.note = vpd_listens
                 ? str("libvirt's QEMU must be able to open ", path,
                       ": give it the socket with `vpctl ", name,
                       " owner=libvirt-qemu group=kvm` (Debian's QEMU user); QEMU 7.2 under TCG "
                       "also needs vectors=0 on the NIC (<qemu:override>, see README)")
                 : str("QEMU listens on ", path, " and waits for vpd before the guest starts; ",
                       "QEMU 7.2 under TCG also needs vectors=0 on the NIC (<qemu:override>, "
                       "see README)");
    return x;
  }
  if (transport == "tap") {
    // The VMM opens the TAP vpd provisioned, by name; libvirt must not create or delete it.
    x.interface = "<interface type='ethernet'>\n" + common + "  <target dev='" + escape(name) +
                  "' managed='no'/>\n";
    if (queues > 1) x.interface += "  <driver queues='" + std::to_string(queues) + "'/>\n";
    x.interface += "</interface>\n";
    x.note = str("the domain's QEMU must be allowed to open ", name,
                 " (vpctl owner=/group=) and run in the network namespace that holds it");
    return x;
  }
  return fail("unsupported", str(name, " is transport=", transport,
                                 ", and libvirt has no interface for QEMU's -netdev stream; use "
                                 "transport=vhost-user (libvirt's <interface type='vhostuser'>) or "
                                 "transport=tap (<interface type='ethernet'>)"));
}

std::string format_libvirt_xml(const LibvirtXml& x) {
  std::string out = "<!-- in <devices>: -->\n" + x.interface;
  if (!x.memory_backing.empty()) out += "<!-- in <domain>: -->\n" + x.memory_backing;
  if (!x.note.empty()) {
    // "--" may not appear inside an XML comment.
    std::string note = x.note;
    for (size_t at = note.find("--"); at != std::string::npos; at = note.find("--", at)) {
      note.replace(at, 2, "- -");
    }
    out += "<!-- " + note + " -->\n";
  }
  return out;
}

}  // namespace vp::ctl
