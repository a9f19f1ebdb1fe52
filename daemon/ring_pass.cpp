#include "daemon/ring_pass.hpp"

#include <variant>

namespace vp::daemon {

dataplane::ForwardResult tx_pass(vhost::Vring& v, int tap_fd, bool discard,
                                 dataplane::TxUring* uring, const dataplane::NetSession& s,
                                 dataplane::NetScratch& scratch, dataplane::NetCounters& c,
                                 dataplane::TxBucket* bucket) noexcept {
  return std::visit(
      [&](auto& q) {
        // The queue counts the pages it marks (dirty logging); the endpoint's stats too.
        const uint64_t logged = q.counters().dirty_pages_logged;
        dataplane::ForwardResult r;
        if (discard) {
          r = dataplane::discard_tx(q, v.call.get(), s, scratch, c);
        } else if (uring) {
          r = dataplane::forward_tx_uring(q, *uring, tap_fd, v.call.get(), s, scratch, c, bucket);
        } else {
          r = dataplane::forward_tx(q, tap_fd, v.call.get(), s, scratch, c, bucket);
        }
        c.dirty_pages_logged += q.counters().dirty_pages_logged - logged;
        return r;
      },
      v.queue);
}

dataplane::ForwardResult rx_pass(vhost::Vring& v, int tap_fd, const dataplane::NetSession& s,
                                 dataplane::NetScratch& scratch, dataplane::NetCounters& c,
                                 dataplane::RxHold* hold) noexcept {
  return std::visit(
      [&](auto& q) {
        const uint64_t logged = q.counters().dirty_pages_logged;
        const dataplane::ForwardResult r =
            dataplane::forward_rx(q, tap_fd, v.call.get(), s, scratch, c, hold);
        c.dirty_pages_logged += q.counters().dirty_pages_logged - logged;
        return r;
      },
      v.queue);
}

}  // namespace vp::daemon
