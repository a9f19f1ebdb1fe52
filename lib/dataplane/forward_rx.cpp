#include <poll.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "dataplane/forward.hpp"
#include "dataplane/forward_internal.hpp"
#include "dataplane/queue_rewind.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/split_queue.hpp"

// How a frame gets from the TAP into guest buffers without a bounce buffer:
//
// tun cannot say how long the next frame is (no FIONREAD, no MSG_PEEK on the character
// device), and a readv shorter than the frame TRUNCATES it silently: the rest is discarded
// and the call returns the truncated length (measured on Linux 6.18; tun_put_user copies
// min(frame, room) and, with IFF_NO_PI, has no TUN_PKT_STRIP flag to say so). A read
// shorter than the virtio header fails with EINVAL and drops the frame too. So:
//  - buffers are popped ahead until they cover hdr_len + max_rx_frame (MRG_RXBUF) or one
//    chain (without it), and kept across frames of one call (a pool in the scratch array);
//    with MRG_RXBUF and a hold, only until they cover the size of recent frames
//    (RxHold::expect): a larger frame overflows into the hold, as below, and costs one copy
//    more, while a stream of 64-byte frames reads into one guest buffer, not seventeen;
//  - when the ring runs dry before the pool covers that (the guest is refilling), the read
//    still goes ahead — small frames must not wait — but overflows into the queue's RxHold
//    instead of the probe: a frame that did not fit is kept there and delivered first once
//    the guest has posted enough (kNoBuffers until then), not lost. A pool that holds the
//    whole ring reads with the probe: the guest cannot post more;
//  - every readv ends with a probe element past the guest buffers: a frame that reaches it
//    did not fit, and is dropped and counted instead of being delivered truncated;
//  - what is left in the pool when the call ends is put back on the ring (unpop, or
//    rewind_popped for several), so nothing stays in flight between calls.

namespace vp::dataplane {

namespace {

// Stop popping ahead when fewer iovecs than this remain and the pool already holds something:
// a chain with more elements than the space left would be given back by the queue as over
// capacity (length 0), which wastes a guest buffer.
constexpr uint32_t kMinTailIovecs = 64;

// Used entries are published (and the driver notified if it asks) once this many are
// waiting, not only when the call ends: a 64 KB frame takes 17 buffers of 4 KB, so one call
// can fill the whole ring, and a driver that sees none of it until then refills nothing
// meanwhile (both sides would take turns instead of working at once). 64 entries is a whole
// budget of one-buffer frames, so small frames still publish once per call.
constexpr uint32_t kPublishEvery = 64;

// The least a read with a hold covers: a full-size frame of a 1500-byte MTU with a VLAN tag,
// so ordinary traffic never takes the overflow path.
constexpr uint32_t kMinExpectedFrame = 1522;

bool tap_readable(int fd) noexcept {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

template <virtio::Virtqueue Q>
class RxRun {
 public:
  RxRun(Q& q, int tap_fd, const NetSession& s, NetScratch& scratch, NetCounters& c,
        RxHold* hold) noexcept
      : q_(q),
        tap_fd_(tap_fd),
        s_(s),
        c_(c),
        hold_(s.mrg_rxbuf ? hold : nullptr),
        iov_(scratch.iov().first(std::min(scratch.iov().size(), detail::kIovMax))),
        bufs_(scratch.rx_buffers()),
        probe_(scratch.probe()),
        iov_cap_(static_cast<uint32_t>(iov_.size() - 1)),
        publish_every_(std::clamp<uint32_t>(q.size() / 4u, 1, kPublishEvery)) {}

  ForwardResult run(int call_fd) noexcept;

 private:
  /// Why top_up() stopped popping.
  enum class TopUp : uint8_t { kCovered, kScratchFull, kRingEmpty };

  uint32_t pool_count() const noexcept { return buf_end_ - buf_begin_; }
  /// Bytes of the frame kept in the hold, 0 if none.
  uint32_t held() const noexcept { return hold_ != nullptr ? hold_->len : 0; }
  /// Bytes a read must have buffers for: the largest frame, or with a hold what recent
  /// frames needed (never more than the largest).
  uint64_t read_target() const noexcept {
    const uint64_t largest = uint64_t{s_.hdr_len} + s_.max_rx_frame;
    if (hold_ == nullptr || hold_->expect == 0) return largest;
    return std::min<uint64_t>(largest, hold_->expect);
  }
  bool pool_covers() const noexcept {
    if (!s_.mrg_rxbuf) return pool_count() != 0;
    return pool_bytes_ >= (held() != 0 ? held() : read_target());
  }
  /// A frame of n bytes (header included) arrived: up to it at once, down towards it by an
  /// eighth of the gap per frame.
  void learn(uint32_t n) noexcept {
    if (hold_ == nullptr) return;
    const uint32_t floor = s_.hdr_len + kMinExpectedFrame;
    const uint32_t want = std::max(n, floor);
    uint32_t& e = hold_->expect;
    if (e == 0 || want >= e) {
      e = want;
    } else {
      e -= std::max<uint32_t>((e - want) >> 3, 1);
    }
  }
  /// True when the pool holds every slot of the ring: the guest cannot add a buffer before
  /// some are used.
  bool pool_holds_ring() const noexcept {
    uint32_t slots = 0;
    for (uint32_t i = buf_begin_; i < buf_end_; ++i) slots += bufs_[i].head.slots;
    return slots >= q_.size();
  }
  void compact() noexcept;
  TopUp top_up() noexcept;
  void deliver(uint32_t n) noexcept;
  void keep(uint32_t n) noexcept;
  void deliver_held() noexcept;
  void give_back_leftovers() noexcept;
  /// Publishes the used entries written since the last publish once there are
  /// publish_every_ of them (see kPublishEvery).
  void publish_some(int call_fd) noexcept;

  Q& q_;
  const int tap_fd_;
  const NetSession& s_;
  NetCounters& c_;
  RxHold* const hold_;          // mergeable buffers only
  const std::span<iovec> iov_;  // pool elements, then one slot for the probe
  const std::span<RxBuffer> bufs_;
  const std::span<std::byte> probe_;
  const uint32_t iov_cap_;
  const uint32_t publish_every_;  // a quarter of the ring, at most kPublishEvery
  uint64_t published_at_ = 0;     // q_.counters().used_returned at the last publish

  // The pool: buffers [buf_begin_, buf_end_) in pop order, their elements contiguous in
  // iov_[iov_begin_, iov_end_). The first `pinned_` cannot be rewound (a chain consumed
  // after them went back to the used ring) and are filled first, or given back empty.
  uint32_t iov_begin_ = 0;
  uint32_t iov_end_ = 0;
  uint32_t buf_begin_ = 0;
  uint32_t buf_end_ = 0;
  uint32_t pinned_ = 0;
  uint64_t pool_bytes_ = 0;
  ForwardResult result_;
};

template <virtio::Virtqueue Q>
void RxRun<Q>::compact() noexcept {
  if (buf_begin_ == 0) return;
  const uint32_t shift = iov_begin_;
  std::memmove(iov_.data(), iov_.data() + iov_begin_, sizeof(iovec) * (iov_end_ - iov_begin_));
  std::memmove(bufs_.data(), bufs_.data() + buf_begin_, sizeof(RxBuffer) * pool_count());
  buf_end_ -= buf_begin_;
  buf_begin_ = 0;
  iov_end_ -= shift;
  iov_begin_ = 0;
  for (uint32_t i = 0; i < buf_end_; ++i) bufs_[i].iov_begin -= shift;
}

template <virtio::Virtqueue Q>
typename RxRun<Q>::TopUp RxRun<Q>::top_up() noexcept {
  while (!pool_covers()) {
    compact();
    const uint32_t tail = iov_cap_ - iov_end_;
    if (tail == 0 || buf_end_ == bufs_.size() || (pool_count() != 0 && tail < kMinTailIovecs)) {
      return TopUp::kScratchFull;  // read with what the pool has
    }
    const uint64_t used_before = q_.counters().used_returned;
    const uint32_t held = pool_count();
    std::optional<virtio::Chain> chain = q_.pop(iov_.subspan(iov_end_, tail));
    // The queue gave back a malformed chain consumed after the pooled ones: rewinding them
    // would re-pop it. They stay pinned until filled or given back empty.
    if (q_.counters().used_returned != used_before) pinned_ = held;
    if (!chain) return TopUp::kRingEmpty;
    // GUEST: SPEC: virtio 1.2 §5.1.6.3: receive buffers are device-writable, and each is at
    // least a virtio header long (with MRG_RXBUF; without it the one buffer must hold the
    // header too).
    if (chain->readable_bytes != 0 || chain->writable_bytes < s_.hdr_len) {
      q_.push_used(chain->head, 0);  // never leak a head: it goes back with length 0
      ++c_.rx_malformed_chain;
      ++result_.chains;
      pinned_ = held;
      continue;
    }
    // The chain has no readable elements, so its writable ones start where pop() began.
    const auto count = static_cast<uint32_t>(chain->writable.size());
    bufs_[buf_end_++] = RxBuffer{chain->head, iov_end_, count, chain->writable_bytes};
    iov_end_ += count;
    pool_bytes_ += chain->writable_bytes;
  }
  return TopUp::kCovered;
}

template <virtio::Virtqueue Q>
void RxRun<Q>::deliver(uint32_t n) noexcept {
  // Buffers in pool order until the frame is covered (n <= pool_bytes_ was checked).
  uint32_t k = 0;
  uint32_t remaining = n;
  while (remaining != 0) {
    remaining -= std::min(bufs_[buf_begin_ + k].bytes, remaining);
    ++k;
  }
  // SPEC: virtio 1.2 §5.1.6.4: num_buffers is the number of buffers the frame spans; 1
  // without MRG_RXBUF. tun writes the first 10 bytes of a 12-byte header and skips the rest.
  if (s_.hdr_len == kNetHdrSize) {
    const auto le = static_cast<uint16_t>(k);
    const std::byte bytes[2] = {static_cast<std::byte>(le & 0xff), static_cast<std::byte>(le >> 8)};
    const RxBuffer& first = bufs_[buf_begin_];
    detail::scatter(iov_.subspan(first.iov_begin, first.iov_count), kNumBuffersOffset, bytes);
  }
  remaining = n;
  // Live migration: the bytes written into each buffer are marked in the dirty log after
  // the write and before push_used()/publish expose them. Off: one predictable branch.
  const bool logging = q_.logging();
  for (uint32_t i = 0; i < k; ++i) {
    const RxBuffer& b = bufs_[buf_begin_ + i];
    const uint32_t len = std::min(b.bytes, remaining);
    remaining -= len;
    if (logging) [[unlikely]]
      q_.log_written(iov_.subspan(b.iov_begin, b.iov_count), len);
    q_.push_used(b.head, len);
    pool_bytes_ -= b.bytes;
  }
  result_.chains += k;
  ++result_.frames;
  ++c_.rx_packets;
  c_.rx_bytes += n - s_.hdr_len;
  buf_begin_ += k;
  pinned_ = pinned_ > k ? pinned_ - k : 0;
  if (buf_begin_ == buf_end_) {
    buf_begin_ = buf_end_ = iov_begin_ = iov_end_ = 0;
  } else {
    iov_begin_ = bufs_[buf_begin_].iov_begin;
  }
}

template <virtio::Virtqueue Q>
void RxRun<Q>::keep(uint32_t n) noexcept {
  // The read filled every pooled buffer, in pool order, and put the rest at the start of the
  // hold: make the hold the whole frame. The buffers go back unused.
  const std::span<std::byte> h = hold_->buffer();
  const auto in_pool = static_cast<std::size_t>(pool_bytes_);
  std::memmove(h.data() + in_pool, h.data(), n - in_pool);
  detail::gather(iov_.subspan(iov_begin_, iov_end_ - iov_begin_), h.first(in_pool));
  hold_->len = n;
  ++c_.rx_frames_held;
}

template <virtio::Virtqueue Q>
void RxRun<Q>::deliver_held() noexcept {
  const uint32_t n = hold_->len;
  detail::scatter(iov_.subspan(iov_begin_, iov_end_ - iov_begin_), 0, hold_->buffer().first(n));
  hold_->len = 0;
  deliver(n);
}

template <virtio::Virtqueue Q>
void RxRun<Q>::give_back_leftovers() noexcept {
  // Called with no pinned buffer left: everything in the pool was popped after every chain
  // that went back, and nothing else is in flight.
  if (pool_count() == 0) return;
  // One buffer, popped last and nothing pushed since: the queue's own unpop() is exact (and
  // keeps the packed ring's notification history, which rewind_popped resets).
  if (pool_count() == 1 && q_.unpop()) return;
  uint32_t slots = 0;
  for (uint32_t i = buf_begin_; i < buf_end_; ++i) slots += bufs_[i].head.slots;
  // False only if the queue stopped meanwhile; a stopped queue is reset before reuse.
  rewind_popped(q_, slots);
}

template <virtio::Virtqueue Q>
void RxRun<Q>::publish_some(int call_fd) noexcept {
  if (q_.counters().used_returned - published_at_ < publish_every_) return;
  detail::publish_and_notify(q_, call_fd, published_at_, c_);
  published_at_ = q_.counters().used_returned;
}

template <virtio::Virtqueue Q>
ForwardResult RxRun<Q>::run(int call_fd) noexcept {
  if (!q_.ready()) {
    result_.status = ForwardStatus::kQueueStopped;
    return result_;
  }
  published_at_ = q_.counters().used_returned;
  q_.disable_notifications();
  const uint32_t budget = std::max<uint32_t>(s_.budget, 1);
  uint32_t reads = 0;
  uint32_t empty_rechecks = 0;

  result_.status = ForwardStatus::kBudget;
  while (reads < budget) {
    const TopUp topped = top_up();
    // A queue that broke while popping refuses every push: read nothing more for it.
    if (!q_.ready()) {
      result_.status = ForwardStatus::kQueueStopped;
      break;
    }
    // GUEST: can the ring ever offer more? Not once the pool holds all of it.
    const bool ring_dry = topped == TopUp::kRingEmpty && !pool_holds_ring();
    if (held() != 0) {
      if (pool_covers()) {
        deliver_held();
        publish_some(call_fd);
        continue;
      }
      if (!ring_dry) {
        // The guest's buffers can never cover it (the whole ring, or the scratch arrays, are
        // too small): dropped after all, and the TAP is read again.
        hold_->len = 0;
        ++c_.rx_dropped_too_big;
        continue;
      }
    }
    if (pool_count() == 0 || held() != 0) {
      // The race: buffers added after our last look but before the driver saw the request
      // for kicks. Bounded, in case a guest keeps offering only malformed chains.
      if (q_.enable_notifications()) {
        if (++empty_rechecks > budget) break;  // kBudget: call again
        q_.disable_notifications();
        continue;
      }
      // Leave the frame in the TAP (or the hold); the RX kick resumes. Counted only if one
      // is waiting.
      if (held() != 0 || tap_readable(tap_fd_)) {
        ++c_.no_rx_avail_buffer;
        result_.status = ForwardStatus::kNoBuffers;
      } else {
        result_.status = ForwardStatus::kIdle;
      }
      break;
    }
    // The pool's elements, then where an overflow goes: the hold while the guest is still
    // refilling (mergeable buffers), else the probe (a frame that reaches it did not fit).
    const bool keep_overflow =
        hold_ != nullptr && (ring_dry || pool_bytes_ < uint64_t{s_.hdr_len} + s_.max_rx_frame);
    iov_[iov_end_] = keep_overflow ? iovec{hold_->buffer().data(), RxHold::kCapacity}
                                   : iovec{probe_.data(), probe_.size()};
    const ssize_t n =
        ::readv(tap_fd_, iov_.data() + iov_begin_, static_cast<int>(iov_end_ - iov_begin_ + 1));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        result_.status = ForwardStatus::kIdle;
      } else {
        ++c_.tap_read_fails;
        result_.status = ForwardStatus::kTapError;
      }
      break;
    }
    if (n == 0) {  // not from tun; a socket stand-in whose peer closed
      ++c_.tap_read_fails;
      result_.status = ForwardStatus::kTapError;
      break;
    }
    ++reads;
    learn(static_cast<uint32_t>(n));
    if (static_cast<uint64_t>(n) > pool_bytes_) {
      // GUEST: at most the hold's capacity arrives past the pool.
      if (keep_overflow && static_cast<std::size_t>(n) <= RxHold::kCapacity) {
        keep(static_cast<uint32_t>(n));  // delivered once the guest posts enough
        continue;
      }
      // The pooled buffers keep whatever the dropped frame left in them; still not used.
      ++c_.rx_dropped_too_big;
      continue;
    }
    if (static_cast<uint64_t>(n) < uint64_t{s_.hdr_len} + kEthHeaderSize) {
      ++c_.rx_dropped_runt;
      continue;
    }
    deliver(static_cast<uint32_t>(n));
    publish_some(call_fd);
  }

  // Buffers that cannot be rewound go back empty (the guest drops them as runts).
  for (uint32_t i = 0; i < pinned_; ++i) {
    q_.push_used(bufs_[buf_begin_ + i].head, 0);
    ++c_.rx_buffers_returned_empty;
    ++result_.chains;
  }
  buf_begin_ += pinned_;
  pinned_ = 0;
  // Packed rewinding forgets unpublished entries and the notification history: publish and
  // notify first.
  detail::publish_and_notify(q_, call_fd, published_at_, c_);
  give_back_leftovers();
  return result_;
}

}  // namespace

template <virtio::Virtqueue Q>
ForwardResult forward_rx(Q& q, int tap_fd, int call_fd, const NetSession& s, NetScratch& scratch,
                         NetCounters& c, RxHold* hold) noexcept {
  RxRun<Q> run(q, tap_fd, s, scratch, c, hold);
  return run.run(call_fd);
}

template ForwardResult forward_rx<virtio::SplitQueue>(virtio::SplitQueue&, int, int,
                                                      const NetSession&, NetScratch&, NetCounters&,
                                                      RxHold*) noexcept;
template ForwardResult forward_rx<virtio::PackedQueue>(virtio::PackedQueue&, int, int,
                                                       const NetSession&, NetScratch&, NetCounters&,
                                                       RxHold*) noexcept;

}  // namespace vp::dataplane
