#include "virtio/ring_parts.hpp"

#include "sys/str.hpp"

namespace vp::virtio {

Result<std::array<std::byte*, 3>> place_ring_parts(const GuestMemory& memory,
                                                   const QueueConfig& config, bool packed,
                                                   std::string_view queue) {
  const RingParts parts = ring_parts(config.size, packed);
  const uint64_t gpa[3] = {config.desc_addr, config.driver_addr, config.device_addr};
  std::array<std::byte*, 3> host{};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const RingPart& p = parts[i];
    // GUEST: ring addresses come from the front-end.
    if (gpa[i] % p.align != 0) {
      return fail("ring-misaligned", str(queue, " ", p.name, " at guest address ", gpa[i],
                                         " is not ", p.align, "-byte aligned"));
    }
    host[i] = memory.translate(gpa[i], p.bytes);
    if (host[i] == nullptr) {
      return fail("ring-outside-memory", str(queue, " ", p.name, " at guest address ", gpa[i], " (",
                                             p.bytes, " bytes) is not inside guest memory"));
    }
    // The host mapping must keep the alignment, because fields are accessed atomically.
    if (reinterpret_cast<uintptr_t>(host[i]) % p.align != 0) {
      return fail("ring-misaligned",
                  str(queue, " ", p.name, " is mapped at a host address that is not ", p.align,
                      "-byte aligned"));
    }
  }
  for (std::size_t i = 0; i < parts.size(); ++i) {
    for (std::size_t j = i + 1; j < parts.size(); ++j) {
      // Both ranges are inside guest memory, so their ends cannot wrap.
      if (gpa[i] < gpa[j] + parts[j].bytes && gpa[j] < gpa[i] + parts[i].bytes) {
        return fail("ring-overlap",
                    str(queue, " ", parts[i].name, " overlaps its ", parts[j].name));
      }
    }
  }
  return host;
}

}  // namespace vp::virtio
