#include "dataplane/tx_uring.hpp"

#include <liburing.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "dataplane/forward_internal.hpp"
#include "dataplane/tx_frame.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/split_queue.hpp"

namespace vp::dataplane {

/// One chain held until its turn on the used ring: the head, the write's state, the checked
/// header copy the write sends first (the kernel reads it while the write runs), the iovecs.
struct TxUring::Slot {
  enum class State : uint8_t {
    kInFlight,  // handed to io_uring (or queued for it)
    kWaiting,   // the TAP refused it with EAGAIN: written again next call
    kDone,      // completed, failed or dropped: goes back when the chains before it have
  };
  virtio::ChainHead head;
  State state = State::kDone;
  uint32_t frame_len = 0;
  uint32_t write_len = 0;
  uint32_t iov_count = 0;
  std::byte hdr[NetScratch::kTxCopySize] = {};
  iovec iov[kSlotIovecs] = {};
};

namespace {

// user_data of the cancel request drain_tx_uring() sends; slot indices are below 4096.
constexpr uint64_t kCancelTag = ~uint64_t{0};
constexpr uint32_t kMaxSlots = 4096;

}  // namespace

Result<std::unique_ptr<TxUring>> TxUring::create(int tap_fd, uint32_t slots) {
  slots = std::clamp<uint32_t>(slots, 1, kMaxSlots);
  std::unique_ptr<TxUring> t(new TxUring);
  t->ring_ = std::make_unique<io_uring>();
  // SUBMIT_ALL: a bad SQE completes with its error instead of stopping the batch.
  // COOP_TASKRUN: no inter-processor interrupt for completions; they are reaped here anyway.
  // The CQ holds two batches, so it cannot overflow between reaps.
  io_uring_params params{};
  params.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE;
  params.cq_entries = 2 * slots;
  int rc = io_uring_queue_init_params(slots, t->ring_.get(), &params);
  if (rc == -EINVAL) {
    // A kernel older than 5.19 knows neither flag.
    params = io_uring_params{};
    rc = io_uring_queue_init_params(slots, t->ring_.get(), &params);
  }
  if (rc < 0) {
    t->ring_.reset();
    return sys_fail("io_uring_queue_init", -rc);
  }
  if (const int reg = io_uring_register_files(t->ring_.get(), &tap_fd, 1); reg < 0) {
    io_uring_queue_exit(t->ring_.get());
    t->ring_.reset();
    return sys_fail("io_uring_register_files", -reg);
  }
  t->slot_count_ = slots;
  t->slots_ = std::make_unique<Slot[]>(slots);
  t->free_ = std::make_unique<uint16_t[]>(slots);
  t->order_ = std::make_unique<uint16_t[]>(slots);
  for (uint32_t i = 0; i < slots; ++i) t->free_[i] = static_cast<uint16_t>(slots - 1 - i);
  t->free_count_ = slots;
  return t;
}

Result<void> TxUring::probe() {
  io_uring ring{};
  if (const int rc = io_uring_queue_init(1, &ring, 0); rc < 0) {
    return sys_fail("io_uring_queue_init", -rc);
  }
  io_uring_queue_exit(&ring);
  return {};
}

TxUring::~TxUring() {
  if (ring_) io_uring_queue_exit(ring_.get());
}

int TxUring::fd() const noexcept { return ring_ ? ring_->ring_fd : -1; }

/// One call's work on a TxUring: what every step shares (queue, ring, counters, result).
template <virtio::Virtqueue Q>
struct TxUringPass {
  using Slot = TxUring::Slot;
  Q& q;
  TxUring& t;
  NetCounters& c;
  ForwardResult& r;
  bool tap_full = false;  // a write came back with EAGAIN in this call

  /// Takes a free slot (the caller checked there is one) and holds it, last in pop order.
  uint16_t hold(virtio::ChainHead head) noexcept {
    const uint16_t index = t.free_[--t.free_count_];
    t.order_[(t.order_head_ + t.held_) % t.slot_count_] = index;
    ++t.held_;
    Slot& slot = t.slots_[index];
    slot.head = head;
    slot.state = Slot::State::kDone;
    return index;
  }

  /// Hands every prepared SQE to the kernel (one io_uring_enter). SQEs the kernel did not
  /// take (it ran out of memory) stay queued and go with the next submission.
  void submit() noexcept {
    if (t.unsubmitted_ == 0) return;
    const int n = io_uring_submit(t.ring_.get());
    if (n > 0) t.unsubmitted_ -= std::min<uint32_t>(t.unsubmitted_, static_cast<uint32_t>(n));
  }

  /// Queues the write of slot `index` (its iovecs are filled in).
  void prepare(uint16_t index) noexcept {
    Slot& slot = t.slots_[index];
    io_uring_sqe* sqe = io_uring_get_sqe(t.ring_.get());
    if (sqe == nullptr) {
      // The SQ has an entry per slot, so only SQEs the kernel did not take can fill it.
      submit();
      sqe = io_uring_get_sqe(t.ring_.get());
    }
    if (sqe == nullptr) {
      slot.state = Slot::State::kWaiting;  // written again next call
      ++t.waiting_;
      tap_full = true;
      return;
    }
    // Fixed file 0 is the TAP. The offset is ignored by tun (a stream device).
    io_uring_prep_writev2(sqe, 0, slot.iov, slot.iov_count, 0, t.nowait_ ? RWF_NOWAIT : 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    sqe->user_data = index;
    slot.state = Slot::State::kInFlight;
    ++t.unsubmitted_;
    ++t.in_flight_;
  }

  /// Takes every completion that has arrived: sent, failed, or refused (EAGAIN: kept to be
  /// written again). Gives nothing back yet: see give_back().
  void reap() noexcept {
    io_uring* ring = t.ring_.get();
    unsigned head;
    io_uring_cqe* cqe;
    unsigned seen = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
      ++seen;
      if (cqe->user_data == kCancelTag) continue;
      Slot& slot = t.slots_[static_cast<uint16_t>(cqe->user_data)];
      --t.in_flight_;
      const int res = cqe->res;
      if (res == -EAGAIN || (res == -EOPNOTSUPP && t.nowait_)) {
        // EAGAIN: the TAP is full; never spin, never drop: keep the chain and wait for
        // EPOLLOUT. EOPNOTSUPP: the fd takes no RWF_NOWAIT; write it again without.
        if (res == -EOPNOTSUPP) t.nowait_ = false;
        slot.state = Slot::State::kWaiting;
        ++t.waiting_;
        tap_full = true;
        continue;
      }
      if (res == static_cast<int>(slot.write_len)) {
        ++c.tx_packets;
        c.tx_bytes += slot.frame_len;
        ++r.frames;
      } else {
        // A TAP write is all or nothing: tun refuses a header it rejects (EINVAL), writes
        // while the link is down (EIO); a cancelled write (drain) never ran. Dropped.
        ++c.tap_write_fails;
      }
      slot.state = Slot::State::kDone;
    }
    io_uring_cq_advance(ring, seen);
  }

  /// Gives back, in pop order, every held chain up to the first one still in flight or
  /// waiting. Never leak a head: each goes back with length 0 (nothing was written into a TX
  /// buffer).
  void give_back() noexcept {
    while (t.held_ > 0) {
      const uint16_t index = t.order_[t.order_head_];
      Slot& slot = t.slots_[index];
      if (slot.state != Slot::State::kDone) break;
      q.push_used(slot.head, 0);
      ++r.chains;
      t.order_head_ = (t.order_head_ + 1) % t.slot_count_;
      --t.held_;
      t.free_[t.free_count_++] = index;
    }
  }

  /// Writes again, in pop order, the frames a full TAP refused.
  void resend_waiting() noexcept {
    if (t.waiting_ == 0) return;
    t.waiting_ = 0;
    for (uint32_t i = 0; i < t.held_; ++i) {
      const uint16_t index = t.order_[(t.order_head_ + i) % t.slot_count_];
      if (t.slots_[index].state == Slot::State::kWaiting) prepare(index);
    }
    submit();
    reap();
    give_back();
  }
};

template <virtio::Virtqueue Q>
ForwardResult forward_tx_uring(Q& q, TxUring& t, int tap_fd, int call_fd, const NetSession& s,
                               NetScratch& scratch, NetCounters& c, TxBucket* bucket) noexcept {
  using Slot = TxUring::Slot;
  ForwardResult r;
  const uint64_t used_before = q.counters().used_returned;
  TxUringPass<Q> pass{q, t, c, r};
  // Completions that arrived while the worker slept (a write the kernel parked).
  pass.reap();
  pass.give_back();
  if (!q.ready()) {
    detail::publish_and_notify(q, call_fd, used_before, c);
    r.status = ForwardStatus::kQueueStopped;
    return r;
  }
  pass.resend_waiting();
  if (pass.tap_full) {
    ++c.tx_tap_full;
    detail::publish_and_notify(q, call_fd, used_before, c);
    r.status = ForwardStatus::kTapFull;
    return r;
  }
  // While this call runs, kicks would only cost the guest exits: ask for them again when the
  // ring runs dry.
  q.disable_notifications();
  const std::span<iovec> all = scratch.iov();
  // Slot 0 is reserved for the header copy of a chain too long for a TxUring slot (written
  // with writev from here); at most kIovMax per writev.
  const std::span<iovec> chain_iov = all.subspan(1, std::min(all.size(), detail::kIovMax) - 1);
  const uint32_t budget = std::max<uint32_t>(s.budget, 1);

  uint32_t popped = 0;
  uint32_t rechecks = 0;
  bool throttled = false;
  r.status = ForwardStatus::kBudget;
  while (popped < budget) {
    if (t.free_count_ == 0) {
      // Every slot is held: let the kernel finish some.
      pass.submit();
      pass.reap();
      pass.give_back();
      if (pass.tap_full) break;
      if (t.free_count_ == 0) {
        // The kernel parked a write (no RWF_NOWAIT): its completion wakes the worker through
        // the ring's fd, and the next call carries on.
        r.status = ForwardStatus::kIdle;
        break;
      }
    }
    // tx-rate=: the chain stays in the ring (back-pressure), never dropped.
    if (bucket && bucket->empty()) {
      throttled = true;
      break;
    }
    std::optional<virtio::Chain> chain = q.pop(chain_iov);
    if (!chain) {
      if (detail::look_again(q, budget, rechecks, r.status)) continue;
      break;
    }
    ++popped;
    Slot& next = t.slots_[t.free_[t.free_count_ - 1]];
    const detail::TxFrame frame = detail::check_tx_frame(*chain, s, next.hdr, c);
    if (!frame.ok) {
      pass.hold(chain->head);  // dropped and counted: back in its turn
      continue;
    }
    const auto elements = static_cast<uint32_t>(frame.end - frame.data);
    if (elements + 1 > TxUring::kSlotIovecs) {
      // Too long for a slot: the frames popped before it go first, then this one with
      // writev from the scratch array. Nothing goes back on the ring in between, so a full
      // TAP can still rewind it.
      pass.submit();
      pass.reap();
      if (pass.tap_full) {
        q.unpop();  // valid: nothing touched the queue since this pop
        break;
      }
      const detail::TxOutcome outcome = detail::write_tx_frame(frame, tap_fd, next.hdr, c);
      if (outcome == detail::TxOutcome::kTapFull) {
        q.unpop();  // valid: nothing touched the queue since this pop
        pass.tap_full = true;
        break;
      }
      pass.hold(chain->head);
      if (outcome == detail::TxOutcome::kSent) {
        ++r.frames;
        if (bucket) bucket->spend(frame.frame_len);
      }
      continue;
    }
    const uint16_t index = pass.hold(chain->head);
    Slot& slot = t.slots_[index];
    slot.frame_len = frame.frame_len;
    slot.write_len = frame.write_len;
    slot.iov[0] = iovec{slot.hdr, frame.copy_len};
    std::copy(frame.data, frame.end, slot.iov + 1);
    slot.iov_count = elements + 1;
    pass.prepare(index);
    // Spent when submitted: a write refused for room is sent again later without a new
    // charge; one the TAP refuses outright still spent its share.
    if (bucket) bucket->spend(frame.frame_len);
  }
  pass.submit();
  pass.reap();
  pass.give_back();
  if (pass.tap_full) {
    ++c.tx_tap_full;
    r.status = ForwardStatus::kTapFull;
  } else if (t.unsubmitted_ > 0) {
    // The kernel took only part of the batch (out of memory): no completion will wake the
    // worker for the rest, so ask to be called again soon.
    r.status = ForwardStatus::kBudget;
  } else if (throttled) {
    r.status = ForwardStatus::kThrottled;
  }
  detail::publish_and_notify(q, call_fd, used_before, c);
  return r;
}

template <virtio::Virtqueue Q>
void drain_tx_uring(Q& q, TxUring& t, int call_fd, NetCounters& c) noexcept {
  using Slot = TxUring::Slot;
  ForwardResult r;
  const uint64_t used_before = q.counters().used_returned;
  TxUringPass<Q> pass{q, t, c, r};
  pass.submit();
  pass.reap();
  if (t.in_flight_ > 0) {
    // Writes the kernel parked (a full TAP without RWF_NOWAIT) would run whenever the TAP
    // drains, long after the guest memory they read is gone: cancel them, then wait for
    // every completion. A write already running finishes; it cannot block.
    if (io_uring_sqe* sqe = io_uring_get_sqe(t.ring_.get())) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
      sqe->user_data = kCancelTag;
      ++t.unsubmitted_;
    }
    pass.submit();
    while (t.in_flight_ > 0) {
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe(t.ring_.get(), &cqe);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN) break;
      pass.reap();
    }
  }
  // Frames still waiting for room in the TAP will not be sent by this queue: their chains go
  // back unsent, counted as failed writes.
  for (uint32_t i = 0; i < t.held_; ++i) {
    Slot& slot = t.slots_[t.order_[(t.order_head_ + i) % t.slot_count_]];
    if (slot.state == Slot::State::kWaiting) {
      ++c.tap_write_fails;
      slot.state = Slot::State::kDone;
    }
  }
  t.waiting_ = 0;
  pass.give_back();
  detail::publish_and_notify(q, call_fd, used_before, c);
}

template ForwardResult forward_tx_uring<virtio::SplitQueue>(virtio::SplitQueue&, TxUring&, int, int,
                                                            const NetSession&, NetScratch&,
                                                            NetCounters&, TxBucket*) noexcept;
template ForwardResult forward_tx_uring<virtio::PackedQueue>(virtio::PackedQueue&, TxUring&, int,
                                                             int, const NetSession&, NetScratch&,
                                                             NetCounters&, TxBucket*) noexcept;
template void drain_tx_uring<virtio::SplitQueue>(virtio::SplitQueue&, TxUring&, int,
                                                 NetCounters&) noexcept;
template void drain_tx_uring<virtio::PackedQueue>(virtio::PackedQueue&, TxUring&, int,
                                                  NetCounters&) noexcept;

}  // namespace vp::dataplane
