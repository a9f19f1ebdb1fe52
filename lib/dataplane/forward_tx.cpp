#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "dataplane/forward.hpp"
#include "dataplane/forward_internal.hpp"
#include "dataplane/tx_frame.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/split_queue.hpp"

namespace vp::dataplane {

namespace {

using detail::TxOutcome;

void count_header_fault(TxHeaderFault fault, NetCounters& c) noexcept {
  switch (fault) {
    case TxHeaderFault::kNone:
      return;
    case TxHeaderFault::kBadFlags:
      ++c.tx_dropped_bad_flags;
      return;
    case TxHeaderFault::kCsumNotNegotiated:
      ++c.tx_dropped_csum_not_negotiated;
      return;
    case TxHeaderFault::kBadCsumOffsets:
      ++c.tx_dropped_bad_csum_offsets;
      return;
    case TxHeaderFault::kGsoNotNegotiated:
      ++c.tx_dropped_gso_not_negotiated;
      return;
    case TxHeaderFault::kBadGso:
      ++c.tx_dropped_bad_gso;
      return;
    case TxHeaderFault::kHdrLenPastFrame:
      ++c.tx_dropped_hdr_len_past_frame;
      return;
  }
}

/// Checks one chain and writes its frame to the TAP.
TxOutcome send_one(const virtio::Chain& chain, int tap_fd, const NetSession& s, NetScratch& scratch,
                   NetCounters& c) noexcept {
  const detail::TxFrame frame = detail::check_tx_frame(chain, s, scratch.tx_header(), c);
  if (!frame.ok) return TxOutcome::kDropped;
  return detail::write_tx_frame(frame, tap_fd, scratch.tx_header(), c, scratch.tx_flat());
}

/// Pops chains until the ring is empty (then kicks are enabled: kIdle), the budget is used
/// (kBudget) or `handle` says stop; `handle(chain)` returns the outcome of one chain.
template <virtio::Virtqueue Q, class Handle>
ForwardResult drain_tx(Q& q, int call_fd, const NetSession& s, NetScratch& scratch, NetCounters& c,
                       TxBucket* bucket, Handle handle) noexcept {
  ForwardResult r;
  if (!q.ready()) {
    r.status = ForwardStatus::kQueueStopped;
    return r;
  }
  const uint64_t used_before = q.counters().used_returned;
  // While this call runs, kicks would only cost the guest exits: ask for them again when the
  // ring runs dry.
  q.disable_notifications();
  const std::span<iovec> all = scratch.iov();
  // Slot 0 is reserved for the header copy (see send_one); at most kIovMax per writev.
  const std::span<iovec> chain_iov = all.subspan(1, std::min(all.size(), detail::kIovMax) - 1);
  const uint32_t budget = std::max<uint32_t>(s.budget, 1);

  uint32_t rechecks = 0;
  r.status = ForwardStatus::kBudget;
  while (r.chains < budget) {
    // tx-rate=: the chain stays in the ring (back-pressure), never dropped.
    if (bucket && bucket->empty()) {
      r.status = ForwardStatus::kThrottled;
      break;
    }
    std::optional<virtio::Chain> chain = q.pop(chain_iov);
    if (!chain) {
      if (detail::look_again(q, budget, rechecks, r.status)) continue;
      break;
    }
    const TxOutcome outcome = handle(*chain);
    if (outcome == TxOutcome::kTapFull) {
      // EAGAIN: rewind and wait for EPOLLOUT, never spin or drop. unpop() is valid: nothing touched
      // the queue since this pop.
      q.unpop();
      ++c.tx_tap_full;
      r.status = ForwardStatus::kTapFull;
      break;
    }
    // Never leak a head: every chain goes back; nothing was written into a TX buffer.
    q.push_used(chain->head, 0);
    ++r.chains;
    if (outcome == TxOutcome::kSent) ++r.frames;
  }
  detail::publish_and_notify(q, call_fd, used_before, c);
  return r;
}

}  // namespace

namespace detail {

TxFrame check_tx_frame(const virtio::Chain& chain, const NetSession& s,
                       std::span<std::byte, NetScratch::kTxCopySize> hdr_copy,
                       NetCounters& c) noexcept {
  TxFrame f;
  const uint32_t hdr_len = s.hdr_len;
  // GUEST: the chain's shape and lengths were bounded by the queue; the rules here are
  // virtio-net's. SPEC: virtio 1.2 §5.1.6.2: a TX buffer is device-readable only.
  if (chain.writable_bytes != 0) {
    ++c.tx_dropped_malformed_chain;
    return f;
  }
  if (chain.readable_bytes < hdr_len + kEthHeaderSize) {
    ++c.tx_dropped_too_short;
    return f;
  }
  const uint32_t frame_len = chain.readable_bytes - hdr_len;
  if (frame_len > kMaxFrameSize) {
    ++c.tx_dropped_too_long;
    return f;
  }
  // GUEST: the header (and with lock-mac the Ethernet addresses) is copied out once and only
  // the copy is checked and sent: the guest may rewrite its buffer at any time, and the TAP
  // must get what was checked. The frame holds at least an Ethernet header (checked above).
  const uint32_t copy_len = s.lock_mac ? hdr_len + 12 : hdr_len;
  const std::span<std::byte> copy = hdr_copy.first(copy_len);
  gather(chain.readable, copy);
  const TxHeaderFault fault =
      check_tx_header(decode_net_hdr(copy.first(hdr_len)), frame_len, s.features);
  if (fault != TxHeaderFault::kNone) {
    count_header_fault(fault, c);
    return f;
  }
  // lock-mac: no frame from the guest poses as another host.
  if (s.lock_mac && std::memcmp(copy.data() + hdr_len + 6, s.guest_mac.data(), 6) != 0) {
    ++c.tx_dropped_spoofed_mac;
    return f;
  }

  // Skip the copied bytes in the guest's elements (ANY_LAYOUT: the header may end inside
  // one, exactly at one's end, or span several). Zero-length descriptors produce no iovec,
  // so each step consumes bytes and an element with data follows (the frame has at least an
  // Ethernet header).
  iovec* elem = chain.readable.data();
  std::size_t skip = copy_len;
  while (skip >= elem->iov_len) {
    skip -= elem->iov_len;
    ++elem;
  }
  elem->iov_base = static_cast<std::byte*>(elem->iov_base) + skip;
  elem->iov_len -= skip;
  f.ok = true;
  f.copy_len = copy_len;
  f.frame_len = frame_len;
  f.write_len = chain.readable_bytes;
  f.data = elem;
  f.end = chain.readable.data() + chain.readable.size();
  return f;
}

TxOutcome write_tx_frame(const TxFrame& frame, int tap_fd, std::span<std::byte> hdr_copy,
                         NetCounters& c, std::span<std::byte> flat) noexcept {
  ssize_t n;
  if (frame.write_len <= flat.size()) {
    // GUEST: the header comes from the checked copy; the rest is copied once from guest
    // memory, so the TAP gets one snapshot of the frame whatever the guest does meanwhile.
    std::memcpy(flat.data(), hdr_copy.data(), frame.copy_len);
    gather({frame.data, frame.end}, flat.subspan(frame.copy_len, frame.write_len - frame.copy_len));
    do {
      n = ::write(tap_fd, flat.data(), frame.write_len);
    } while (n < 0 && errno == EINTR);
  } else {
    iovec* first = frame.data - 1;  // a consumed header element, or scratch slot 0
    *first = iovec{hdr_copy.data(), frame.copy_len};
    const int count = static_cast<int>(frame.end - first);
    do {
      n = ::writev(tap_fd, first, count);
    } while (n < 0 && errno == EINTR);
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return TxOutcome::kTapFull;
  if (n != static_cast<ssize_t>(frame.write_len)) {
    // tun refuses the whole frame (EINVAL for a header it rejects, EIO while the link is
    // down) or takes all of it; anything else is a failure too. Dropped, never retried.
    ++c.tap_write_fails;
    return TxOutcome::kDropped;
  }
  ++c.tx_packets;
  c.tx_bytes += frame.frame_len;
  return TxOutcome::kSent;
}

}  // namespace detail

template <virtio::Virtqueue Q>
ForwardResult forward_tx(Q& q, int tap_fd, int call_fd, const NetSession& s, NetScratch& scratch,
                         NetCounters& c, TxBucket* bucket) noexcept {
  if (!bucket) {
    return drain_tx(q, call_fd, s, scratch, c, nullptr, [&](const virtio::Chain& chain) noexcept {
      return send_one(chain, tap_fd, s, scratch, c);
    });
  }
  return drain_tx(q, call_fd, s, scratch, c, bucket, [&](const virtio::Chain& chain) noexcept {
    const uint64_t bytes = c.tx_bytes;
    const TxOutcome outcome = send_one(chain, tap_fd, s, scratch, c);
    if (outcome == TxOutcome::kSent) bucket->spend(static_cast<uint32_t>(c.tx_bytes - bytes));
    return outcome;
  });
}

template <virtio::Virtqueue Q>
ForwardResult discard_tx(Q& q, int call_fd, const NetSession& s, NetScratch& scratch,
                         NetCounters& c) noexcept {
  // SPEC: vhost-user.rst "Ring states": on a disabled ring a net device must process and
  // discard TX.
  return drain_tx(q, call_fd, s, scratch, c, nullptr, [&](const virtio::Chain&) noexcept {
    ++c.tx_dropped_ring_disabled;
    return TxOutcome::kDropped;
  });
}

template ForwardResult discard_tx<virtio::SplitQueue>(virtio::SplitQueue&, int, const NetSession&,
                                                      NetScratch&, NetCounters&) noexcept;
template ForwardResult discard_tx<virtio::PackedQueue>(virtio::PackedQueue&, int, const NetSession&,
                                                       NetScratch&, NetCounters&) noexcept;
template ForwardResult forward_tx<virtio::SplitQueue>(virtio::SplitQueue&, int, int,
                                                      const NetSession&, NetScratch&, NetCounters&,
                                                      TxBucket*) noexcept;
template ForwardResult forward_tx<virtio::PackedQueue>(virtio::PackedQueue&, int, int,
                                                       const NetSession&, NetScratch&, NetCounters&,
                                                       TxBucket*) noexcept;

}  // namespace vp::dataplane
