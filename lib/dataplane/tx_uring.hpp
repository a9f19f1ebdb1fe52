#pragma once

// Guest → TAP through io_uring: per ring pass, up to one budget of descriptor chains is popped
// and checked exactly as forward_tx() does, each becomes one IORING_OP_WRITEV straight from
// guest memory (the checked header copy first), and the whole batch goes to the kernel with
// one io_uring_enter. A chain goes back on the used ring only when its write completed, so
// the guest never reuses a buffer the kernel may still read. Used entries go back in the
// order the chains were popped (a chain dropped by the checks waits behind the writes popped
// before it): the guest sees the order writev gave, and a write the kernel parks holds back
// only the entries after it, never reorders them.
//
// Hot path: no allocation, lock or log. TxUring::create() allocates the ring and every slot
// once, when the transmit queue starts. A TxUring belongs to the worker thread that owns
// the queue and serves that one queue and TAP fd.
//
// #syscalls: io_uring_setup, io_uring_register (the TAP fd as fixed file 0), io_uring_enter.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "dataplane/forward.hpp"
#include "sys/error.hpp"
#include "virtio/queue.hpp"

struct io_uring;

namespace vp::dataplane {

class TxUring;

/// Guest → TAP (virtqueue 2i+1) through `ring`, whose fixed file is `tap_fd`: reaps the
/// completions that arrived since the last call, writes again the frames a full TAP refused,
/// then pops up to s.budget chains (fewer if the slots run out), checks each as forward_tx()
/// does and submits one write per frame with one io_uring_enter. A chain goes back with used
/// length 0 when its write completed (sent: tx_packets; anything but the whole frame:
/// tap_write_fails) or at once when it was dropped. A write refused with EAGAIN keeps its
/// chain and returns kTapFull (tx_tap_full once per call): wait for EPOLLOUT and call again.
/// Statuses as forward_tx(); `frames`/`chains` count completions reaped in this call. Used
/// entries are published once and `call_fd` is signalled at most once.
/// With a `bucket` (tx-rate=), as forward_tx(): no chain is popped while it is empty
/// (kThrottled unless the TAP is full) and each frame submitted spends from it. Writes already
/// in flight complete as usual and their chains go back when a later call reaps them.
template <virtio::Virtqueue Q>
ForwardResult forward_tx_uring(Q& q, TxUring& ring, int tap_fd, int call_fd, const NetSession& s,
                               NetScratch& scratch, NetCounters& c,
                               TxBucket* bucket = nullptr) noexcept;

class TxUring {
 public:
  /// Writes in flight at most: one default budget (NetSession::budget) per submission.
  static constexpr uint32_t kDefaultSlots = 64;
  /// iovecs a slot holds: the checked header copy plus 31 guest elements. A longer chain (a
  /// guest may use up to IOV_MAX - 1) is written with writev from the worker's scratch
  /// instead, after the writes before it were submitted, so the TAP keeps the guest's order.
  static constexpr uint32_t kSlotIovecs = 32;

  /// Sets up an io_uring of `slots` entries (at least 1, at most 4096) with `tap_fd` as its
  /// fixed file 0. The fd must stay open for the TxUring's life. Fails with the step named
  /// ("io_uring_queue_init", "io_uring_register_files") and its errno, e.g. when
  /// kernel.io_uring_disabled is set or a seccomp filter refuses io_uring_setup.
  static Result<std::unique_ptr<TxUring>> create(int tap_fd, uint32_t slots = kDefaultSlots);
  /// Whether this process may set up an io_uring at all (a one-entry ring, torn down at
  /// once); the error names the step and errno, as create() does.
  static Result<void> probe();
  /// Tears the ring down. Call drain_tx_uring() first: a write still in flight would go on
  /// reading guest memory.
  ~TxUring();
  TxUring(const TxUring&) = delete;
  TxUring& operator=(const TxUring&) = delete;

  /// The ring's fd: readable (EPOLLIN) while completions wait to be reaped. Watch it while
  /// in_flight() > 0 after a call; forward_tx_uring() reaps them.
  int fd() const noexcept;
  /// Writes handed to the kernel whose completion has not been reaped.
  uint32_t in_flight() const noexcept { return in_flight_; }
  /// Frames the TAP refused with EAGAIN, written again by the next forward_tx_uring().
  uint32_t waiting() const noexcept { return waiting_; }
  /// No chain of the queue is held here (none in flight, waiting or unreturned).
  bool idle() const noexcept { return held_ == 0; }

 private:
  struct Slot;
  TxUring() = default;

  template <virtio::Virtqueue Q>
  friend ForwardResult forward_tx_uring(Q& q, TxUring& ring, int tap_fd, int call_fd,
                                        const NetSession& s, NetScratch& scratch, NetCounters& c,
                                        TxBucket* bucket) noexcept;
  template <virtio::Virtqueue Q>
  friend void drain_tx_uring(Q& q, TxUring& ring, int call_fd, NetCounters& c) noexcept;
  template <virtio::Virtqueue Q>
  friend struct TxUringPass;

  std::unique_ptr<io_uring> ring_;
  std::unique_ptr<Slot[]> slots_;
  std::unique_ptr<uint16_t[]> free_;   // stack of free slot indices
  std::unique_ptr<uint16_t[]> order_;  // held slots in pop order: a circular queue
  uint32_t slot_count_ = 0;
  uint32_t free_count_ = 0;
  uint32_t order_head_ = 0;  // where the oldest held slot is in order_
  uint32_t held_ = 0;        // slots in order_
  uint32_t waiting_ = 0;     // held slots refused with EAGAIN
  uint32_t in_flight_ = 0;
  uint32_t unsubmitted_ = 0;  // SQEs prepared and not yet taken by the kernel
  // RWF_NOWAIT: a full TAP completes the write with EAGAIN instead of parking it in the
  // kernel. Cleared if the fd refuses the flag (EOPNOTSUPP); then a full TAP parks the write
  // until it drains, and the completion arrives through fd().
  bool nowait_ = true;
};

/// Before the queue stops (GET_VRING_BASE, a memory table change, reset, disconnect): cancels
/// and waits for every write in flight, gives every chain `ring` holds back (a frame still
/// waiting for room is dropped and counted in tap_write_fails), publishes and signals
/// `call_fd` if the driver wants it. Afterwards no write reads guest memory and ring.idle().
template <virtio::Virtqueue Q>
void drain_tx_uring(Q& q, TxUring& ring, int call_fd, NetCounters& c) noexcept;

}  // namespace vp::dataplane
