#pragma once

// One pass over a vhost-user ring of a queue pair, and what a pass leaves behind: the one
// place that picks the forwarding call (discard, io_uring or writev; RX) and adds the pages
// the queue marked in the dirty log to the endpoint's counts. Used by the pair's owner
// (VhostUserPort) and, while the pair is lent to another worker, by its QueueRunner.

#include <sys/epoll.h>

#include "daemon/worker.hpp"
#include "dataplane/forward.hpp"
#include "dataplane/net_counters.hpp"
#include "dataplane/tx_uring.hpp"
#include "vhost/backend.hpp"

namespace vp::daemon {

/// Transmitq `v` once: discarded (`discard`: the ring is disabled), through `uring` (may be
/// null: writev), `bucket` (tx-rate=, may be null).
dataplane::ForwardResult tx_pass(vhost::Vring& v, int tap_fd, bool discard,
                                 dataplane::TxUring* uring, const dataplane::NetSession& s,
                                 dataplane::NetScratch& scratch, dataplane::NetCounters& c,
                                 dataplane::TxBucket* bucket) noexcept;

/// Receiveq `v` once, overflow into `hold`.
dataplane::ForwardResult rx_pass(vhost::Vring& v, int tap_fd, const dataplane::NetSession& s,
                                 dataplane::NetScratch& scratch, dataplane::NetCounters& c,
                                 dataplane::RxHold* hold) noexcept;

/// Adds to `share` (a queue pair's counts) what `local` (the counts they are a share of)
/// gains while this lives: one pass over one of the pair's rings.
class ShareCounts {
 public:
  ShareCounts(const dataplane::NetCounters& local, dataplane::QueueCounts& share) noexcept
      : local_(local), share_(share), before_(dataplane::queue_counts(local)) {}
  ~ShareCounts() { dataplane::add_difference(share_, dataplane::queue_counts(local_), before_); }
  ShareCounts(const ShareCounts&) = delete;
  ShareCounts& operator=(const ShareCounts&) = delete;

 private:
  const dataplane::NetCounters& local_;
  dataplane::QueueCounts& share_;
  dataplane::QueueCounts before_;
};

/// A write the kernel parked completes later: when this ends, `interest` (the io_uring's fd)
/// is watched exactly while `uring` (may be null) has writes in flight.
class WatchCompletions {
 public:
  WatchCompletions(Interest& interest, dataplane::TxUring* uring) noexcept
      : interest_(interest), uring_(uring) {}
  ~WatchCompletions() {
    if (uring_) interest_.set(uring_->in_flight() > 0 ? uint32_t{EPOLLIN} : 0u);
  }
  WatchCompletions(const WatchCompletions&) = delete;
  WatchCompletions& operator=(const WatchCompletions&) = delete;

 private:
  Interest& interest_;
  dataplane::TxUring* uring_;
};

}  // namespace vp::daemon
