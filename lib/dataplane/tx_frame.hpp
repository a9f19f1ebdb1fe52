#pragma once

// Internal to lib/dataplane: the checks and the iovec list of one guest TX frame, shared by
// the writev path (forward_tx.cpp) and the io_uring path (tx_uring.cpp), so both send exactly
// what was checked and count drops alike.

#include <sys/uio.h>

#include <cstdint>
#include <span>

#include "dataplane/forward.hpp"
#include "dataplane/net_counters.hpp"
#include "virtio/queue.hpp"

namespace vp::dataplane::detail {

enum class TxOutcome : uint8_t { kSent, kDropped, kTapFull };

/// One checked TX frame ready to write: `copy` (the checked virtio header, with lock-mac the
/// Ethernet addresses too) followed by the guest's elements [data, end), which no longer
/// hold the copied bytes. Together they are `write_len` bytes (the chain's readable bytes).
struct TxFrame {
  bool ok = false;  ///< false: dropped and counted
  uint32_t copy_len = 0;
  uint32_t frame_len = 0;  ///< Ethernet bytes (tx_bytes)
  uint32_t write_len = 0;  ///< what a write must take for the frame to count as sent
  iovec* data = nullptr;
  iovec* end = nullptr;
};

/// Checks `chain` (device-readable only, a whole virtio header plus an Ethernet header, at
/// most kMaxFrameSize, header valid for the negotiated features, lock-mac source) with the
/// header copied once into `hdr_copy`; a failure is counted in `c` and returns ok = false.
/// On success the chain's elements are trimmed in place past the copied bytes. Never
/// allocates, locks or logs.
TxFrame check_tx_frame(const virtio::Chain& chain, const NetSession& s,
                       std::span<std::byte, NetScratch::kTxCopySize> hdr_copy,
                       NetCounters& c) noexcept;

/// Writes `frame` with one writev: `hdr_copy` (copy_len bytes are used) in the element just
/// before frame.data, which must be a consumed element or a reserved slot of the same array,
/// then the guest's elements. A frame that fits `flat` (may be empty) is instead copied
/// there whole, the checked header copy first, and sent with one write(). kTapFull on EAGAIN
/// (nothing counted: the caller rewinds); anything but the whole frame is counted in
/// tap_write_fails; a sent frame in tx_packets.
TxOutcome write_tx_frame(const TxFrame& frame, int tap_fd, std::span<std::byte> hdr_copy,
                         NetCounters& c, std::span<std::byte> flat = {}) noexcept;

}  // namespace vp::dataplane::detail
