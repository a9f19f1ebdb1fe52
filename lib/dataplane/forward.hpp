#pragma once

// virtio-net forwarding for one queue pair and one TAP queue: guest TX chains are written to
// the TAP with writev straight from guest memory, TAP frames are read with readv straight
// into guest RX buffers. One copy per frame, made by the kernel. Templated on the ring
// format (split or packed); explicit instantiations for both live in forward_tx.cpp and
// forward_rx.cpp.
//
// Hot path: every function here is noexcept and never allocates, locks or logs; the
// scratch arrays are allocated once per worker (NetScratch); drops are counted in
// NetCounters, never thrown.
//
// Threading: a queue, its TAP fd and its NetScratch belong to one worker thread at a time.
// forward_rx() must be the only code that pops from its RX queue, and nothing may be in
// flight on it between calls (it rewinds what it popped and did not fill before returning).

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "dataplane/net_counters.hpp"
#include "dataplane/net_header.hpp"
#include "dataplane/tx_bucket.hpp"
#include "virtio/queue.hpp"

namespace vp::dataplane {

/// Per-session constants, fixed when the driver sets FEATURES_OK.
struct NetSession {
  uint32_t hdr_len = kNetHdrSize;  ///< 10 or 12, the TAP's TUNSETVNETHDRSZ (net_hdr_len())
  bool mrg_rxbuf = false;          ///< VIRTIO_NET_F_MRG_RXBUF negotiated
  uint64_t features = 0;           ///< negotiated feature bits (TX header checks read them)
  /// The largest frame (without virtio header) the TAP may deliver. RX pops buffers to cover
  /// hdr_len + this before each read. The worker may lower it to MTU + 18 when no
  /// GUEST_TSO4/TSO6/UFO/USO is negotiated; a larger frame is still never delivered
  /// truncated (it is dropped and counted), so this only trades buffers popped for drops.
  uint32_t max_rx_frame = kMaxFrameSize;
  uint32_t budget = 64;  ///< chains (TX) or frames (RX) per call, then kBudget
  /// lock-mac: TX frames must come from `guest_mac` (Ethernet source), else they are dropped.
  bool lock_mac = false;
  std::array<uint8_t, 6> guest_mac{};
};

/// The session for a set of negotiated features (hdr_len, mrg_rxbuf, features).
constexpr NetSession make_net_session(uint64_t features) noexcept {
  NetSession s;
  s.hdr_len = net_hdr_len(features);
  s.mrg_rxbuf = (features & kFeatureMrgRxbuf) != 0;
  s.features = features;
  return s;
}

/// One popped RX buffer waiting for a frame: its head, where its iovecs are in the scratch
/// array, and its writable bytes.
struct RxBuffer {
  virtio::ChainHead head;
  uint32_t iov_begin = 0;
  uint32_t iov_count = 0;
  uint32_t bytes = 0;
};

/// Scratch arrays for one worker, allocated once (the constructor allocates; nothing else
/// does). Not shared between threads. Reused by every queue the worker serves, one call at
/// a time.
class NetScratch {
 public:
  /// At most IOV_MAX (1024) iovecs are used per syscall: a TX chain may have up to
  /// iovecs - 1 elements (one slot carries the checked header copy), and an RX read
  /// spans at most iovecs - 1 buffer elements plus the overflow probe.
  static constexpr std::size_t kDefaultIovecs = 1024;

  explicit NetScratch(std::size_t iovecs = kDefaultIovecs);

  std::span<iovec> iov() noexcept { return {iov_.get(), iovecs_}; }
  std::span<RxBuffer> rx_buffers() noexcept { return {rx_.get(), iovecs_}; }
  /// Read past the guest buffers: a frame that reaches it did not fit (tun and SEQPACKET
  /// sockets truncate silently and return the truncated length).
  std::span<std::byte> probe() noexcept { return probe_; }
  /// The checked copy sent instead of the guest's bytes: the virtio header, and with
  /// lock-mac the Ethernet addresses after it.
  static constexpr std::size_t kTxCopySize = kNetHdrSize + 12;
  std::span<std::byte, kTxCopySize> tx_header() noexcept { return tx_header_; }
  /// Frames up to this long (virtio header included) are copied here whole and sent with one
  /// write() from this buffer instead of a writev of the header copy and the guest's
  /// elements: on Linux 6.x a one-buffer write costs the TAP about 0.12 µs less per frame
  /// than a two-element writev (a 64 B or 1514 B frame, measured), more than the copy costs.
  static constexpr std::size_t kTxFlatSize = 4096;
  std::span<std::byte> tx_flat() noexcept { return {tx_flat_.get(), kTxFlatSize}; }

 private:
  std::size_t iovecs_;
  std::unique_ptr<iovec[]> iov_;
  std::unique_ptr<RxBuffer[]> rx_;
  std::byte probe_[64] = {};
  std::byte tx_header_[kTxCopySize] = {};
  std::unique_ptr<std::byte[]> tx_flat_;
};

/// One RX queue's place for a frame the TAP handed over while the guest had posted too few
/// buffers to hold it (mergeable buffers only). tun cannot say how long the next frame is and
/// a read cannot be undone, so a read into a short pool overflows here instead of being
/// dropped; the frame is delivered (one copy more) once the guest has posted enough. Owned by
/// the worker that owns the queue; the constructor allocates, nothing else does.
class RxHold {
 public:
  RxHold() : buffer_(std::make_unique<std::byte[]>(kCapacity)) {}
  static constexpr std::size_t kCapacity = kNetHdrSize + kMaxFrameSize;
  std::span<std::byte> buffer() noexcept { return {buffer_.get(), kCapacity}; }
  /// Bytes held (virtio header included); 0 when nothing is held.
  uint32_t len = 0;
  /// How many bytes (virtio header included) the next read should have guest buffers for:
  /// the size of recent frames, rising at once to a larger frame and sinking slowly towards
  /// smaller ones (forward_rx keeps it). A frame larger than that overflows into the hold and
  /// is delivered from there, so a stream of small frames reads into one guest buffer (a
  /// two-element readv) instead of buffers for a 64 KB frame. 0: not learnt yet, cover the
  /// largest frame.
  uint32_t expect = 0;

 private:
  std::unique_ptr<std::byte[]> buffer_;
};

/// Why a forward call returned; what the worker should wait for next.
enum class ForwardStatus : uint8_t {
  kIdle,          ///< TX: ring empty, kicks enabled. RX: TAP empty (wait for EPOLLIN)
  kBudget,        ///< did `budget` units of work and more may be waiting: call again soon
  kTapFull,       ///< TX: the TAP said EAGAIN; the chain was rewound. Wait for EPOLLOUT
  kNoBuffers,     ///< RX: a frame waits in the TAP and the ring is empty; kicks enabled.
                  ///< Stop polling the TAP for EPOLLIN until the RX kick
  kTapError,      ///< RX: readv failed (not EAGAIN); see tap_read_fails
  kQueueStopped,  ///< the queue is not ready (unconfigured or broken: see broken_reason())
  kThrottled      ///< TX: the tx-rate bucket is empty; chains wait in the ring. Refill, then
                  ///< call again (kicks stay disabled meanwhile)
};

constexpr const char* describe(ForwardStatus s) noexcept {
  switch (s) {
    case ForwardStatus::kIdle:
      return "idle";
    case ForwardStatus::kBudget:
      return "budget";
    case ForwardStatus::kTapFull:
      return "tap-full";
    case ForwardStatus::kNoBuffers:
      return "no-buffers";
    case ForwardStatus::kTapError:
      return "tap-error";
    case ForwardStatus::kQueueStopped:
      return "queue-stopped";
    case ForwardStatus::kThrottled:
      return "throttled";
  }
  return "unknown";
}

struct ForwardResult {
  ForwardStatus status = ForwardStatus::kIdle;
  uint32_t frames = 0;  ///< frames delivered (TX: to the TAP; RX: to the guest)
  uint32_t chains = 0;  ///< chains given back on the used ring (drops included)
};

/// Guest → TAP (virtqueue 2i+1). Pops up to s.budget chains; each is checked (device-readable
/// only, a whole virtio header plus an Ethernet header, at most kMaxFrameSize, header valid
/// for the negotiated features: check_tx_header) and written to `tap_fd` with one writev from
/// guest memory — except the virtio header, which is sent from the checked copy so the guest
/// cannot change it after the check. Every chain is given back with used length 0; failures
/// are dropped and counted. EAGAIN rewinds the chain and returns kTapFull. Used entries are
/// published once; `call_fd` (an eventfd; -1 for none) is signalled once if the driver wants it.
/// With a `bucket` (tx-rate=), no chain is popped while it is empty (kThrottled) and every frame
/// sent spends from it; null: no limit, and the only cost is one test of the pointer per chain.
template <virtio::Virtqueue Q>
ForwardResult forward_tx(Q& q, int tap_fd, int call_fd, const NetSession& s, NetScratch& scratch,
                         NetCounters& c, TxBucket* bucket = nullptr) noexcept;

/// A transmit ring that is started but disabled (vhost-user SET_VRING_ENABLE 0): pops up to
/// s.budget chains and gives each back with length 0, counted in tx_dropped_ring_disabled;
/// nothing reaches the TAP. Statuses as forward_tx() (never kTapFull).
template <virtio::Virtqueue Q>
ForwardResult discard_tx(Q& q, int call_fd, const NetSession& s, NetScratch& scratch,
                         NetCounters& c) noexcept;

/// TAP → guest (virtqueue 2i). Reads up to s.budget frames from `tap_fd`, each with one readv
/// straight into guest buffers: one chain per frame, or with MRG_RXBUF as many as the frame
/// needs (num_buffers written into the header). Buffers are popped ahead to cover
/// s.hdr_len + s.max_rx_frame; a frame that turns out larger than what was offered is dropped
/// and counted, never delivered truncated — except that with MRG_RXBUF and a `hold`, a frame
/// read while the ring ran dry before the pool covered that size is kept in `hold` and
/// delivered first once the guest has posted enough (kNoBuffers until then). Buffers popped
/// and not filled are put back before returning. With no buffer at all the frame stays in the
/// TAP (kNoBuffers; kicks enabled, with the re-check against the race). Publishes the used
/// entries (and signals `call_fd` if the driver wants it) every quarter of the ring, at most
/// 64 entries, and once more at the end: a call that fills the ring with large frames lets
/// the driver refill while it goes on.
template <virtio::Virtqueue Q>
ForwardResult forward_rx(Q& q, int tap_fd, int call_fd, const NetSession& s, NetScratch& scratch,
                         NetCounters& c, RxHold* hold = nullptr) noexcept;

/// Reads a kick eventfd (non-blocking): true and kicks++ if it was signalled.
bool consume_kick(int kick_fd, NetCounters& c) noexcept;

}  // namespace vp::dataplane
