#pragma once

// The packed virtqueue (virtio 1.2 §2.8, VIRTIO_F_RING_PACKED), device side. Same shape as
// SplitQueue (see the Virtqueue concept in queue.hpp): one descriptor ring shared both ways,
// availability told by the AVAIL/USED flag bits against wrap counters, and the two event
// suppression structures for notifications.

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "sys/error.hpp"
#include "virtio/dirty_log.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace vp::virtio {

namespace detail {
enum class ChainFault : uint8_t;
class ChainBuilder;
}  // namespace detail

// SPEC: virtio 1.2 §2.8.1 availability bits and §2.8.10 event suppression flags.
inline constexpr uint16_t kPackedDescFAvail = 1 << 7;
inline constexpr uint16_t kPackedDescFUsed = 1 << 15;
inline constexpr uint16_t kRingEventFlagsEnable = 0;
inline constexpr uint16_t kRingEventFlagsDisable = 1;
inline constexpr uint16_t kRingEventFlagsDesc = 2;

/// The packed-ring position a vhost-user front-end's SET_VRING_BASE names, in the full
/// encoding that PackedQueue::set_vring_base() takes and vring_base() gives.
// SPEC: vhost-user.rst, "Vring descriptor indices for packed virtqueues": bits 0-14 the next
// available index, bit 15 the driver ring wrap counter, bits 16-30 the next used index, bit 31
// the device ring wrap counter. QEMU sends all four (0x80008000 for a new ring). DPDK
// virtio-user sends the available half only (0x00008000 for a new ring, bits 16-31 zero), and
// DPDK's own back-end answers GET_VRING_BASE with that half and resumes with the used position
// equal to the available one. So bits 16-31 zero mean "no used half": the used position is the
// available one. Read literally, 0x00008000 would be used index 0 with wrap 0, a whole ring
// behind a fresh avail position: the device would write used descriptors with the wrong wrap
// bits and the driver would never see one. The only full encoding this misreads has its used
// position at (0, wrap 0) — an odd number of whole laps — with buffers in flight. vpd never
// answers GET_VRING_BASE with one (it holds no buffer between wake-ups, so its used position
// equals its available one), but a QEMU that carries the state of another back-end can send
// one: the kernel's vhost (e.g. vhost-vdpa) reports a used index behind avail, so a guest
// moved from such a back-end to vpd with buffers in flight would stall on that ring. The
// back-end logs that case (a zero used half with a non-zero avail half) so it can be found.
// GET_VRING_BASE gives the full encoding: QEMU reads all of it, and a reader of bits 0-15
// only (DPDK) finds there the same position as in bits 16-31.
constexpr uint32_t packed_base_from_front_end(uint32_t num) noexcept {
  if ((num >> 16) != 0) return num;
  return num | (num << 16);
}

class PackedQueue {
 public:
  PackedQueue() = default;

  /// Binds the queue to `memory` (which must outlive the binding; configure again after the
  /// memory table changes) and checks the ring: size in [1, 32768] ("invalid-queue-size";
  /// packed sizes need not be powers of 2), each part inside one region
  /// ("ring-outside-memory"), aligned per §2.8.10.1 ("ring-misaligned"), not overlapping
  /// ("ring-overlap"), and the ring base from set_vring_base() inside the ring
  /// ("invalid-vring-base"). On failure the queue is left unconfigured.
  Result<void> configure(const GuestMemory& memory, const QueueConfig& config);

  /// Unconfigured, not broken, both indices 0 and both wrap counters 1. Counters are kept.
  void reset() noexcept;

  bool ready() const noexcept { return configured_ && !broken(); }
  bool broken() const noexcept { return broken_reason_ != BrokenReason::kNone; }
  BrokenReason broken_reason() const noexcept { return broken_reason_; }
  uint16_t size() const noexcept { return size_; }
  const QueueCounters& counters() const noexcept { return counters_; }

  /// The next well-formed available buffer, elements written into `iov`; head.id is the
  /// buffer id (from the list's last descriptor, §2.8.6) and head.slots the ring descriptors
  /// it used. Malformed buffers are given back (length 0) and counted. A list whose end or
  /// id cannot be found breaks the queue. Call publish_used() after a batch.
  std::optional<Chain> pop(std::span<iovec> iov) noexcept;

  /// Puts back the buffer the last pop() returned; only right after it, before any push.
  bool unpop() noexcept;

  /// Writes a used descriptor for a popped buffer at the next used position and skips
  /// head.slots descriptors (§2.8.6). Not visible to the driver until publish_used(). False
  /// (and counted) if fewer slots are in flight or the queue is not ready.
  bool push_used(ChainHead head, uint32_t len) noexcept;

  /// Exposes the pushed used descriptors at once: the first one's flags are written last,
  /// with release ordering, so the driver never sees a partial batch.
  void publish_used() noexcept;

  /// Whether the driver event suppression structure asks for a used-buffer notification for
  /// what was published since the last call (§2.8.10). Call after publish_used().
  bool needs_notification() noexcept;

  /// Asks for available-buffer notifications (device event suppression: ENABLE, or DESC at
  /// our next avail position with EVENT_IDX), then looks again. True means a buffer is
  /// already waiting.
  bool enable_notifications() noexcept;

  /// Device event suppression flags = DISABLE.
  void disable_notifications() noexcept;

  /// The ring position in vhost-user's full packed encoding: bits 0-14 next avail index, bit
  /// 15 avail wrap counter, bits 16-30 next used index, bit 31 used wrap counter, taken
  /// literally (a front-end's SET_VRING_BASE goes through packed_base_from_front_end() first;
  /// the data plane's rewind relies on the literal reading). set_vring_base() may
  /// precede configure(); once configured it refuses indices outside the ring. It forgets
  /// buffers in flight and unpublished used descriptors: publish before vring_base(), and
  /// only move the base of a stopped ring.
  bool set_vring_base(uint32_t base) noexcept;
  uint32_t vring_base() const noexcept;

  /// Dirty logging for live migration, until reset(): every later used descriptor is marked
  /// (by the descriptor ring's guest address) after it is written, and with log.log_used the
  /// device event area too. Set once configured, before the data plane uses the queue.
  void set_log(const RingLog& log) noexcept { log_ = log; }
  bool logging() const noexcept { return log_.log != nullptr; }
  /// Marks the first `len` bytes of the device-writable elements `iov` (from pop()) as
  /// written: the data plane calls it after filling a buffer, before push_used(). Only when
  /// logging(); otherwise it does nothing.
  void log_written(std::span<const iovec> iov, uint32_t len) noexcept;

  uint16_t next_avail() const noexcept { return next_avail_; }
  bool avail_wrap_counter() const noexcept { return avail_wrap_; }
  uint16_t next_used() const noexcept { return next_used_; }
  bool used_wrap_counter() const noexcept { return used_wrap_; }

 private:
  // `index_in_list` is 1 for the first descriptor of the list.
  detail::ChainFault walk_indirect(uint64_t addr, uint32_t len, uint16_t flags,
                                   uint32_t index_in_list,
                                   detail::ChainBuilder& builder) const noexcept;
  void write_used(ChainHead head, uint32_t len) noexcept;
  void mark_broken(BrokenReason reason) noexcept;
  // Marks the descriptor at ring position `pos` as written (while logging).
  void log_desc(uint16_t pos) noexcept;

  const GuestMemory* memory_ = nullptr;
  uint64_t desc_gpa_ = 0;  // guest-physical address of the descriptor ring
  std::byte* desc_ = nullptr;
  std::byte* driver_event_ = nullptr;  // driver area: written by the driver, read by us
  std::byte* device_event_ = nullptr;  // device area: written by us
  uint16_t size_ = 0;
  bool event_idx_ = false;
  bool indirect_ = false;
  bool configured_ = false;
  BrokenReason broken_reason_ = BrokenReason::kNone;

  // SPEC: virtio 1.2 §2.8.1: both wrap counters start at 1.
  uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  uint16_t next_used_ = 0;
  bool used_wrap_ = true;

  uint32_t slots_in_flight_ = 0;  // ring descriptors consumed and not yet given back
  uint32_t pending_ = 0;          // used descriptors written since the last publish
  uint16_t pending_pos_ = 0;      // where the first of them is; its flags wait for publish
  uint16_t pending_flags_ = 0;
  uint16_t published_pos_ = 0;
  bool published_wrap_ = true;
  uint16_t signalled_pos_ = 0;  // published position when needs_notification() last judged
  bool signalled_wrap_ = true;
  bool signalled_valid_ = false;
  bool can_unpop_ = false;
  uint16_t last_pop_slots_ = 0;

  RingLog log_;
  QueueCounters counters_;
};

static_assert(Virtqueue<PackedQueue>);

}  // namespace vp::virtio
