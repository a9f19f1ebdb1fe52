#pragma once

// Rewinding several popped chains at once, built on the public Virtqueue API until lib/virtio
// grows its own (see the note at the end). The queue's unpop() puts back only the chain the
// last pop() returned; the mergeable-RX path pops many buffers ahead of a read whose size it
// cannot know and must give the unfilled ones back.

#include <concepts>
#include <cstdint>

#include "virtio/packed_queue.hpp"
#include "virtio/queue.hpp"
#include "virtio/split_queue.hpp"

namespace vp::dataplane {

/// Moves the queue's next-avail position back by `slots` ring slots (the sum of ChainHead::slots
/// of the chains to give back: one per chain on a split ring), so that the next pop() returns
/// those chains again. False (and nothing changed) when the queue is not ready or `slots`
/// exceeds its size.
///
/// Preconditions, which the caller must guarantee because the public API cannot check them:
///  - the chains being given back are the LAST ones consumed from the ring, in pop order, and
///    no chain consumed after the first of them has been given back (by pop(), for a
///    malformed chain, or by push_used()): otherwise the rewind would re-pop a chain already
///    returned and lose one still held. Pushing chains popped BEFORE them is fine;
///  - no other chain is in flight: both queues forget their in-flight accounting here
///    (SplitQueue::set_last_avail, PackedQueue::set_vring_base);
///  - packed only: every pushed used descriptor is published and needs_notification() has
///    judged it (set_vring_base forgets both). The next needs_notification() then notifies
///    unconditionally once (its EVENT_IDX history is reset): one spare interrupt per rewind.
template <virtio::Virtqueue Q>
bool rewind_popped(Q& q, uint32_t slots) noexcept {
  if (!q.ready() || slots > q.size()) return false;
  if (slots == 0) return true;
  const uint32_t base = q.vring_base();
  if constexpr (std::same_as<Q, virtio::SplitQueue>) {
    // SPEC: virtio 1.2 §2.7.6: last_avail is a free-running 16-bit index.
    return q.set_vring_base((base - slots) & 0xffffu);
  } else {
    static_assert(std::same_as<Q, virtio::PackedQueue>, "rewind_popped knows split and packed");
    // SPEC: virtio 1.2 §2.8.1: moving back across slot 0 flips the avail wrap counter.
    // vhost-user layout: bits 0-14 next avail, bit 15 its wrap counter, bits 16-31 used side.
    int32_t avail = static_cast<int32_t>(base & 0x7fffu) - static_cast<int32_t>(slots);
    uint32_t wrap = base & 0x8000u;
    if (avail < 0) {
      avail += q.size();
      wrap ^= 0x8000u;
    }
    return q.set_vring_base((base & 0xffff0000u) | wrap | static_cast<uint32_t>(avail));
  }
}

// What lib/virtio should offer instead (both queues): `bool rewind(uint16_t chains) noexcept`
// that puts back the last `chains` chains pop() returned. The queue would count the chains
// (and, packed, sum their slots) returned by pop() since the last give-back of a chain
// consumed after them, and refuse more; it keeps chains popped earlier in flight and the
// notification history intact, which this helper cannot.

}  // namespace vp::dataplane
