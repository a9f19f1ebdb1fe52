#include "stream/forward.hpp"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dataplane/net_header.hpp"

namespace vp::stream {

namespace {

constexpr std::array<std::byte, dataplane::kNetHdrSize> kZeroHdr{};

bool would_block(int error) noexcept { return error == EAGAIN || error == EWOULDBLOCK; }

/// Writes the whole frames buffered in `in` to the TAP; r.status stays kDone when `in` needs
/// more bytes.
void deliver_frames(int tap_fd, Reassembler& in, const StreamSession& s, dataplane::NetCounters& c,
                    ForwardResult& r) noexcept {
  for (;;) {
    const Decoded d = in.next();
    if (d.status == Decode::kNeedMore) return;
    if (d.status == Decode::kBadLength) {
      ++c.stream_bad_length;
      if (d.length != 0) ++c.tx_dropped_too_long;
      r.status = ForwardStatus::kBadLength;
      r.length = d.length;
      return;
    }
    if (d.status == Decode::kRunt) {
      ++c.tx_dropped_too_short;
      continue;
    }
    // lock-mac: no frame from the guest poses as another host (the frame is in vpd's own
    // buffer: what is checked is what is sent).
    if (s.lock_mac && std::memcmp(d.frame.data() + 6, s.guest_mac.data(), 6) != 0) {
      ++c.tx_dropped_spoofed_mac;
      continue;
    }
    iovec iov[2] = {{const_cast<std::byte*>(kZeroHdr.data()), s.hdr_len},
                    {const_cast<std::byte*>(d.frame.data()), d.frame.size()}};
    const ssize_t n = ::writev(tap_fd, iov, 2);
    if (n < 0 && would_block(errno)) {
      // EAGAIN means rewind and wait for EPOLLOUT, never drop: the frame stays buffered and
      // the socket is not read meanwhile.
      in.unget(d);
      ++c.tx_tap_full;
      r.status = ForwardStatus::kTapFull;
      return;
    }
    if (n < 0) {
      ++c.tap_write_fails;
      continue;
    }
    ++c.tx_packets;
    c.tx_bytes += d.frame.size();
    ++r.frames;
  }
}

}  // namespace

ForwardResult from_peer(int conn_fd, int tap_fd, Reassembler& in, const StreamSession& s,
                        dataplane::NetCounters& c) noexcept {
  ForwardResult r;
  for (uint32_t round = 0; round < s.read_budget; ++round) {
    deliver_frames(tap_fd, in, s, c, r);
    if (r.status != ForwardStatus::kDone) return r;
    in.compact();
    const auto room = in.space();
    const ssize_t n = ::read(conn_fd, room.data(), room.size());
    if (n > 0) {
      in.commit(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && would_block(errno)) return r;
    if (n < 0 && errno == EINTR) continue;
    if (in.pending()) ++c.stream_truncated;
    r.status = ForwardStatus::kClosed;
    r.error = n == 0 ? 0 : errno;
    return r;
  }
  r.status = ForwardStatus::kBudget;
  return r;
}

ForwardResult flush_out(int conn_fd, OutBuffer& out, dataplane::NetCounters& c) noexcept {
  ForwardResult r;
  while (out.sent < out.len) {
    const ssize_t n = ::send(conn_fd, out.bytes.data() + out.sent, out.len - out.sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && would_block(errno)) {
      if (!out.blocked) {
        ++c.stream_peer_full;
        out.blocked = true;
      }
      r.status = ForwardStatus::kPeerFull;
      return r;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r.status = ForwardStatus::kClosed;
      r.error = errno;
      return r;
    }
    out.sent += static_cast<size_t>(n);
  }
  out.clear();
  return r;
}

ForwardResult to_peer(int tap_fd, int conn_fd, OutBuffer& out, const StreamSession& s,
                      dataplane::NetCounters& c) noexcept {
  ForwardResult r;
  std::array<std::byte, dataplane::kNetHdrSize> hdr{};
  std::byte* const frame = out.bytes.data() + kLengthSize;
  for (uint32_t i = 0; i < s.frame_budget; ++i) {
    if (out.blocked) {
      r.status = ForwardStatus::kPeerFull;
      return r;
    }
    iovec iov[2] = {{hdr.data(), s.hdr_len}, {frame, kMaxFrame}};
    const ssize_t n = ::readv(tap_fd, iov, 2);
    if (n < 0) {
      if (!would_block(errno) && errno != EINTR) ++c.tap_read_fails;
      return r;
    }
    if (static_cast<size_t>(n) < s.hdr_len + kMinFrame) {
      ++c.rx_dropped_runt;
      continue;
    }
    const auto len = static_cast<uint32_t>(static_cast<size_t>(n) - s.hdr_len);
    // The TAP has no offloads, so the kernel completes checksums and segments before it
    // hands a frame over; should one still come partial, finish it here or drop it.
    const dataplane::NetHdr h = dataplane::decode_net_hdr(hdr);
    if ((h.gso_type & ~dataplane::kGsoEcn) != dataplane::kGsoNone ||
        ((h.flags & dataplane::kHdrFNeedsCsum) &&
         !complete_checksum({frame, len}, h.csum_start, h.csum_offset))) {
      ++c.rx_dropped_offload;
      continue;
    }
    encode_length(len, std::span<std::byte, kLengthSize>(out.bytes.data(), kLengthSize));
    out.len = kLengthSize + len;
    out.sent = 0;
    ++c.rx_packets;
    c.rx_bytes += len;
    ++r.frames;
    const ForwardResult f = flush_out(conn_fd, out, c);
    if (f.status == ForwardStatus::kClosed) {
      r.status = f.status;
      r.error = f.error;
      return r;
    }
  }
  r.status = out.blocked ? ForwardStatus::kPeerFull : ForwardStatus::kBudget;
  return r;
}

}  // namespace vp::stream
