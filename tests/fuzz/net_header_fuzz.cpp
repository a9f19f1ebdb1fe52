// virtio_net_hdr handling against the frame length (lib/dataplane/net_header, forward_tx):
// csum_start/csum_offset/hdr_len/gso from a hostile guest (DPDK CVE-2024-11614 trusted
// csum_start). Two levels:
//  - check_tx_header() alone: whatever it accepts keeps the checksum field and hdr_len inside
//    the frame and GSO only with NEEDS_CSUM, gso_size and the acked HOST_* bit;
//  - the whole TX path: the guest's header and frame, cut into descriptors where the input
//    says (ANY_LAYOUT), on a split ring; forward_tx() (or, mode bit 1, forward_tx_uring()
//    through an io_uring) writes to a SOCK_SEQPACKET pair standing in for the TAP. Whatever reaches
//    the "TAP" must carry a header that passes the check, byte for byte what the guest offered; and
//    every chain comes back on the used ring.
//  - the RX path: a frame (virtio header included) comes from the "TAP" into guest buffers of
//    input-chosen sizes (MRG_RXBUF or not); what the guest sees must be the frame, whole.
//
// Input: u64 features, u8 mode (bit 0: RX; bit 1: TX through io_uring), u8 element count, u16 cuts
// (TX: element lengths; RX: buffer sizes)..., u16 max_rx_frame, then the header + frame.

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "dataplane/forward.hpp"
#include "dataplane/net_header.hpp"
#include "dataplane/tx_uring.hpp"
#include "fuzz_check.hpp"
#include "fuzz_input.hpp"
#include "net/offloads.hpp"
#include "sys/fd.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/split_queue.hpp"

namespace {

using namespace vp;
using namespace vp::dataplane;

constexpr uint64_t kRamGpa = 0x40000000;
constexpr uint64_t kRamSize = 128 * 1024;
constexpr uint64_t kDescGpa = kRamGpa;
constexpr uint64_t kAvailGpa = kRamGpa + 0x1000;
constexpr uint64_t kUsedGpa = kRamGpa + 0x2000;
constexpr uint64_t kDataGpa = kRamGpa + 0x4000;
constexpr uint16_t kQueueSize = 64;

void check_header_properties(const NetHdr& hdr, uint32_t frame_len, uint64_t features) {
  if (check_tx_header(hdr, frame_len, features) != TxHeaderFault::kNone) return;
  FUZZ_CHECK((hdr.flags & ~kHdrFNeedsCsum) == 0);
  if (hdr.flags & kHdrFNeedsCsum) {
    FUZZ_CHECK(features & net::feature::kCsum);
    FUZZ_CHECK(uint32_t{hdr.csum_start} + hdr.csum_offset + 2 <= frame_len);
  }
  FUZZ_CHECK(hdr.hdr_len <= frame_len);
  if ((hdr.gso_type & ~kGsoEcn) != kGsoNone) {
    FUZZ_CHECK(hdr.flags & kHdrFNeedsCsum);
    FUZZ_CHECK(hdr.gso_size != 0);
  } else {
    FUZZ_CHECK(hdr.gso_type == kGsoNone);
  }
}

// The driver side of a split ring in a heap block ASan knows the size of.
struct Ring {
  Ring() : ram(new std::byte[kRamSize]()) {
    FUZZ_CHECK(memory.add({kRamGpa, kRamSize, 0x7f0000000000, ram.get()}).has_value());
  }
  std::byte* host(uint64_t gpa) { return ram.get() + (gpa - kRamGpa); }
  template <class T>
  void put(uint64_t gpa, T v) {
    std::memcpy(host(gpa), &v, sizeof v);
  }
  template <class T>
  T get(uint64_t gpa) {
    T v;
    std::memcpy(&v, host(gpa), sizeof v);
    return v;
  }

  // One chain of elements at consecutive data addresses; returns false when full.
  bool add(const std::vector<uint32_t>& lens, bool write) {
    if (lens.empty() || next_desc + lens.size() > kQueueSize) return false;
    const uint16_t head = next_desc;
    for (size_t i = 0; i < lens.size(); ++i) {
      const uint64_t at = kDescGpa + 16 * uint64_t{next_desc};
      const bool last = i + 1 == lens.size();
      put<uint64_t>(at, next_data);
      put<uint32_t>(at + 8, lens[i]);
      put<uint16_t>(at + 12, static_cast<uint16_t>((write ? virtio::kDescFWrite : 0) |
                                                   (last ? 0 : virtio::kDescFNext)));
      put<uint16_t>(at + 14, static_cast<uint16_t>(next_desc + 1));
      next_data += lens[i];
      ++next_desc;
    }
    put<uint16_t>(kAvailGpa + 4 + 2 * uint64_t(avail_idx % kQueueSize), head);
    ++avail_idx;
    put<uint16_t>(kAvailGpa + 2, avail_idx);
    return true;
  }
  uint16_t used_idx() { return get<uint16_t>(kUsedGpa + 2); }

  std::unique_ptr<std::byte[]> ram;
  virtio::GuestMemory memory;
  uint16_t next_desc = 0;
  uint16_t avail_idx = 0;
  uint64_t next_data = kDataGpa;
};

virtio::QueueConfig queue_config(uint64_t features) {
  return virtio::QueueConfig{kQueueSize, kDescGpa, kAvailGpa, kUsedGpa, features};
}

struct TapPair {
  TapPair() {
    int fds[2];
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    tap.reset(fds[0]);
    peer.reset(fds[1]);
  }
  Fd tap;
  Fd peer;
};

NetScratch& scratch() {
  static NetScratch s;
  return s;
}

void run_tx(const std::vector<uint8_t>& packet, const std::vector<uint32_t>& cuts,
            const NetSession& s, bool uring) {
  Ring ring;
  // Cut the packet into elements at the given points (ANY_LAYOUT).
  std::vector<uint32_t> lens;
  uint32_t done = 0;
  for (uint32_t cut : cuts) {
    const uint32_t left = static_cast<uint32_t>(packet.size()) - done;
    const uint32_t len = std::min(cut, left);
    lens.push_back(len);
    done += len;
  }
  lens.push_back(static_cast<uint32_t>(packet.size()) - done);
  if (!packet.empty()) std::memcpy(ring.host(kDataGpa), packet.data(), packet.size());
  if (!ring.add(lens, false)) return;

  virtio::SplitQueue q;
  FUZZ_CHECK(q.configure(ring.memory, queue_config(s.features)).has_value());
  TapPair tap;
  NetCounters c;
  ForwardResult r;
  if (uring) {
    // The io_uring path checks and sends exactly what forward_tx() does.
    auto ring_tx = TxUring::create(tap.tap.get());
    FUZZ_CHECK(ring_tx.has_value());
    r = forward_tx_uring(q, **ring_tx, tap.tap.get(), -1, s, scratch(), c);
    FUZZ_CHECK((*ring_tx)->idle());  // a socketpair with room completes every write at once
  } else {
    r = forward_tx(q, tap.tap.get(), -1, s, scratch(), c);
  }
  FUZZ_CHECK(r.chains == 1);
  FUZZ_CHECK(ring.used_idx() == 1);  // never leak a head: the chain came back

  std::vector<uint8_t> got(packet.size() + 64);
  const ssize_t n = ::recv(tap.peer.get(), got.data(), got.size(), MSG_DONTWAIT);
  if (n < 0) {
    FUZZ_CHECK(r.frames == 0);
    return;
  }
  FUZZ_CHECK(r.frames == 1);
  FUZZ_CHECK(static_cast<size_t>(n) == packet.size());
  FUZZ_CHECK(std::memcmp(got.data(), packet.data(), packet.size()) == 0);
  const auto hdr = decode_net_hdr(std::as_bytes(std::span(got.data(), s.hdr_len)));
  const uint32_t frame_len = static_cast<uint32_t>(n) - s.hdr_len;
  FUZZ_CHECK(frame_len >= kEthHeaderSize);
  FUZZ_CHECK(check_tx_header(hdr, frame_len, s.features) == TxHeaderFault::kNone);
}

void run_rx(const std::vector<uint8_t>& packet, const std::vector<uint32_t>& buffers,
            const NetSession& s, RxHold* hold) {
  Ring ring;
  uint32_t offered = 0;
  for (uint32_t len : buffers) {
    if (!ring.add({len}, true)) break;
    offered += len;
  }
  (void)offered;
  virtio::SplitQueue q;
  FUZZ_CHECK(q.configure(ring.memory, queue_config(s.features)).has_value());
  TapPair tap;
  if (::send(tap.peer.get(), packet.data(), packet.size(), 0) < 0) return;
  NetCounters c;
  const ForwardResult r = forward_rx(q, tap.tap.get(), -1, s, scratch(), c, hold);
  (void)r;
  // What the guest got: used entries in order, their bytes from consecutive buffers.
  const uint16_t used = ring.used_idx();
  FUZZ_CHECK(used <= ring.avail_idx);
  uint64_t total = 0;
  for (uint16_t i = 0; i < used; ++i) {
    const uint32_t id = ring.get<uint32_t>(kUsedGpa + 4 + 8 * uint64_t{i});
    const uint32_t len = ring.get<uint32_t>(kUsedGpa + 8 + 8 * uint64_t{i});
    FUZZ_CHECK(id < ring.next_desc);
    FUZZ_CHECK(len <= ring.get<uint32_t>(kDescGpa + 16 * uint64_t{id} + 8));
    total += len;
  }
  if (c.rx_packets == 1) {
    // Delivered whole: the frame bytes after the header are the TAP's, in order.
    FUZZ_CHECK(total == packet.size());
    std::vector<uint8_t> seen;
    for (uint16_t i = 0; i < used; ++i) {
      const uint32_t id = ring.get<uint32_t>(kUsedGpa + 4 + 8 * uint64_t{i});
      const uint32_t len = ring.get<uint32_t>(kUsedGpa + 8 + 8 * uint64_t{i});
      const auto* p = reinterpret_cast<const uint8_t*>(
          ring.host(ring.get<uint64_t>(kDescGpa + 16 * uint64_t{id})));
      seen.insert(seen.end(), p, p + len);
    }
    FUZZ_CHECK(std::equal(packet.begin() + s.hdr_len, packet.end(), seen.begin() + s.hdr_len));
  } else {
    // Dropped, or kept whole in the hold: no buffer says it holds anything.
    FUZZ_CHECK(total == 0);
    if (hold != nullptr && hold->len != 0) FUZZ_CHECK(hold->len == packet.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vp::fuzz::Input in(data, size);
  const uint64_t features = in.u64();
  const uint8_t mode = in.u8();
  const uint8_t count = in.u8() % 8;
  std::vector<uint32_t> cuts;
  for (uint8_t i = 0; i < count; ++i) cuts.push_back(in.u16() % 2048);
  const uint16_t max_rx_frame = in.u16();
  auto rest = in.bytes(64 * 1024);
  std::vector<uint8_t> packet(rest.begin(), rest.end());

  NetSession s = make_net_session(features);
  s.budget = 4;
  if (packet.size() >= kNetHdrLegacySize) {
    check_header_properties(decode_net_hdr(std::as_bytes(std::span(packet.data(), 10))),
                            static_cast<uint32_t>(packet.size()) - s.hdr_len, features);
  }
  if (packet.size() > 60000) return 0;
  if (mode & 1) {
    s.max_rx_frame = std::max<uint32_t>(max_rx_frame, 64);
    std::vector<uint32_t> buffers = cuts;
    for (auto& b : buffers) b = b ? b : 1;
    if (buffers.empty()) buffers.push_back(1514 + s.hdr_len);
    // Bit 1: with a hold (mergeable buffers), whose learnt frame size the other bits give,
    // so reads sized to recent frames and the overflow into the hold are covered too.
    std::optional<RxHold> hold;
    if (mode & 2) {
      hold.emplace();
      hold->expect = uint32_t{static_cast<uint8_t>(mode >> 2)} * 1024;
    }
    run_rx(packet, buffers, s, hold ? &*hold : nullptr);
  } else {
    run_tx(packet, cuts, s, (mode & 2) != 0);
  }
  return 0;
}
