#include "virtio/packed_queue.hpp"

#include <atomic>
#include <utility>

#include "sys/str.hpp"
#include "virtio/guest_access.hpp"
#include "virtio/ring_parts.hpp"

namespace vp::virtio {

namespace {

using detail::ChainFault;
using detail::load;
using detail::store;

// SPEC: virtio 1.2 §2.8.13 struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; }
constexpr std::size_t kDescAddr = 0;
constexpr std::size_t kDescLen = 8;
constexpr std::size_t kDescId = 12;
constexpr std::size_t kDescFlags = 14;
// SPEC: virtio 1.2 §2.8.14 struct pvirtq_event_suppress { le16 desc; le16 flags; }
constexpr std::size_t kEventOffWrap = 0;
constexpr std::size_t kEventFlags = 2;
// SPEC: virtio 1.2 §2.8.14: desc = event offset (bits 0-14) | event wrap counter (bit 15).
constexpr uint16_t kEventOffsetMask = 0x7fff;
constexpr uint16_t kEventWrapBit = 0x8000;

// SPEC: virtio 1.2 §2.8.1: available when AVAIL matches the wrap counter and USED does not.
constexpr bool is_available(uint16_t flags, bool wrap) noexcept {
  const bool avail = (flags & kPackedDescFAvail) != 0;
  const bool used = (flags & kPackedDescFUsed) != 0;
  return avail == wrap && used != wrap;
}

}  // namespace

Result<void> PackedQueue::configure(const GuestMemory& memory, const QueueConfig& config) {
  const uint32_t base = vring_base();
  reset();
  set_vring_base(base);  // unconfigured: stored as is, checked below

  // SPEC: virtio 1.2 §2.8: up to 2^15 entries; §2.8.10.1: no power-of-2 requirement.
  if (config.size == 0 || config.size > kMaxQueueSize) {
    return fail("invalid-queue-size",
                str("packed queue size ", config.size, " is not in [1, 32768]"));
  }
  auto parts = place_ring_parts(memory, config, true, "packed queue");
  if (!parts) return std::unexpected(std::move(parts.error()));
  if (next_avail_ >= config.size || next_used_ >= config.size) {
    return fail("invalid-vring-base", str("packed queue base (avail ", next_avail_, ", used ",
                                          next_used_, ") lies outside a ring of ", config.size));
  }

  memory_ = &memory;
  desc_gpa_ = config.desc_addr;
  desc_ = (*parts)[0];
  driver_event_ = (*parts)[1];
  device_event_ = (*parts)[2];
  size_ = static_cast<uint16_t>(config.size);
  event_idx_ = (config.features & kFeatureEventIdx) != 0;
  indirect_ = (config.features & kFeatureIndirectDesc) != 0;
  configured_ = true;
  return {};
}

void PackedQueue::reset() noexcept {
  memory_ = nullptr;
  desc_ = driver_event_ = device_event_ = nullptr;
  size_ = 0;
  event_idx_ = indirect_ = configured_ = false;
  broken_reason_ = BrokenReason::kNone;
  next_avail_ = next_used_ = 0;
  avail_wrap_ = used_wrap_ = true;
  slots_in_flight_ = pending_ = 0;
  pending_pos_ = pending_flags_ = 0;
  published_pos_ = signalled_pos_ = 0;
  published_wrap_ = signalled_wrap_ = true;
  signalled_valid_ = can_unpop_ = false;
  last_pop_slots_ = 0;
  desc_gpa_ = 0;
  log_ = RingLog{};
}

bool PackedQueue::set_vring_base(uint32_t base) noexcept {
  const auto avail = static_cast<uint16_t>(base & 0x7fff);
  const auto used = static_cast<uint16_t>((base >> 16) & 0x7fff);
  // GUEST: from the frontend; indices must name ring entries.
  if (configured_ && (avail >= size_ || used >= size_)) return false;
  next_avail_ = avail;
  avail_wrap_ = (base & (1u << 15)) != 0;
  next_used_ = used;
  used_wrap_ = (base & (1u << 31)) != 0;
  published_pos_ = signalled_pos_ = next_used_;
  published_wrap_ = signalled_wrap_ = used_wrap_;
  signalled_valid_ = can_unpop_ = false;
  slots_in_flight_ = pending_ = 0;
  return true;
}

uint32_t PackedQueue::vring_base() const noexcept {
  return uint32_t{next_avail_} | (avail_wrap_ ? 1u << 15 : 0u) | (uint32_t{next_used_} << 16) |
         (used_wrap_ ? 1u << 31 : 0u);
}

void PackedQueue::mark_broken(BrokenReason reason) noexcept {
  broken_reason_ = reason;
  ++counters_.broken_queue_events;
  can_unpop_ = false;
}

std::optional<Chain> PackedQueue::pop(std::span<iovec> iov) noexcept {
  can_unpop_ = false;
  if (!ready()) return std::nullopt;
  // Each turn consumes at least one descriptor; the budget keeps a guest that refills the
  // ring with malformed lists as fast as we give them back from holding this call forever.
  for (uint32_t budget = size_; budget != 0; --budget) {
    // SPEC: virtio 1.2 §2.8.21.1: the driver writes the head's flags last; the acquire load
    // orders every read of this list after it.
    const uint16_t head_flags = load<uint16_t>(
        desc_ + kDescSize * std::size_t{next_avail_} + kDescFlags, std::memory_order_acquire);
    // GUEST: availability is judged against our own wrap counter only.
    if (!is_available(head_flags, avail_wrap_)) return std::nullopt;

    detail::ChainBuilder builder(*memory_, iov);
    ChainFault fault = ChainFault::kNone;
    uint32_t position = next_avail_;
    bool wrap = avail_wrap_;
    uint32_t count = 0;
    uint16_t flags = head_flags;
    uint16_t buffer_id = 0;
    for (;;) {
      // SPEC: virtio 1.2 §2.8.17: a list is no longer than the queue. Without an end within
      // `size` descriptors there is no buffer id to give back and no way to know how far to
      // skip: the ring is unusable.
      if (count == size_) {
        mark_broken(BrokenReason::kChainWithoutEnd);
        return std::nullopt;
      }
      const std::byte* d = desc_ + kDescSize * std::size_t{position};
      if (count != 0) {
        flags = load<uint16_t>(d + kDescFlags);
        // GUEST: §2.8.17: every descriptor of a list is available before its first one is.
        if (!is_available(flags, wrap)) {
          mark_broken(BrokenReason::kPartialChain);
          return std::nullopt;
        }
      }
      // GUEST: addr and len are checked by walk_indirect()/the builder; the id is only echoed.
      const uint64_t addr = load<uint64_t>(d + kDescAddr);
      const uint32_t len = load<uint32_t>(d + kDescLen);
      const uint16_t id = load<uint16_t>(d + kDescId);
      ++count;
      if (++position == size_) {
        position = 0;
        wrap = !wrap;
      }
      // After a fault the walk goes on without touching the elements, only to find the end.
      if (fault == ChainFault::kNone) {
        fault = (flags & kDescFIndirect) != 0 ? walk_indirect(addr, len, flags, count, builder)
                                              : builder.add(addr, len, (flags & kDescFWrite) != 0);
      }
      if ((flags & kDescFNext) == 0) {
        // SPEC: virtio 1.2 §2.8.6: the buffer id is in the last descriptor of the list.
        buffer_id = id;
        break;
      }
    }
    // GUEST: the ring never holds more than `size` outstanding descriptors; more means the
    // driver re-offered descriptors we still own.
    if (slots_in_flight_ + count > size_) {
      mark_broken(BrokenReason::kTooManyInFlight);
      return std::nullopt;
    }
    next_avail_ = static_cast<uint16_t>(position);
    avail_wrap_ = wrap;
    slots_in_flight_ += count;
    const ChainHead head{buffer_id, static_cast<uint16_t>(count)};
    if (fault == ChainFault::kNone) {
      ++counters_.chains_popped;
      can_unpop_ = true;
      last_pop_slots_ = head.slots;
      return builder.finish(head);
    }
    // Never leak a buffer: the driver gets it back with nothing written, and it is counted.
    detail::count_fault(counters_, fault);
    slots_in_flight_ -= count;
    write_used(head, 0);
  }
  return std::nullopt;
}

ChainFault PackedQueue::walk_indirect(uint64_t addr, uint32_t len, uint16_t flags,
                                      uint32_t index_in_list,
                                      detail::ChainBuilder& builder) const noexcept {
  // SPEC: virtio 1.2 §2.8.19: only with VIRTIO_F_INDIRECT_DESC, and never in a list linked by
  // NEXT (so it is the first and only descriptor of its buffer).
  if (!indirect_ || index_in_list != 1 || (flags & kDescFNext) != 0) {
    return ChainFault::kBadIndirect;
  }
  // GUEST: a whole, non-zero number of descriptors, no more than the queue size (§2.8.5).
  if (len == 0 || len % kDescSize != 0 || len / kDescSize > size_) return ChainFault::kBadIndirect;
  // GUEST: the whole table inside one region.
  const std::byte* table = memory_->translate(addr, len);
  if (table == nullptr) return ChainFault::kBadIndirect;
  const uint32_t entries = len / kDescSize;
  for (uint32_t i = 0; i < entries; ++i) {
    const detail::RawDesc d = detail::load_desc(table + kDescSize * std::size_t{i});
    // SPEC: virtio 1.2 §2.8.7: entries follow one another; WRITE is their only valid flag,
    // other flags and the buffer id are reserved and ignored by the device (so a nested
    // INDIRECT is never followed).
    // GUEST: d.addr, d.len and the WRITE bit are checked by the builder.
    const ChainFault fault = builder.add(d.addr, d.len, (d.at14 & kDescFWrite) != 0);
    if (fault != ChainFault::kNone) return fault;
  }
  return ChainFault::kNone;
}

void PackedQueue::write_used(ChainHead head, uint32_t len) noexcept {
  std::byte* d = desc_ + kDescSize * std::size_t{next_used_};
  // SPEC: virtio 1.2 §2.8.4: a used descriptor's len is what was written (meaningful with
  // WRITE); its address is unused. §2.8.1: AVAIL and USED both equal our wrap counter.
  store<uint32_t>(d + kDescLen, len);
  store<uint16_t>(d + kDescId, head.id);
  uint16_t flags = used_wrap_ ? (kPackedDescFAvail | kPackedDescFUsed) : 0;
  if (len != 0) flags |= kDescFWrite;
  if (pending_ == 0) {
    pending_pos_ = next_used_;
    pending_flags_ = flags;
  } else {
    // The driver does not look past the first pending descriptor, so the rest may go now.
    store<uint16_t>(d + kDescFlags, flags, std::memory_order_release);
    // Complete, so marked now; the first one is marked when publish_used() finishes it.
    if (log_.log != nullptr) [[unlikely]]
      log_desc(next_used_);
  }
  ++pending_;
  // SPEC: virtio 1.2 §2.8.6: skip the rest of the list's descriptors.
  uint32_t next = uint32_t{next_used_} + head.slots;
  if (next >= size_) {
    next -= size_;
    used_wrap_ = !used_wrap_;
  }
  next_used_ = static_cast<uint16_t>(next);
  ++counters_.used_returned;
}

void PackedQueue::log_desc(uint16_t pos) noexcept {
  // SPEC: vhost-user.rst "Migration": the log is indexed by guest-physical address.
  detail::log_range(*log_.log, desc_gpa_ + kDescSize * uint64_t{pos}, kDescSize, counters_);
}

void PackedQueue::log_written(std::span<const iovec> iov, uint32_t len) noexcept {
  if (log_.log == nullptr || memory_ == nullptr) return;
  detail::log_host_writes(*log_.log, *memory_, iov, len, counters_);
}

bool PackedQueue::unpop() noexcept {
  if (!ready() || !can_unpop_) return false;
  can_unpop_ = false;
  int32_t position = int32_t{next_avail_} - last_pop_slots_;
  if (position < 0) {
    position += size_;
    avail_wrap_ = !avail_wrap_;
  }
  next_avail_ = static_cast<uint16_t>(position);
  slots_in_flight_ -= last_pop_slots_;
  return true;
}

bool PackedQueue::push_used(ChainHead head, uint32_t len) noexcept {
  can_unpop_ = false;
  if (!ready() || head.slots == 0 || head.slots > slots_in_flight_) {
    ++counters_.used_rejected;
    return false;
  }
  slots_in_flight_ -= head.slots;
  write_used(head, len);
  return true;
}

void PackedQueue::publish_used() noexcept {
  if (!ready() || pending_ == 0) return;
  // SPEC: virtio 1.2 §2.8.9: the first used descriptor is marked last (release), exposing
  // the whole batch together.
  store<uint16_t>(desc_ + kDescSize * std::size_t{pending_pos_} + kDescFlags, pending_flags_,
                  std::memory_order_release);
  if (log_.log != nullptr) [[unlikely]]
    log_desc(pending_pos_);
  pending_ = 0;
  published_pos_ = next_used_;
  published_wrap_ = used_wrap_;
}

bool PackedQueue::needs_notification() noexcept {
  if (!ready()) return false;
  if (published_pos_ == signalled_pos_ && published_wrap_ == signalled_wrap_) return false;
  // Store-load ordering: our used flags must be visible before we read the driver's
  // suppression structure, or both sides may decide not to act.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old_pos = signalled_pos_;
  const bool old_wrap = signalled_wrap_;
  const bool valid = signalled_valid_;
  signalled_pos_ = published_pos_;
  signalled_wrap_ = published_wrap_;
  signalled_valid_ = true;

  // SPEC: virtio 1.2 §2.8.14: two defined bits; the reserved value 3 is treated as ENABLE
  // (a spurious notification is harmless, a missing one stalls the guest).
  // GUEST: masked to the defined bits.
  const uint16_t flags = load<uint16_t>(driver_event_ + kEventFlags) & 3u;
  if (flags == kRingEventFlagsDisable) return false;
  if (flags != kRingEventFlagsDesc || !event_idx_ || !valid) return true;
  // GUEST: the offset is only compared, never used as an index, so any value is safe.
  const uint16_t off_wrap = load<uint16_t>(driver_event_ + kEventOffWrap);
  // SPEC: virtio 1.2 §2.8.10: notify if the used descriptor at (offset, wrap) was written in
  // this batch. Positions from an earlier lap are moved back by the ring size so that all
  // three lie on one line, then vring_need_event decides.
  const int32_t n = size_;
  const int32_t new_pos = published_pos_;
  const int32_t old_line = old_pos - (old_wrap != published_wrap_ ? n : 0);
  const bool event_wrap = (off_wrap & kEventWrapBit) != 0;
  const int32_t event_line =
      (off_wrap & kEventOffsetMask) - (event_wrap != published_wrap_ ? n : 0);
  return need_event(static_cast<uint16_t>(event_line), static_cast<uint16_t>(new_pos),
                    static_cast<uint16_t>(old_line));
}

bool PackedQueue::enable_notifications() noexcept {
  if (!ready()) return false;
  if (event_idx_) {
    // SPEC: virtio 1.2 §2.8.10: ask for a notification when the descriptor at our next
    // avail position (and wrap) is made available.
    const uint16_t off_wrap =
        static_cast<uint16_t>(next_avail_ | (avail_wrap_ ? kEventWrapBit : 0));
    store<uint16_t>(device_event_ + kEventOffWrap, off_wrap);
    store<uint16_t>(device_event_ + kEventFlags, kRingEventFlagsDesc, std::memory_order_release);
  } else {
    store<uint16_t>(device_event_ + kEventFlags, kRingEventFlagsEnable, std::memory_order_release);
  }
  detail::log_used_write(log_, kEventOffWrap, 4, counters_);
  // Store-load ordering: publish the request, then look for a buffer made available meanwhile.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // GUEST: only compared with our wrap counter.
  const uint16_t flags = load<uint16_t>(desc_ + kDescSize * std::size_t{next_avail_} + kDescFlags,
                                        std::memory_order_acquire);
  return is_available(flags, avail_wrap_);
}

void PackedQueue::disable_notifications() noexcept {
  if (!ready()) return;
  store<uint16_t>(device_event_ + kEventFlags, kRingEventFlagsDisable);
  detail::log_used_write(log_, kEventFlags, 2, counters_);
}

}  // namespace vp::virtio
