#pragma once

// Test support for the dataplane tests: guest RAM in ordinary memory, the DRIVER side of a
// split and a packed ring behind one interface (so typed tests run on both formats), and a
// SOCK_SEQPACKET socketpair standing in for a TAP queue (message boundaries like a TAP; a
// short read truncates like tun).

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#include "sys/fd.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/queue.hpp"
#include "virtio/split_queue.hpp"

namespace vp::dataplane::test {

using Bytes = std::vector<std::byte>;

inline Bytes bytes_of(std::initializer_list<int> list) {
  Bytes out;
  for (int v : list) out.push_back(static_cast<std::byte>(v));
  return out;
}

inline Bytes concat(const Bytes& a, const Bytes& b) {
  Bytes out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

inline Bytes slice(const Bytes& b, std::size_t from, std::size_t len) {
  return Bytes(b.begin() + static_cast<std::ptrdiff_t>(from),
               b.begin() + static_cast<std::ptrdiff_t>(from + len));
}

/// An Ethernet frame of `len` bytes: broadcast destination, a locally administered source,
/// ethertype 0x88b5 (local experimental), then a pattern from `seed`. Below 14 bytes, the
/// first `len` bytes of such a header (a runt).
inline Bytes eth_frame(std::size_t len, int seed = 1) {
  Bytes f(len < 14 ? 14 : len);
  for (std::size_t i = 0; i < 6; ++i) f[i] = std::byte{0xff};
  const unsigned char src[6] = {0x02, 0, 0, 0, 0, 0x01};
  for (std::size_t i = 0; i < 6; ++i) f[6 + i] = std::byte{src[i]};
  f[12] = std::byte{0x88};
  f[13] = std::byte{0xb5};
  for (std::size_t i = 14; i < len; ++i) f[i] = static_cast<std::byte>((i * 7 + seed * 13) & 0xff);
  f.resize(len);
  return f;
}

/// A virtio_net_hdr of `len` bytes (10 or 12), little-endian.
inline Bytes net_hdr(std::size_t len, uint8_t flags = 0, uint8_t gso_type = 0, uint16_t hdr_len = 0,
                     uint16_t gso_size = 0, uint16_t csum_start = 0, uint16_t csum_offset = 0,
                     uint16_t num_buffers = 0) {
  Bytes h(len);
  const uint16_t fields[] = {hdr_len, gso_size, csum_start, csum_offset, num_buffers};
  h[0] = std::byte{flags};
  h[1] = std::byte{gso_type};
  for (std::size_t i = 0; i < 5 && 2 + 2 * i + 1 < len; ++i) {
    h[2 + 2 * i] = static_cast<std::byte>(fields[i] & 0xff);
    h[3 + 2 * i] = static_cast<std::byte>(fields[i] >> 8);
  }
  return h;
}

constexpr uint64_t kRamGpa = 0x40000000;
constexpr uint64_t kRamSize = 8 << 20;
constexpr uint64_t kDescGpa = kRamGpa;             // up to 1024 descriptors
constexpr uint64_t kDriverGpa = kRamGpa + 0x8000;  // split avail / packed driver event
constexpr uint64_t kDeviceGpa = kRamGpa + 0xa000;  // split used / packed device event
constexpr uint64_t kDataGpa = kRamGpa + 0x100000;  // packet buffers, bump-allocated

/// One region of guest RAM, page aligned and zeroed.
class GuestRam {
 public:
  GuestRam() {
    ram_ = static_cast<std::byte*>(::operator new (kRamSize, std::align_val_t{4096}));
    std::memset(ram_, 0, kRamSize);
    EXPECT_TRUE(memory.add({kRamGpa, kRamSize, 0x7f0000000000, ram_}).has_value());
  }
  ~GuestRam() { ::operator delete (ram_, std::align_val_t{4096}); }
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;

  std::byte* host(uint64_t gpa) { return ram_ + (gpa - kRamGpa); }
  template <class T>
  void put(uint64_t gpa, T value) {
    std::memcpy(host(gpa), &value, sizeof value);
  }
  template <class T>
  T get(uint64_t gpa) {
    T value;
    std::memcpy(&value, host(gpa), sizeof value);
    return value;
  }
  void write(uint64_t gpa, const Bytes& b) { std::memcpy(host(gpa), b.data(), b.size()); }
  Bytes read(uint64_t gpa, std::size_t len) {
    Bytes b(len);
    std::memcpy(b.data(), host(gpa), len);
    return b;
  }
  /// A fresh 64-byte aligned buffer of `len` bytes, filled with 0xee (so stale bytes show).
  uint64_t alloc(std::size_t len, int fill = 0xee) {
    const uint64_t gpa = next_;
    next_ += (len + 63) & ~uint64_t{63};
    EXPECT_LE(next_, kRamGpa + kRamSize);
    std::memset(host(gpa), fill, len);
    return gpa;
  }

  virtio::GuestMemory memory;

 private:
  std::byte* ram_ = nullptr;
  uint64_t next_ = kDataGpa;
};

/// One element of a chain the driver offers.
struct Elem {
  uint64_t addr;
  uint32_t len;
  bool write = false;
};

struct UsedElem {
  uint16_t id;
  uint32_t len;
  bool operator==(const UsedElem&) const = default;
};

inline std::ostream& operator<<(std::ostream& os, const UsedElem& u) {
  return os << "{id " << u.id << ", len " << u.len << "}";
}

/// The driver's side of a split ring (virtio 1.2 §2.7.13); descriptors from a free list.
class SplitRing {
 public:
  using Queue = virtio::SplitQueue;
  static constexpr const char* kName = "split";

  SplitRing(GuestRam& ram, uint16_t size) : ram_(ram), size_(size) {
    for (uint16_t i = size; i-- > 0;) free_.push_back(i);
  }

  virtio::QueueConfig config(uint64_t features) const {
    return virtio::QueueConfig{size_, kDescGpa, kDriverGpa, kDeviceGpa, features};
  }

  /// Offers a chain and publishes it; returns its id (the head index).
  uint16_t add(const std::vector<Elem>& elems) {
    EXPECT_GE(free_.size(), elems.size());
    std::vector<uint16_t> descs;
    for (std::size_t i = 0; i < elems.size(); ++i) {
      descs.push_back(free_.back());
      free_.pop_back();
    }
    for (std::size_t i = 0; i < elems.size(); ++i) {
      const bool last = i + 1 == elems.size();
      const uint64_t at = kDescGpa + 16 * uint64_t{descs[i]};
      ram_.put<uint64_t>(at, elems[i].addr);
      ram_.put<uint32_t>(at + 8, elems[i].len);
      ram_.put<uint16_t>(at + 12, static_cast<uint16_t>((elems[i].write ? virtio::kDescFWrite : 0) |
                                                        (last ? 0 : virtio::kDescFNext)));
      ram_.put<uint16_t>(at + 14, last ? 0 : descs[i + 1]);
    }
    const uint16_t head = descs.front();
    chains_[head] = descs;
    ram_.put<uint16_t>(kDriverGpa + 4 + 2 * uint64_t(avail_idx_ % size_), head);
    ++avail_idx_;
    ram_.put<uint16_t>(kDriverGpa + 2, avail_idx_);
    return head;
  }

  /// The next used entry the device published, freeing its descriptors.
  std::optional<UsedElem> take_used() {
    if (ram_.get<uint16_t>(kDeviceGpa + 2) == last_used_) return std::nullopt;
    const uint64_t e = kDeviceGpa + 4 + 8 * uint64_t(last_used_ % size_);
    ++last_used_;
    const UsedElem u{static_cast<uint16_t>(ram_.get<uint32_t>(e)), ram_.get<uint32_t>(e + 4)};
    auto it = chains_.find(u.id);
    EXPECT_NE(it, chains_.end()) << "used id " << u.id << " is not outstanding";
    if (it != chains_.end()) {
      for (uint16_t d : it->second) free_.push_back(d);
      chains_.erase(it);
    }
    return u;
  }
  std::vector<UsedElem> take_all_used() {
    std::vector<UsedElem> out;
    while (auto u = take_used()) out.push_back(*u);
    return out;
  }

  /// Without EVENT_IDX: VIRTQ_AVAIL_F_NO_INTERRUPT on or off.
  void suppress_interrupts(bool on) { ram_.put<uint16_t>(kDriverGpa, on ? 1 : 0); }
  /// With EVENT_IDX: interrupt once the used entry with this (free-running) index is written.
  void set_used_event(uint16_t idx) {
    ram_.put<uint16_t>(kDriverGpa + 4 + 2 * uint64_t{size_}, idx);
  }
  /// Whether the device asked for kicks (used flags 0, or avail_event at our avail idx).
  bool kicks_requested(bool event_idx) {
    if (event_idx) return ram_.get<uint16_t>(kDeviceGpa + 4 + 8 * uint64_t{size_}) == avail_idx_;
    return ram_.get<uint16_t>(kDeviceGpa) == 0;
  }

 private:
  GuestRam& ram_;
  uint16_t size_;
  std::vector<uint16_t> free_;
  std::map<uint16_t, std::vector<uint16_t>> chains_;
  uint16_t avail_idx_ = 0;
  uint16_t last_used_ = 0;
};

/// The driver's side of a packed ring (virtio 1.2 §2.8.21); both wrap counters start at 1.
class PackedRing {
 public:
  using Queue = virtio::PackedQueue;
  static constexpr const char* kName = "packed";

  PackedRing(GuestRam& ram, uint16_t size) : ram_(ram), size_(size) {}

  virtio::QueueConfig config(uint64_t features) const {
    return virtio::QueueConfig{size_, kDescGpa, kDriverGpa, kDeviceGpa, features};
  }

  uint16_t add(const std::vector<Elem>& elems) {
    uint16_t id = 0;
    while (slots_.count(id) != 0) ++id;
    const uint16_t first = next_avail_;
    uint16_t first_flags = 0;
    for (std::size_t i = 0; i < elems.size(); ++i) {
      const bool last = i + 1 == elems.size();
      auto flags = static_cast<uint16_t>(
          (elems[i].write ? virtio::kDescFWrite : 0) | (last ? 0 : virtio::kDescFNext) |
          (avail_wrap_ ? virtio::kPackedDescFAvail : virtio::kPackedDescFUsed));
      const uint64_t at = kDescGpa + 16 * uint64_t{next_avail_};
      ram_.put<uint64_t>(at, elems[i].addr);
      ram_.put<uint32_t>(at + 8, elems[i].len);
      ram_.put<uint16_t>(at + 12, last ? id : 0xdead);
      if (i == 0) {
        first_flags = flags;
      } else {
        ram_.put<uint16_t>(at + 14, flags);
      }
      if (++next_avail_ == size_) {
        next_avail_ = 0;
        avail_wrap_ = !avail_wrap_;
      }
    }
    ram_.put<uint16_t>(kDescGpa + 16 * uint64_t{first} + 14, first_flags);  // last: publishes
    slots_[id] = static_cast<uint16_t>(elems.size());
    return id;
  }

  std::optional<UsedElem> take_used() {
    const uint64_t at = kDescGpa + 16 * uint64_t{next_used_};
    const uint16_t flags = ram_.get<uint16_t>(at + 14);
    const bool avail = (flags & virtio::kPackedDescFAvail) != 0;
    const bool used = (flags & virtio::kPackedDescFUsed) != 0;
    if (avail != used || used != used_wrap_) return std::nullopt;
    const UsedElem u{ram_.get<uint16_t>(at + 12), ram_.get<uint32_t>(at + 8)};
    auto it = slots_.find(u.id);
    EXPECT_NE(it, slots_.end()) << "used id " << u.id << " is not outstanding";
    if (it == slots_.end()) return u;
    next_used_ = static_cast<uint16_t>(next_used_ + it->second);
    if (next_used_ >= size_) {
      next_used_ = static_cast<uint16_t>(next_used_ - size_);
      used_wrap_ = !used_wrap_;
    }
    slots_.erase(it);
    return u;
  }
  std::vector<UsedElem> take_all_used() {
    std::vector<UsedElem> out;
    while (auto u = take_used()) out.push_back(*u);
    return out;
  }

  void suppress_interrupts(bool on) {
    ram_.put<uint16_t>(kDriverGpa + 2,
                       on ? virtio::kRingEventFlagsDisable : virtio::kRingEventFlagsEnable);
  }
  /// With EVENT_IDX: interrupt once the used descriptor at ring position idx (first lap) is
  /// written.
  void set_used_event(uint16_t idx) {
    ram_.put<uint16_t>(kDriverGpa, static_cast<uint16_t>(idx | 0x8000));
    ram_.put<uint16_t>(kDriverGpa + 2, virtio::kRingEventFlagsDesc);
  }
  bool kicks_requested(bool /*event_idx*/) {
    return ram_.get<uint16_t>(kDeviceGpa + 2) != virtio::kRingEventFlagsDisable;
  }

 private:
  GuestRam& ram_;
  uint16_t size_;
  std::map<uint16_t, uint16_t> slots_;  // outstanding id -> descriptors
  uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  uint16_t next_used_ = 0;
  bool used_wrap_ = true;
};

/// A SOCK_SEQPACKET pair: `tap` is handed to the forwarder (non-blocking), `peer` plays the
/// kernel side.
struct FakeTap {
  FakeTap() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    tap.reset(fds[0]);
    peer.reset(fds[1]);
  }
  void send(const Bytes& frame) {
    ASSERT_EQ(::send(peer.get(), frame.data(), frame.size(), 0),
              static_cast<ssize_t>(frame.size()));
  }
  /// The next message the forwarder wrote, or nothing.
  std::optional<Bytes> receive() {
    Bytes b(70000);
    const ssize_t n = ::recv(peer.get(), b.data(), b.size(), MSG_DONTWAIT);
    if (n < 0) return std::nullopt;
    b.resize(static_cast<std::size_t>(n));
    return b;
  }
  /// Size of the message waiting for the forwarder, without taking it.
  std::optional<std::size_t> waiting() {
    std::byte b[1];
    const ssize_t n = ::recv(tap.get(), b, 1, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
    if (n < 0) return std::nullopt;
    return static_cast<std::size_t>(n);
  }

  Fd tap;
  Fd peer;
};

}  // namespace vp::dataplane::test
