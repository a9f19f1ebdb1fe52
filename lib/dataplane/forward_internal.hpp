#pragma once

// Internal to lib/dataplane: helpers shared by forward_tx.cpp and forward_rx.cpp.

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "dataplane/forward.hpp"
#include "dataplane/net_counters.hpp"
#include "virtio/queue.hpp"

namespace vp::dataplane::detail {

/// readv/writev refuse more elements than this (IOV_MAX on Linux).
inline constexpr std::size_t kIovMax = 1024;

/// Copies out.size() bytes from the start of the iovec list into `out`. The caller has
/// checked that the list holds that many.
inline void gather(std::span<const iovec> iov, std::span<std::byte> out) noexcept {
  std::size_t done = 0;
  for (const iovec& v : iov) {
    if (done == out.size()) break;
    const std::size_t n = v.iov_len < out.size() - done ? v.iov_len : out.size() - done;
    std::memcpy(out.data() + done, v.iov_base, n);
    done += n;
  }
}

/// Copies `in` into the iovec list's bytes at `offset`. The caller has checked that the list
/// holds offset + in.size() bytes.
inline void scatter(std::span<const iovec> iov, std::size_t offset,
                    std::span<const std::byte> in) noexcept {
  std::size_t done = 0;
  for (const iovec& v : iov) {
    if (done == in.size()) break;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    const std::size_t room = v.iov_len - offset;
    const std::size_t n = room < in.size() - done ? room : in.size() - done;
    std::memcpy(static_cast<std::byte*>(v.iov_base) + offset, in.data() + done, n);
    done += n;
    offset = 0;
  }
}

/// Signals a call eventfd; false if there is none or the write failed.
bool signal_eventfd(int fd) noexcept;

/// Ends a batch: one release of every used entry, then at most one interrupt if the driver
/// asks for it (EVENT_IDX / flags). `used_before` is q.counters().used_returned at the start
/// of the batch, to tell a suppressed interrupt from an empty batch.
template <virtio::Virtqueue Q>
void publish_and_notify(Q& q, int call_fd, uint64_t used_before, NetCounters& c) noexcept {
  q.publish_used();
  const bool returned = q.counters().used_returned != used_before;
  if (q.needs_notification()) {
    if (signal_eventfd(call_fd)) ++c.interrupts;
  } else if (returned) {
    ++c.interrupts_suppressed;
  }
}

/// The transmit ring looked empty: true to pop again (the driver may have added a chain
/// after the last look and before it saw the request for kicks, which
/// enable_notifications() looks for), false to stop with `status` set: kQueueStopped, kIdle,
/// or as it was (kBudget: call again) once `rechecks` passed `budget`, in case a guest keeps
/// offering only malformed chains (pop() gives those back without counting here).
template <virtio::Virtqueue Q>
bool look_again(Q& q, uint32_t budget, uint32_t& rechecks, ForwardStatus& status) noexcept {
  if (!q.ready()) {
    status = ForwardStatus::kQueueStopped;
    return false;
  }
  if (q.enable_notifications()) {
    if (++rechecks > budget) return false;
    q.disable_notifications();
    return true;
  }
  status = ForwardStatus::kIdle;
  return false;
}

}  // namespace vp::dataplane::detail
