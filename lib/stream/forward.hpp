#pragma once

// transport=stream forwarding: QEMU's length-prefixed frames on a Unix stream socket to and
// from one TAP queue. The counterpart of dataplane/forward.hpp for the stream transport; the
// endpoint's port decides what to wait for from the status each call returns.
//
// Hot path: every function here is noexcept and never allocates, locks or logs; buffers are
// the caller's, sized once; drops are counted in NetCounters, never thrown.
//
// Buffering is bounded by construction: one reassembly buffer for the frame coming in and one
// frame going out (OutBuffer). When the TAP says EAGAIN the frame is rewound and the socket is
// not read any more (kTapFull); when the frontend does not read, the frame stays half sent and
// the TAP is not read (kPeerFull). Either way the other side's kernel queue holds the rest.

#include <array>
#include <cstddef>
#include <cstdint>

#include "dataplane/net_counters.hpp"
#include "stream/codec.hpp"

namespace vp::stream {

/// One framed frame on its way to the frontend: prefix + frame, and how much of it is sent.
struct OutBuffer {
  std::array<std::byte, kLengthSize + kMaxFrame> bytes;
  size_t len = 0;
  size_t sent = 0;
  /// The frontend's socket said EAGAIN for this frame: wait for EPOLLOUT, do not read the TAP.
  bool blocked = false;

  void clear() noexcept { len = sent = 0, blocked = false; }
};

/// Per-endpoint constants of a stream session.
struct StreamSession {
  /// The TAP's vnet header size (TUNSETVNETHDRSZ): read and dropped towards the frontend,
  /// written as zeros towards the TAP.
  size_t hdr_len = 12;
  /// lock-mac: frames from the frontend must come from `guest_mac` (Ethernet source).
  bool lock_mac = false;
  std::array<uint8_t, 6> guest_mac{};
  uint32_t read_budget = 16;    ///< socket reads per from_peer() call, then kBudget
  uint32_t frame_budget = 256;  ///< TAP frames per to_peer() call, then kBudget
};

/// Why a forward call returned; what the caller should wait for next.
enum class ForwardStatus : uint8_t {
  kDone,       ///< the source is empty for now (EAGAIN; for to_peer also a failed TAP read)
  kBudget,     ///< the budget is used up and more may be waiting: call again soon
  kTapFull,    ///< from_peer: the TAP said EAGAIN, the frame is rewound; wait for EPOLLOUT
  kPeerFull,   ///< the frontend's socket is full (out.blocked); wait for EPOLLOUT
  kClosed,     ///< the connection ended (EOF: error 0, else errno): end the session
  kBadLength,  ///< the frontend sent a length of 0 or over kMaxFrame: end the session
};

constexpr const char* describe(ForwardStatus s) noexcept {
  switch (s) {
    case ForwardStatus::kDone:
      return "done";
    case ForwardStatus::kBudget:
      return "budget";
    case ForwardStatus::kTapFull:
      return "tap-full";
    case ForwardStatus::kPeerFull:
      return "peer-full";
    case ForwardStatus::kClosed:
      return "closed";
    case ForwardStatus::kBadLength:
      return "bad-length";
  }
  return "unknown";
}

struct ForwardResult {
  ForwardStatus status = ForwardStatus::kDone;
  uint32_t frames = 0;  ///< frames delivered (from_peer: to the TAP; to_peer: framed)
  int error = 0;        ///< kClosed: errno, 0 when the frontend closed the connection
  uint32_t length = 0;  ///< kBadLength: the length the frontend announced
};

/// Frontend → TAP: delivers the whole frames in `in`, then reads more from `conn_fd`, up to
/// s.read_budget reads. A runt is dropped (tx_dropped_too_short), a frame from another MAC
/// with lock-mac too (tx_dropped_spoofed_mac), a failed TAP write is counted
/// (tap_write_fails); the stream stays in step. EAGAIN from the TAP rewinds the frame into
/// `in` (tx_tap_full, kTapFull). A bad length counts stream_bad_length (and
/// tx_dropped_too_long unless it is 0). EOF or a read error in the middle of a frame counts
/// stream_truncated.
ForwardResult from_peer(int conn_fd, int tap_fd, Reassembler& in, const StreamSession& s,
                        dataplane::NetCounters& c) noexcept;

/// Sends what is left of the frame in `out`. kDone when it is all sent (out is empty again),
/// kPeerFull when the socket is full (stream_peer_full counted once per blocked frame),
/// kClosed on a send error.
ForwardResult flush_out(int conn_fd, OutBuffer& out, dataplane::NetCounters& c) noexcept;

/// TAP → frontend: one frame at a time through `out`, as long as the frontend takes them, up
/// to s.frame_budget frames. Its vnet header is dropped; a frame shorter than it plus an
/// Ethernet header is counted in rx_dropped_runt; a partial checksum (NEEDS_CSUM) is
/// completed, a GSO frame or a checksum that cannot be completed is dropped
/// (rx_dropped_offload). A failed read other than EAGAIN counts tap_read_fails (kDone).
/// Returns kPeerFull at once while `out` is blocked.
ForwardResult to_peer(int tap_fd, int conn_fd, OutBuffer& out, const StreamSession& s,
                      dataplane::NetCounters& c) noexcept;

}  // namespace vp::stream
