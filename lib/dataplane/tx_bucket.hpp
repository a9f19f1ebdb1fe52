#pragma once

// tx-rate=: the token bucket of one endpoint's guest → host direction. forward_tx() and
// forward_tx_uring() take no chain from the transmit ring while it is empty (back-pressure:
// the guest's ring fills and the guest waits; nothing is dropped) and spend a frame's
// Ethernet bytes (the virtio-net header not counted, as tx_bytes) and one packet for each
// frame they hand to the TAP. The worker refills it once per ring pass from CLOCK_MONOTONIC
// and, while it is empty, waits for refill_wait_ns() on a timer.
//
// A bucket holds 5 ms of its rate, and at least one largest frame (a 64 KB GSO frame) of
// bytes or 8 packets: that much may leave in one burst after a quiet spell. A frame is sent
// whenever the bucket is not empty, so one larger than what is left takes the bucket below
// zero and the frames after it wait longer: the long-run rate is the limit either way.
//
// Hot path: noexcept, plain integers, no allocation; one bucket belongs to one worker thread.

#include <algorithm>
#include <cstdint>
#include <limits>

#include "dataplane/net_header.hpp"

namespace vp::dataplane {

class TxBucket {
 public:
  static constexpr uint64_t kBurstNs = 5'000'000;
  static constexpr uint64_t kMinBurstPackets = 8;

  /// Sets the limits (0: none of that kind) and fills the bucket.
  void configure(uint64_t bytes_per_second, uint64_t packets_per_second, uint64_t now_ns) noexcept {
    bytes_.configure(bytes_per_second, kMaxFrameSize);
    packets_.configure(packets_per_second, kMinBurstPackets);
    last_ns_ = now_ns;
  }
  /// A limit is set.
  bool limited() const noexcept { return bytes_.rate != 0 || packets_.rate != 0; }
  /// Adds what the time since the last refill earned, up to the bucket's size.
  void refill(uint64_t now_ns) noexcept {
    // At most a second counts: a bucket is full long before, and the product stays in range.
    const uint64_t elapsed = std::min<uint64_t>(now_ns - last_ns_, kSecondNs);
    last_ns_ = now_ns;
    bytes_.refill(elapsed);
    packets_.refill(elapsed);
  }
  /// No frame may leave until a refill.
  bool empty() const noexcept { return bytes_.tokens <= 0 || packets_.tokens <= 0; }
  /// A frame of `frame_len` Ethernet bytes went to the TAP.
  void spend(uint32_t frame_len) noexcept {
    bytes_.spend(frame_len);
    packets_.spend(1);
  }
  /// Nanoseconds until the bucket holds an eighth of its size again (at least 1 µs): how long
  /// the worker waits before taking chains again. Waking for one frame at a time would cost a
  /// timer per frame; an eighth keeps the wake-ups to a few thousand a second.
  uint64_t refill_wait_ns() const noexcept {
    return std::max({bytes_.wait_ns(), packets_.wait_ns(), uint64_t{1'000}});
  }

 private:
  static constexpr uint64_t kSecondNs = 1'000'000'000;

  // Tokens are kept in units of 1/10^9 of a byte (or packet), so that every nanosecond
  // earns a whole number of them: rate (per second) tokens per ns. 2 GB/s for a second is
  // 2e18, inside int64.
  struct Lane {
    uint64_t rate = 0;  // per second; 0: unlimited
    int64_t size = 0;   // scaled
    int64_t tokens = std::numeric_limits<int64_t>::max();

    void configure(uint64_t per_second, uint64_t min_size) noexcept {
      rate = per_second;
      if (rate == 0) {
        tokens = std::numeric_limits<int64_t>::max();
        return;
      }
      const uint64_t burst = std::max(rate * kBurstNs / kSecondNs, min_size);
      size = static_cast<int64_t>(burst * kSecondNs);
      tokens = size;
    }
    void refill(uint64_t elapsed_ns) noexcept {
      if (rate == 0) return;
      tokens = std::min(size, tokens + static_cast<int64_t>(elapsed_ns * rate));
    }
    void spend(uint64_t units) noexcept {
      if (rate != 0) tokens -= static_cast<int64_t>(units * kSecondNs);
    }
    uint64_t wait_ns() const noexcept {
      if (rate == 0) return 0;
      const int64_t need = size / 8 - tokens;
      if (need <= 0) return 0;
      return (static_cast<uint64_t>(need) + rate - 1) / rate;
    }
  };

  Lane bytes_;
  Lane packets_;
  uint64_t last_ns_ = 0;
};

}  // namespace vp::dataplane
