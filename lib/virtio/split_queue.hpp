#pragma once

// The split virtqueue (virtio 1.2 §2.7), device side: pops available descriptor chains from
// guest memory with every bound checked, gives chains back on the used ring, and decides
// notifications (VIRTIO_F_EVENT_IDX or the flags fields).

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

class SplitQueue {
 public:
  SplitQueue() = default;

  /// Binds the queue to `memory` (which must outlive the binding; configure again after the
  /// memory table changes, because ring pointers are cached) and checks the rings: size a
  /// power of 2 in [1, 32768] ("invalid-queue-size"), each part wholly inside one region
  /// ("ring-outside-memory"), aligned as §2.7 requires ("ring-misaligned"), parts not
  /// overlapping ("ring-overlap"). Keeps last_avail (see set_last_avail) and reads the used
  /// index from the ring. On failure the queue is left unconfigured.
  Result<void> configure(const GuestMemory& memory, const QueueConfig& config);

  /// Unconfigured, not broken, last_avail 0. Counters are kept.
  void reset() noexcept;

  /// Configured and not broken: pop/push do work.
  bool ready() const noexcept { return configured_ && !broken(); }
  bool broken() const noexcept { return broken_reason_ != BrokenReason::kNone; }
  BrokenReason broken_reason() const noexcept { return broken_reason_; }
  uint16_t size() const noexcept { return size_; }
  const QueueCounters& counters() const noexcept { return counters_; }

  /// The next well-formed available chain, its elements written into `iov` (the returned
  /// spans point there), or nothing when the ring is empty, the queue is not ready, or it
  /// just broke. Malformed chains met on the way are given back (used length 0) and counted,
  /// never handed out; a chain needing more than iov.size() elements likewise. Call
  /// publish_used() after a batch even if nothing came back.
  std::optional<Chain> pop(std::span<iovec> iov) noexcept;

  /// Puts back the chain the last pop() returned, as if it had not been popped (e.g. the TAP
  /// had nothing for an RX buffer). Only right after that pop, before any other pop or push.
  bool unpop() noexcept;

  /// Writes a used entry for a popped chain; `len` is the bytes written into its writable
  /// part. Invisible to the driver until publish_used(). False (and counted) if nothing is in
  /// flight, the head is past the table, or the queue is not ready.
  bool push_used(ChainHead head, uint32_t len) noexcept;

  /// Makes every pushed entry visible to the driver (one release store of used idx).
  void publish_used() noexcept;

  /// Whether the driver wants a used-buffer notification for what was published since the
  /// last call (§2.7.7.2: used_event with EVENT_IDX, otherwise avail flags). Call after
  /// publish_used(); each call consumes the published entries it judged.
  bool needs_notification() noexcept;

  /// Asks the driver for available-buffer notifications (avail_event = last seen avail idx
  /// with EVENT_IDX, used flags 0 otherwise), then re-reads the avail index. True means
  /// buffers are already waiting: keep popping instead of sleeping.
  bool enable_notifications() noexcept;

  /// Tells the driver not to notify (used flags NO_NOTIFY; with EVENT_IDX avail_event is left
  /// behind, which has the same effect until it is re-armed).
  void disable_notifications() noexcept;

  /// The avail index the next pop reads (vhost-user SET_VRING_BASE); may precede configure().
  /// Forgets chains in flight: only for a stopped ring.
  void set_last_avail(uint16_t idx) noexcept;
  uint16_t last_avail() const noexcept { return last_avail_; }
  /// The next used index this device writes (as read from the ring at configure time).
  uint16_t used_idx() const noexcept { return used_idx_; }

  /// vhost-user GET/SET_VRING_BASE for split rings: bits 0-15 are last_avail, the rest is
  /// reserved and ignored.
  bool set_vring_base(uint32_t base) noexcept;
  uint32_t vring_base() const noexcept { return last_avail_; }

  /// Dirty logging for live migration, until reset(): every later write to the used ring
  /// is marked (with log.log_used) before the used idx that exposes it. Set once configured,
  /// before the data plane uses the queue.
  void set_log(const RingLog& log) noexcept { log_ = log; }
  bool logging() const noexcept { return log_.log != nullptr; }
  /// Marks the first `len` bytes of the device-writable elements `iov` (from pop()) as
  /// written: the data plane calls it after filling a buffer, before push_used(). Only when
  /// logging(); otherwise it does nothing.
  void log_written(std::span<const iovec> iov, uint32_t len) noexcept;

 private:
  // Re-reads the avail index (acquire) if everything read before was consumed; marks the
  // queue broken on a jump of more than `size`. True if a head is waiting.
  bool refresh_avail() noexcept;
  detail::ChainFault walk(uint16_t head, detail::ChainBuilder& builder) const noexcept;
  void write_used(uint16_t id, uint32_t len) noexcept;
  void mark_broken(BrokenReason reason) noexcept;

  const GuestMemory* memory_ = nullptr;
  std::byte* desc_ = nullptr;
  std::byte* avail_ = nullptr;
  std::byte* used_ = nullptr;
  uint16_t size_ = 0;
  bool event_idx_ = false;
  bool indirect_ = false;
  bool configured_ = false;
  BrokenReason broken_reason_ = BrokenReason::kNone;

  uint16_t last_avail_ = 0;    // next avail ring entry to consume
  uint16_t shadow_avail_ = 0;  // avail idx as last read from the guest
  uint16_t used_idx_ = 0;      // next used ring entry to write
  uint16_t published_used_ = 0;
  uint16_t signalled_used_ = 0;  // published_used_ when needs_notification() last judged
  bool signalled_valid_ = false;
  bool can_unpop_ = false;
  uint32_t in_flight_ = 0;  // chains consumed from the avail ring and not yet given back

  RingLog log_;
  QueueCounters counters_;
};

static_assert(Virtqueue<SplitQueue>);

}  // namespace vp::virtio
