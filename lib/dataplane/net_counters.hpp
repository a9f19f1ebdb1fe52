#pragma once

// What one queue pair's forwarding did, each counter named after an outcome (a drop says why it
// dropped), accumulated per wake-up and published once. Plain integers owned
// by the worker thread: forward_tx()/forward_rx() add to the worker's local copy during one
// wake-up and the worker publishes it once (e.g. adds it into the endpoint's shared stats).

#include <cstdint>
#include <iterator>
#include <string_view>

namespace vp::dataplane {

struct NetCounters {
  // Guest → TAP.
  uint64_t tx_packets = 0;  ///< frames written to the TAP
  uint64_t tx_bytes = 0;    ///< their Ethernet bytes (virtio header not counted)
  /// TX chains with device-writable descriptors (a TX chain is device-readable only).
  uint64_t tx_dropped_malformed_chain = 0;
  uint64_t tx_dropped_too_short = 0;  ///< shorter than the virtio header plus an Ethernet header
  uint64_t tx_dropped_too_long = 0;   ///< frame longer than kMaxFrameSize
  uint64_t tx_dropped_bad_flags = 0;  ///< header flags other than NEEDS_CSUM
  uint64_t tx_dropped_csum_not_negotiated = 0;  ///< NEEDS_CSUM without VIRTIO_NET_F_CSUM
  uint64_t tx_dropped_bad_csum_offsets = 0;     ///< checksum field past the frame
  uint64_t tx_dropped_gso_not_negotiated = 0;   ///< GSO type (or ECN) not acked
  uint64_t tx_dropped_bad_gso = 0;              ///< unknown type, gso_size 0, no NEEDS_CSUM
  uint64_t tx_dropped_hdr_len_past_frame = 0;
  /// lock-mac: a frame whose Ethernet source is not the guest's MAC (impersonation).
  uint64_t tx_dropped_spoofed_mac = 0;
  uint64_t tap_write_fails = 0;  ///< writev failed (not EAGAIN): frame dropped, chain returned
  uint64_t tx_tap_full = 0;      ///< writev said EAGAIN: chain rewound, wait for EPOLLOUT
  /// TX chains on a ring the front-end disabled (SET_VRING_ENABLE 0): given back unsent, as
  /// the vhost-user spec asks of a net device.
  uint64_t tx_dropped_ring_disabled = 0;
  /// tx-rate=: times the token bucket ran dry and vpd stopped taking chains from the guest
  /// (back-pressure: nothing dropped), and the microseconds it waited for tokens.
  uint64_t tx_throttled = 0;
  uint64_t tx_throttled_us = 0;

  // TAP → guest.
  uint64_t rx_packets = 0;  ///< frames delivered into guest buffers
  uint64_t rx_bytes = 0;    ///< their Ethernet bytes (virtio header not counted)
  /// Frames read from the TAP that did not fit the buffers the guest offered: read (the TAP
  /// cannot say a frame's size before it is read) and dropped, never delivered truncated.
  uint64_t rx_dropped_too_big = 0;
  uint64_t rx_dropped_runt = 0;  ///< a read shorter than the virtio header plus Ethernet header
  /// RX chains with device-readable descriptors or smaller than the virtio header: given
  /// back with length 0.
  uint64_t rx_malformed_chain = 0;
  /// Popped RX buffers that could not be rewound (the queue gave back a chain popped after
  /// them) and were given back with length 0; the guest counts them as length errors.
  uint64_t rx_buffers_returned_empty = 0;
  uint64_t no_rx_avail_buffer = 0;  ///< a frame waited in the TAP and the guest had no buffer
  /// Frames larger than the buffers the guest had posted when they were read: kept aside and
  /// delivered once it posted more (one copy more), instead of dropped.
  uint64_t rx_frames_held = 0;
  uint64_t tap_read_fails = 0;  ///< readv failed (not EAGAIN)

  // Notifications.
  uint64_t kicks = 0;       ///< kick eventfd reads that found a kick
  uint64_t interrupts = 0;  ///< call eventfd writes
  /// Batches that gave buffers back without an interrupt (the driver suppressed it).
  uint64_t interrupts_suppressed = 0;
  // Live migration (vhost-user dirty logging).
  /// Guest pages marked in the dirty log, one per page each mark covers (an RX buffer, a used
  /// ring entry or index, a packed descriptor): a page written twice counts twice.
  uint64_t dirty_pages_logged = 0;

  // transport=stream (QEMU's length-prefixed framing) only.
  /// A length prefix of 0 or over 65536+4096: the stream cannot be trusted; vpd closed it.
  uint64_t stream_bad_length = 0;
  /// The frontend closed the connection in the middle of a frame (the part was dropped).
  uint64_t stream_truncated = 0;
  /// The frontend's socket was full (it does not read): vpd stopped reading the TAP until it
  /// drains, so the kernel's TAP queue, not vpd, holds (and drops) what follows.
  uint64_t stream_peer_full = 0;
  /// A TAP frame that needed an offload the frontend cannot take (GSO, or a partial checksum
  /// that could not be completed): dropped, never sent corrupt.
  uint64_t rx_dropped_offload = 0;

  NetCounters& operator+=(const NetCounters& other) noexcept;
  bool operator==(const NetCounters&) const = default;
};

/// The transports whose data path can move a counter (a bit each).
inline constexpr uint8_t kCountsVhostUser = 1;
inline constexpr uint8_t kCountsStream = 2;

/// One counter: its stable name (stats output, JSON), where it lives, and the transports that
/// can move it (the others never show it).
struct NetCounterField {
  std::string_view name;
  uint64_t NetCounters::*member;
  uint8_t transports = kCountsVhostUser | kCountsStream;
};

/// Every NetCounters field, in declaration order.
inline constexpr NetCounterField kNetCounterFields[] = {
    {"tx_packets", &NetCounters::tx_packets},
    {"tx_bytes", &NetCounters::tx_bytes},
    {"tx_dropped_malformed_chain", &NetCounters::tx_dropped_malformed_chain, kCountsVhostUser},
    {"tx_dropped_too_short", &NetCounters::tx_dropped_too_short},
    {"tx_dropped_too_long", &NetCounters::tx_dropped_too_long},
    {"tx_dropped_bad_flags", &NetCounters::tx_dropped_bad_flags, kCountsVhostUser},
    {"tx_dropped_csum_not_negotiated", &NetCounters::tx_dropped_csum_not_negotiated,
     kCountsVhostUser},
    {"tx_dropped_bad_csum_offsets", &NetCounters::tx_dropped_bad_csum_offsets, kCountsVhostUser},
    {"tx_dropped_gso_not_negotiated", &NetCounters::tx_dropped_gso_not_negotiated,
     kCountsVhostUser},
    {"tx_dropped_bad_gso", &NetCounters::tx_dropped_bad_gso, kCountsVhostUser},
    {"tx_dropped_hdr_len_past_frame", &NetCounters::tx_dropped_hdr_len_past_frame,
     kCountsVhostUser},
    {"tx_dropped_spoofed_mac", &NetCounters::tx_dropped_spoofed_mac},
    {"tap_write_fails", &NetCounters::tap_write_fails},
    {"tx_tap_full", &NetCounters::tx_tap_full},
    {"tx_dropped_ring_disabled", &NetCounters::tx_dropped_ring_disabled, kCountsVhostUser},
    {"tx_throttled", &NetCounters::tx_throttled, kCountsVhostUser},
    {"tx_throttled_us", &NetCounters::tx_throttled_us, kCountsVhostUser},
    {"rx_packets", &NetCounters::rx_packets},
    {"rx_bytes", &NetCounters::rx_bytes},
    {"rx_dropped_too_big", &NetCounters::rx_dropped_too_big, kCountsVhostUser},
    {"rx_dropped_runt", &NetCounters::rx_dropped_runt},
    {"rx_malformed_chain", &NetCounters::rx_malformed_chain, kCountsVhostUser},
    {"rx_buffers_returned_empty", &NetCounters::rx_buffers_returned_empty, kCountsVhostUser},
    {"no_rx_avail_buffer", &NetCounters::no_rx_avail_buffer, kCountsVhostUser},
    {"rx_frames_held", &NetCounters::rx_frames_held, kCountsVhostUser},
    {"tap_read_fails", &NetCounters::tap_read_fails},
    {"kicks", &NetCounters::kicks, kCountsVhostUser},
    {"interrupts", &NetCounters::interrupts, kCountsVhostUser},
    {"interrupts_suppressed", &NetCounters::interrupts_suppressed, kCountsVhostUser},
    {"dirty_pages_logged", &NetCounters::dirty_pages_logged, kCountsVhostUser},
    {"stream_bad_length", &NetCounters::stream_bad_length, kCountsStream},
    {"stream_truncated", &NetCounters::stream_truncated, kCountsStream},
    {"stream_peer_full", &NetCounters::stream_peer_full, kCountsStream},
    {"rx_dropped_offload", &NetCounters::rx_dropped_offload, kCountsStream},
};

static_assert(sizeof(NetCounters) == sizeof(uint64_t) * std::size(kNetCounterFields),
              "every NetCounters field is listed in kNetCounterFields");

inline NetCounters& NetCounters::operator+=(const NetCounters& other) noexcept {
  for (const NetCounterField& f : kNetCounterFields) this->*f.member += other.*f.member;
  return *this;
}

/// One queue pair's share of the endpoint's counters: what it carried and dropped each way.
/// `tx_dropped` is every tx_dropped_* reason plus tap_write_fails (frames the guest sent that
/// did not reach the TAP); `rx_dropped` is rx_dropped_too_big plus rx_dropped_runt (frames
/// read from the TAP that did not reach the guest). The worker takes a share from the
/// difference of its counts around each pass over the pair's rings (per wake-up, never per
/// frame).
struct QueueCounts {
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  uint64_t tx_dropped = 0;
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  uint64_t rx_dropped = 0;

  bool operator==(const QueueCounts&) const = default;
};

/// Every QueueCounts field, in declaration order, with its stats/JSON name.
struct QueueCountField {
  std::string_view name;
  uint64_t QueueCounts::*member;
};
inline constexpr QueueCountField kQueueCountFields[] = {
    {"tx_packets", &QueueCounts::tx_packets}, {"tx_bytes", &QueueCounts::tx_bytes},
    {"tx_dropped", &QueueCounts::tx_dropped}, {"rx_packets", &QueueCounts::rx_packets},
    {"rx_bytes", &QueueCounts::rx_bytes},     {"rx_dropped", &QueueCounts::rx_dropped},
};
static_assert(sizeof(QueueCounts) == sizeof(uint64_t) * std::size(kQueueCountFields),
              "every QueueCounts field is listed in kQueueCountFields");

/// The QueueCounts view of `c`.
inline QueueCounts queue_counts(const NetCounters& c) noexcept {
  return {
      .tx_packets = c.tx_packets,
      .tx_bytes = c.tx_bytes,
      .tx_dropped = c.tx_dropped_malformed_chain + c.tx_dropped_too_short + c.tx_dropped_too_long +
                    c.tx_dropped_bad_flags + c.tx_dropped_csum_not_negotiated +
                    c.tx_dropped_bad_csum_offsets + c.tx_dropped_gso_not_negotiated +
                    c.tx_dropped_bad_gso + c.tx_dropped_hdr_len_past_frame +
                    c.tx_dropped_spoofed_mac + c.tx_dropped_ring_disabled + c.tap_write_fails,
      .rx_packets = c.rx_packets,
      .rx_bytes = c.rx_bytes,
      .rx_dropped = c.rx_dropped_too_big + c.rx_dropped_runt,
  };
}

/// Adds what `now` counts beyond `before` (both queue_counts() of one running NetCounters).
inline void add_difference(QueueCounts& to, const QueueCounts& now,
                           const QueueCounts& before) noexcept {
  for (const QueueCountField& f : kQueueCountFields)
    to.*f.member += now.*f.member - before.*f.member;
}

}  // namespace vp::dataplane
