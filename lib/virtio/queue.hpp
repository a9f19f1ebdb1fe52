#pragma once

// Vocabulary shared by the split and packed virtqueues: what a popped chain looks like, the
// counters, why a queue stopped, and the Virtqueue concept that both formats satisfy.
//
// Why a concept and not a virtual interface: the ring format is fixed for the life of a
// session (VIRTIO_F_RING_PACKED is negotiated once), so the data plane picks it once per
// queue (a template instantiation, or a std::variant visited once per wake-up) and every
// pop/push is then a direct, inlinable call. A vtable would put an indirect call on every
// descriptor chain for a choice that never changes; the concept still gives one checked shape.

#include <sys/uio.h>

#include <concepts>
#include <cstdint>
#include <optional>
#include <span>

#include "virtio/dirty_log.hpp"

namespace vp::virtio {

// SPEC: virtio 1.2 §6 reserved feature bits that change ring handling.
inline constexpr uint64_t kFeatureIndirectDesc = 1ULL << 28;  // VIRTIO_F_INDIRECT_DESC
inline constexpr uint64_t kFeatureEventIdx = 1ULL << 29;      // VIRTIO_F_EVENT_IDX
inline constexpr uint64_t kFeatureVersion1 = 1ULL << 32;      // VIRTIO_F_VERSION_1
inline constexpr uint64_t kFeatureRingPacked = 1ULL << 34;    // VIRTIO_F_RING_PACKED

// SPEC: virtio 1.2 §2.7.5, §2.8.6-2.8.8 descriptor flags; same values in both formats.
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;

// SPEC: virtio 1.2 §2.7 (split: power of 2, at most 32768) and §2.8 (packed: up to 2^15).
inline constexpr uint32_t kMaxQueueSize = 32768;
inline constexpr uint32_t kDescSize = 16;

/// Where a queue's three parts live, as guest-physical addresses (virtio 1.2 §2.6 names:
/// split = descriptor table / available ring / used ring; packed = descriptor ring / driver
/// event suppression / device event suppression).
struct QueueConfig {
  uint32_t size = 0;
  uint64_t desc_addr = 0;
  uint64_t driver_addr = 0;
  uint64_t device_addr = 0;
  /// Negotiated feature bits; the queue reads kFeatureIndirectDesc and kFeatureEventIdx.
  uint64_t features = 0;
};

/// What push_used() needs to give a chain back to the driver.
struct ChainHead {
  uint16_t id = 0;     ///< split: head descriptor index; packed: buffer id
  uint16_t slots = 1;  ///< ring descriptors the chain occupied (packed skips by it; split: 1)

  bool operator==(const ChainHead&) const = default;
};

/// One available descriptor chain. The spans point into the iovec array the caller passed
/// to pop(); zero-length elements are checked but produce no iovec.
struct Chain {
  ChainHead head;
  std::span<iovec> readable;  ///< device-readable elements, in chain order
  std::span<iovec> writable;  ///< device-writable elements, after every readable one
  uint32_t readable_bytes = 0;
  uint32_t writable_bytes = 0;
};

/// Outcomes, counted by the queue. Plain integers owned by the worker thread that owns the
/// queue; the data plane reads deltas and publishes them.
struct QueueCounters {
  uint64_t chains_popped = 0;  ///< well-formed chains handed to the caller (re-pops count again)
  uint64_t used_returned = 0;  ///< used entries written, including chains given back by the queue
  /// Chains given back with length 0 because the guest broke a ring rule; the sum of the six
  /// counters below it.
  uint64_t malformed_chains = 0;
  uint64_t desc_index_out_of_range = 0;  ///< a next index past the (indirect) table
  uint64_t desc_chain_too_long = 0;      ///< more hops than the table has entries: a loop
  uint64_t desc_outside_memory = 0;      ///< [addr, addr + len) not inside one memory region
  uint64_t chain_length_overflow = 0;    ///< the chain's total length does not fit 32 bits
  uint64_t bad_indirect = 0;  ///< nested, chained, unnegotiated, bad length, or outside memory
  uint64_t readable_after_writable = 0;
  /// Well-formed chains with more elements than the caller's iovec array; given back with
  /// length 0 (a device limit, virtio 1.2 §2.7.4.1, so not counted as malformed).
  uint64_t chains_over_capacity = 0;
  uint64_t broken_queue_events = 0;  ///< times the queue stopped; see broken_reason()
  uint64_t used_rejected = 0;        ///< push_used() calls refused: nothing of that size in flight
  /// Dirty logging (live migration): pages marked, one per page each mark covered (a page
  /// written twice counts twice), and pages a write touched past the end of the log.
  uint64_t dirty_pages_logged = 0;
  uint64_t dirty_pages_beyond_log = 0;
};

/// Why a queue stopped taking work. A broken queue needs reset() and configure() again;
/// the driver is expected to reset the device.
enum class BrokenReason : uint8_t {
  kNone,
  kAvailIndexJump,   ///< split: avail idx moved more than the queue size past last_avail
  kHeadOutOfRange,   ///< split: the available ring named a head past the table
  kTooManyInFlight,  ///< the driver offered more than the queue size outstanding
  kChainWithoutEnd,  ///< packed: no descriptor without NEXT within queue-size descriptors
  kPartialChain,     ///< packed: a chained descriptor after the first is not available
};

/// A stable word for logs and the control protocol.
constexpr const char* describe(BrokenReason reason) noexcept {
  switch (reason) {
    case BrokenReason::kNone:
      return "none";
    case BrokenReason::kAvailIndexJump:
      return "avail-index-jump";
    case BrokenReason::kHeadOutOfRange:
      return "head-out-of-range";
    case BrokenReason::kTooManyInFlight:
      return "too-many-in-flight";
    case BrokenReason::kChainWithoutEnd:
      return "chain-without-end";
    case BrokenReason::kPartialChain:
      return "partial-chain";
  }
  return "unknown";
}

/// vring_need_event: true if `event` lies in [old_idx, new_idx) modulo 2^16, i.e. the other
/// side asked to be told once the index passed `event` and this batch passed it.
// SPEC: virtio 1.2 §2.7.7.2 / §2.7.10 (used_event, avail_event), §2.8.10 (packed offsets)
constexpr bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) noexcept {
  return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

/// The shape shared by SplitQueue and PackedQueue. Hot-path members are noexcept and never
/// allocate, lock or log. A queue belongs to one thread at a time (the worker that owns the
/// endpoint); the session pauses that worker before it reconfigures the queue.
// clang-format 14 splits `{ expr } noexcept -> type` requirements apart, hence off.
// clang-format off
template <class Q>
concept Virtqueue = requires(Q& q, const Q& cq, std::span<iovec> iov, ChainHead head,
                             uint32_t len, uint32_t base, const RingLog& log) {
  { q.pop(iov) } noexcept -> std::same_as<std::optional<Chain>>;
  { q.unpop() } noexcept -> std::same_as<bool>;
  { q.push_used(head, len) } noexcept -> std::same_as<bool>;
  { q.publish_used() } noexcept -> std::same_as<void>;
  { q.needs_notification() } noexcept -> std::same_as<bool>;
  { q.enable_notifications() } noexcept -> std::same_as<bool>;
  { q.disable_notifications() } noexcept -> std::same_as<void>;
  { q.set_vring_base(base) } noexcept -> std::same_as<bool>;
  { cq.vring_base() } noexcept -> std::same_as<uint32_t>;
  { q.reset() } noexcept -> std::same_as<void>;
  { cq.ready() } noexcept -> std::same_as<bool>;
  { cq.broken() } noexcept -> std::same_as<bool>;
  { cq.broken_reason() } noexcept -> std::same_as<BrokenReason>;
  { cq.size() } noexcept -> std::same_as<uint16_t>;
  { cq.counters() } noexcept -> std::same_as<const QueueCounters&>;
  { q.set_log(log) } noexcept -> std::same_as<void>;
  { cq.logging() } noexcept -> std::same_as<bool>;
  { q.log_written(iov, len) } noexcept -> std::same_as<void>;
};
// clang-format on

}  // namespace vp::virtio
