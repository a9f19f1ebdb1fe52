#include "virtio/split_queue.hpp"

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

// SPEC: virtio 1.2 §2.7.6 struct virtq_avail { le16 flags; le16 idx; le16 ring[];
// le16 used_event; }
constexpr std::size_t kAvailFlags = 0;
constexpr std::size_t kAvailIdx = 2;
constexpr std::size_t kAvailRing = 4;
// SPEC: virtio 1.2 §2.7.8 struct virtq_used { le16 flags; le16 idx; virtq_used_elem ring[];
// le16 avail_event; } with virtq_used_elem { le32 id; le32 len; }
constexpr std::size_t kUsedFlags = 0;
constexpr std::size_t kUsedIdx = 2;
constexpr std::size_t kUsedRing = 4;
constexpr std::size_t kUsedElemSize = 8;

constexpr uint16_t kAvailFNoInterrupt = 1;  // SPEC: virtio 1.2 §2.7.6 VIRTQ_AVAIL_F_NO_INTERRUPT
constexpr uint16_t kUsedFNoNotify = 1;      // SPEC: virtio 1.2 §2.7.8 VIRTQ_USED_F_NO_NOTIFY

}  // namespace

Result<void> SplitQueue::configure(const GuestMemory& memory, const QueueConfig& config) {
  const uint16_t keep_last_avail = last_avail_;
  reset();
  last_avail_ = shadow_avail_ = keep_last_avail;

  // SPEC: virtio 1.2 §2.7: Queue Size is a power of 2, at most 32768.
  if (config.size == 0 || config.size > kMaxQueueSize || (config.size & (config.size - 1)) != 0) {
    return fail("invalid-queue-size",
                str("split queue size ", config.size, " is not a power of 2 in [1, 32768]"));
  }
  auto parts = place_ring_parts(memory, config, false, "split queue");
  if (!parts) return std::unexpected(std::move(parts.error()));

  memory_ = &memory;
  desc_ = (*parts)[0];
  avail_ = (*parts)[1];
  used_ = (*parts)[2];
  size_ = static_cast<uint16_t>(config.size);
  event_idx_ = (config.features & kFeatureEventIdx) != 0;
  indirect_ = (config.features & kFeatureIndirectDesc) != 0;
  // GUEST: the used index is free-running; every 16-bit value is valid.
  used_idx_ = load<uint16_t>(used_ + kUsedIdx);
  published_used_ = signalled_used_ = used_idx_;
  configured_ = true;
  return {};
}

void SplitQueue::reset() noexcept {
  memory_ = nullptr;
  desc_ = avail_ = used_ = nullptr;
  size_ = 0;
  event_idx_ = indirect_ = configured_ = false;
  broken_reason_ = BrokenReason::kNone;
  last_avail_ = shadow_avail_ = used_idx_ = published_used_ = signalled_used_ = 0;
  signalled_valid_ = can_unpop_ = false;
  in_flight_ = 0;
  log_ = RingLog{};
}

void SplitQueue::set_last_avail(uint16_t idx) noexcept {
  last_avail_ = shadow_avail_ = idx;
  in_flight_ = 0;
  can_unpop_ = false;
}

bool SplitQueue::set_vring_base(uint32_t base) noexcept {
  set_last_avail(static_cast<uint16_t>(base & 0xffff));
  return true;
}

void SplitQueue::mark_broken(BrokenReason reason) noexcept {
  broken_reason_ = reason;
  ++counters_.broken_queue_events;
  can_unpop_ = false;
}

bool SplitQueue::refresh_avail() noexcept {
  if (shadow_avail_ != last_avail_) return true;
  // SPEC: virtio 1.2 §2.7.13.3: the driver publishes ring entries before idx; the acquire
  // load orders every later read of the ring and the descriptors after it.
  const uint16_t avail_idx = load<uint16_t>(avail_ + kAvailIdx, std::memory_order_acquire);
  // GUEST: avail idx may run at most `size` entries ahead of what we consumed (§2.7.13.3);
  // more means the ring is corrupt (firecracker's "broken queue"), not a bad chain.
  if (static_cast<uint16_t>(avail_idx - last_avail_) > size_) {
    mark_broken(BrokenReason::kAvailIndexJump);
    return false;
  }
  shadow_avail_ = avail_idx;
  return shadow_avail_ != last_avail_;
}

std::optional<Chain> SplitQueue::pop(std::span<iovec> iov) noexcept {
  can_unpop_ = false;
  if (!ready()) return std::nullopt;
  // Each turn consumes one avail entry; the budget keeps a guest that refills the ring with
  // malformed chains as fast as we give them back from holding this call forever.
  for (uint32_t budget = size_; budget != 0 && refresh_avail(); --budget) {
    // SPEC: virtio 1.2 §2.7.6: ring[last_avail % size] names the head of a chain.
    const uint16_t slot = static_cast<uint16_t>(last_avail_ & (size_ - 1));
    const uint16_t head = load<uint16_t>(avail_ + kAvailRing + 2 * std::size_t{slot});
    // GUEST: head checked against the table size; with no valid head there is nothing to
    // give back, so the ring itself is broken.
    if (head >= size_) {
      mark_broken(BrokenReason::kHeadOutOfRange);
      return std::nullopt;
    }
    // GUEST: a correct driver never has more than `size` chains outstanding.
    if (in_flight_ >= size_) {
      mark_broken(BrokenReason::kTooManyInFlight);
      return std::nullopt;
    }
    ++last_avail_;
    ++in_flight_;

    detail::ChainBuilder builder(*memory_, iov);
    const ChainFault fault = walk(head, builder);
    if (fault == ChainFault::kNone) {
      ++counters_.chains_popped;
      can_unpop_ = true;
      return builder.finish(ChainHead{head, 1});
    }
    // Never leak a head: the driver gets it back with nothing written, and it is counted.
    detail::count_fault(counters_, fault);
    --in_flight_;
    write_used(head, 0);
  }
  return std::nullopt;
}

ChainFault SplitQueue::walk(uint16_t head, detail::ChainBuilder& builder) const noexcept {
  const std::byte* table = desc_;
  uint32_t table_size = size_;
  bool in_indirect = false;
  uint32_t index = head;
  uint32_t hops = 0;
  for (;;) {
    // SPEC: virtio 1.2 §2.7.5: a chain is at most as long as its table; one more hop means
    // a descriptor was visited twice (a loop).
    if (++hops > table_size) return ChainFault::kTooLong;
    const detail::RawDesc d = detail::load_desc(table + kDescSize * std::size_t{index});
    // GUEST: d.addr, d.len, d.at12 (flags), d.at14 (next) are checked below before any use.
    const uint16_t flags = d.at12;
    if ((flags & kDescFIndirect) != 0) {
      // SPEC: virtio 1.2 §2.7.5.3.1: only with VIRTIO_F_INDIRECT_DESC, never inside an
      // indirect table, never together with NEXT. §2.7.5.3.2: direct descriptors may precede
      // it, and its WRITE flag is ignored.
      if (!indirect_ || in_indirect || (flags & kDescFNext) != 0) return ChainFault::kBadIndirect;
      // GUEST: the table length is a whole, non-zero number of descriptors and no longer
      // than the queue (§2.7.5.3.1: no chain longer than the Queue Size).
      if (d.len == 0 || d.len % kDescSize != 0 || d.len / kDescSize > size_) {
        return ChainFault::kBadIndirect;
      }
      // GUEST: the whole table lies inside one region.
      const std::byte* indirect_table = memory_->translate(d.addr, d.len);
      if (indirect_table == nullptr) return ChainFault::kBadIndirect;
      table = indirect_table;
      table_size = d.len / kDescSize;
      in_indirect = true;
      index = 0;
      hops = 0;
      continue;
    }
    // GUEST: the element's range, its length toward the total, and its direction are checked
    // by the builder.
    const ChainFault fault = builder.add(d.addr, d.len, (flags & kDescFWrite) != 0);
    if (fault != ChainFault::kNone) return fault;
    if ((flags & kDescFNext) == 0) return ChainFault::kNone;
    // GUEST: next must name an entry of the current table.
    if (d.at14 >= table_size) return ChainFault::kIndexOutOfRange;
    index = d.at14;
  }
}

void SplitQueue::write_used(uint16_t id, uint32_t len) noexcept {
  // SPEC: virtio 1.2 §2.7.8.2: the entry (and its len) is written before used idx moves;
  // publish_used() does the release store of idx.
  std::byte* elem = used_ + kUsedRing + kUsedElemSize * std::size_t{used_idx_ & (size_ - 1u)};
  store<uint32_t>(elem, id);
  store<uint32_t>(elem + 4, len);
  ++used_idx_;
  ++counters_.used_returned;
}

bool SplitQueue::unpop() noexcept {
  if (!ready() || !can_unpop_) return false;
  can_unpop_ = false;
  --last_avail_;
  --in_flight_;
  return true;
}

bool SplitQueue::push_used(ChainHead head, uint32_t len) noexcept {
  can_unpop_ = false;
  if (!ready() || head.id >= size_ || in_flight_ == 0) {
    ++counters_.used_rejected;
    return false;
  }
  --in_flight_;
  write_used(head.id, len);
  return true;
}

void SplitQueue::publish_used() noexcept {
  if (!ready() || published_used_ == used_idx_) return;
  if (log_.log_used) [[unlikely]] {
    // SPEC: vhost-user.rst "Migration": the entries are marked after they were written and
    // before idx exposes them, then idx itself.
    const uint32_t count = static_cast<uint16_t>(used_idx_ - published_used_);
    const uint32_t first = published_used_ & (size_ - 1u);
    const uint32_t n = count < size_ ? count : size_;
    const uint32_t head = n < size_ - first ? n : size_ - first;
    detail::log_used_write(log_, kUsedRing + kUsedElemSize * first, kUsedElemSize * head,
                           counters_);
    if (head != n) detail::log_used_write(log_, kUsedRing, kUsedElemSize * (n - head), counters_);
  }
  // SPEC: virtio 1.2 §2.7.8.2: used entries become visible with idx (release).
  store<uint16_t>(used_ + kUsedIdx, used_idx_, std::memory_order_release);
  if (log_.log_used) [[unlikely]]
    detail::log_used_write(log_, kUsedIdx, 2, counters_);
  published_used_ = used_idx_;
}

void SplitQueue::log_written(std::span<const iovec> iov, uint32_t len) noexcept {
  if (log_.log == nullptr || memory_ == nullptr) return;
  detail::log_host_writes(*log_.log, *memory_, iov, len, counters_);
}

bool SplitQueue::needs_notification() noexcept {
  if (!ready() || published_used_ == signalled_used_) return false;
  // Store-load ordering: the driver must see the new used idx before we read its
  // suppression fields, or both sides may decide not to act (a lost wake-up).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old_idx = signalled_used_;
  const bool valid = signalled_valid_;
  signalled_used_ = published_used_;
  signalled_valid_ = true;
  if (!event_idx_) {
    // SPEC: virtio 1.2 §2.7.7.2: without EVENT_IDX, flags 1 means no notification.
    // GUEST: only bit 0 is defined; any other bits are ignored.
    const uint16_t flags = load<uint16_t>(avail_ + kAvailFlags);
    return (flags & kAvailFNoInterrupt) == 0;
  }
  // SPEC: virtio 1.2 §2.7.7.2: notify when the batch passed used_event (ring[size]).
  // GUEST: used_event is any 16-bit index; need_event() is defined for all of them.
  const uint16_t used_event = load<uint16_t>(avail_ + kAvailRing + 2 * std::size_t{size_});
  return !valid || need_event(used_event, published_used_, old_idx);
}

bool SplitQueue::enable_notifications() noexcept {
  if (!ready()) return false;
  if (event_idx_) {
    // SPEC: virtio 1.2 §2.7.10: avail_event (used ring[size]) = the next avail idx we wait for.
    store<uint16_t>(used_ + kUsedRing + kUsedElemSize * std::size_t{size_}, shadow_avail_);
    detail::log_used_write(log_, kUsedRing + kUsedElemSize * std::size_t{size_}, 2, counters_);
  } else {
    store<uint16_t>(used_ + kUsedFlags, 0);
    detail::log_used_write(log_, kUsedFlags, 2, counters_);
  }
  // Store-load ordering again: publish the request, then look for buffers added meanwhile.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (shadow_avail_ != last_avail_) return true;
  return refresh_avail();
}

void SplitQueue::disable_notifications() noexcept {
  if (!ready() || event_idx_) return;
  // SPEC: virtio 1.2 §2.7.10.2: the device sets used flags to 0 or 1 (NO_NOTIFY).
  store<uint16_t>(used_ + kUsedFlags, kUsedFNoNotify);
  detail::log_used_write(log_, kUsedFlags, 2, counters_);
}

}  // namespace vp::virtio
