#pragma once

// The three parts of a virtqueue in guest memory, for both ring formats: what each is called,
// how many bytes it spans and how it is aligned, and the one check that places them. The
// queues check a ring against this when they are configured; the vhost-user engine sizes the
// parts with it to translate the front-end's ring addresses.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "sys/error.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace vp::virtio {

struct RingPart {
  std::string_view name;
  uint64_t bytes = 0;
  uint64_t align = 0;
};

/// Descriptor area, driver area, device area, in that order (the order of QueueConfig's
/// desc_addr, driver_addr, device_addr).
using RingParts = std::array<RingPart, 3>;

/// The parts of a ring of `size` entries. Any size up to kMaxQueueSize fits in 64 bits.
// SPEC: virtio 1.2 §2.7 (split: struct virtq_desc[n]; virtq_avail = flags, idx, ring[n],
// used_event; virtq_used = flags, idx, virtq_used_elem[n] of 8 bytes, avail_event) and
// §2.8.10.1 (packed: struct pvirtq_desc[n]; two 4-byte pvirtq_event_suppress).
constexpr RingParts ring_parts(uint32_t size, bool packed) noexcept {
  const uint64_t n = size;
  if (packed) {
    return {{{"descriptor ring", kDescSize * n, 16},
             {"driver event suppression area", 4, 4},
             {"device event suppression area", 4, 4}}};
  }
  return {{{"descriptor table", kDescSize * n, 16},
           {"available ring", 6 + 2 * n, 2},
           {"used ring", 6 + 8 * n, 4}}};
}

/// Host addresses of the descriptor, driver and device areas of the ring `config` places
/// (config.size entries, not checked here), once each part is aligned in guest and in host
/// memory ("ring-misaligned"), lies whole inside one region of `memory`
/// ("ring-outside-memory") and overlaps no other part ("ring-overlap"). `queue` ("split
/// queue", "packed queue") opens every message, which names the part.
Result<std::array<std::byte*, 3>> place_ring_parts(const GuestMemory& memory,
                                                   const QueueConfig& config, bool packed,
                                                   std::string_view queue);

}  // namespace vp::virtio
