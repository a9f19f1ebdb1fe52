#pragma once

// Internal to lib/virtio: how the queues touch guest-shared memory.
//
// The guest (and a hostile one on purpose) may change ring memory while we read it. Every
// field is therefore loaded exactly once, through std::atomic_ref (a single, untorn access the
// compiler may neither repeat nor elide), into a local that is then checked and used. Nothing
// ever reads the same guest field twice and trusts both reads to agree.
//
// virtio 1.x rings are little-endian (virtio 1.2 §2.7, §2.8); the conversions are no-ops on
// little-endian hosts.

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "virtio/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace vp::virtio::detail {

template <class T>
constexpr T from_le(T v) noexcept {
  if constexpr (std::endian::native == std::endian::big) {
    return std::byteswap(v);
  } else {
    return v;
  }
}

template <class T>
constexpr T to_le(T v) noexcept {
  return from_le(v);
}

/// One load of a naturally aligned little-endian guest field. The caller guarantees the
/// alignment (rings are checked at configure time).
template <class T>
inline T load(const std::byte* p, std::memory_order order = std::memory_order_relaxed) noexcept {
  auto* object = reinterpret_cast<T*>(const_cast<std::byte*>(p));
  return from_le(std::atomic_ref<T>(*object).load(order));
}

/// One store of a naturally aligned little-endian guest field.
template <class T>
inline void store(std::byte* p, T value,
                  std::memory_order order = std::memory_order_relaxed) noexcept {
  std::atomic_ref<T>(*reinterpret_cast<T*>(p)).store(to_le(value), order);
}

/// A 16-byte descriptor as it was read, once. Both formats put two le16 after addr and len:
/// at12/at14 are split `flags`/`next` or packed `id`/`flags`.
struct RawDesc {
  uint64_t addr = 0;
  uint32_t len = 0;
  uint16_t at12 = 0;
  uint16_t at14 = 0;
};

/// Reads a descriptor from a table whose alignment the spec does not promise (indirect
/// tables may sit anywhere). Aligned tables take four single loads; a misaligned one is
/// copied byte by byte through volatile, which also reads every byte exactly once.
inline RawDesc load_desc(const std::byte* p) noexcept {
  if (reinterpret_cast<uintptr_t>(p) % alignof(uint64_t) == 0) {
    return RawDesc{load<uint64_t>(p), load<uint32_t>(p + 8), load<uint16_t>(p + 12),
                   load<uint16_t>(p + 14)};
  }
  unsigned char bytes[kDescSize];
  const volatile unsigned char* src = reinterpret_cast<const volatile unsigned char*>(p);
  for (std::size_t i = 0; i < kDescSize; ++i) bytes[i] = src[i];
  RawDesc d;
  std::memcpy(&d.addr, bytes, 8);
  std::memcpy(&d.len, bytes + 8, 4);
  std::memcpy(&d.at12, bytes + 12, 2);
  std::memcpy(&d.at14, bytes + 14, 2);
  d.addr = from_le(d.addr);
  d.len = from_le(d.len);
  d.at12 = from_le(d.at12);
  d.at14 = from_le(d.at14);
  return d;
}

/// Marks guest-physical [gpa, gpa + len) in the log and counts it.
inline void log_range(const DirtyLog& log, uint64_t gpa, uint64_t len, QueueCounters& c) noexcept {
  const LogMark m = log.mark(gpa, len);
  c.dirty_pages_logged += m.marked;
  c.dirty_pages_beyond_log += m.beyond;
}

/// Marks a write at `offset` into the used ring (split) or device event area (packed): at
/// log_guest_addr + offset when VHOST_VRING_F_LOG asked for it, else not at all.
inline void log_used_write(const RingLog& log, uint64_t offset, uint64_t len,
                           QueueCounters& c) noexcept {
  if (log.log == nullptr || !log.log_used) return;
  uint64_t gpa = 0;
  if (__builtin_add_overflow(log.used_log_addr, offset, &gpa)) {
    ++c.dirty_pages_beyond_log;
    return;
  }
  log_range(*log.log, gpa, len, c);
}

/// Marks the first `len` bytes of a chain's writable elements (host pointers from
/// translate(), so each lies inside one region and maps back to its guest address).
inline void log_host_writes(const DirtyLog& log, const GuestMemory& memory,
                            std::span<const iovec> iov, uint64_t len, QueueCounters& c) noexcept {
  for (const iovec& v : iov) {
    if (len == 0) break;
    const uint64_t n = v.iov_len < len ? v.iov_len : len;
    len -= n;
    const auto gpa = memory.host_to_gpa(static_cast<const std::byte*>(v.iov_base), n);
    if (!gpa) {
      // Not from this memory table: nothing to mark it by. Counted, never silently lost.
      c.dirty_pages_beyond_log += n / kLogPageSize + 1;
      continue;
    }
    log_range(log, *gpa, n, c);
  }
}

/// Why a chain was refused; each maps to one QueueCounters field.
enum class ChainFault : uint8_t {
  kNone,
  kIndexOutOfRange,
  kTooLong,
  kOutsideMemory,
  kLengthOverflow,
  kBadIndirect,
  kReadableAfterWritable,
  kOverCapacity,
};

/// Counts a refused chain under its reason.
inline void count_fault(QueueCounters& c, ChainFault fault) noexcept {
  switch (fault) {
    case ChainFault::kNone:
      return;
    case ChainFault::kOverCapacity:
      ++c.chains_over_capacity;
      return;
    case ChainFault::kIndexOutOfRange:
      ++c.desc_index_out_of_range;
      break;
    case ChainFault::kTooLong:
      ++c.desc_chain_too_long;
      break;
    case ChainFault::kOutsideMemory:
      ++c.desc_outside_memory;
      break;
    case ChainFault::kLengthOverflow:
      ++c.chain_length_overflow;
      break;
    case ChainFault::kBadIndirect:
      ++c.bad_indirect;
      break;
    case ChainFault::kReadableAfterWritable:
      ++c.readable_after_writable;
      break;
  }
  ++c.malformed_chains;
}

/// Collects one chain's elements into the caller's iovec array, enforcing the rules that do
/// not depend on the ring format: every element inside one memory region, device-readable
/// before device-writable, the total length within 32 bits, and the array's capacity.
class ChainBuilder {
 public:
  ChainBuilder(const GuestMemory& memory, std::span<iovec> iov) noexcept
      : memory_(memory), iov_(iov) {}

  /// Adds the element [addr, addr + len); `addr`, `len` and `writable` come from guest
  /// memory and are checked here.
  ChainFault add(uint64_t addr, uint32_t len, bool writable) noexcept {
    // SPEC: virtio 1.2 §2.7.4.2, §2.8.17: device-writable elements follow device-readable ones.
    if (!writable && seen_writable_) return ChainFault::kReadableAfterWritable;
    // SPEC: virtio 1.2 §2.7.5.2: a chain is at most 2^32 bytes; used len is 32 bits.
    const uint32_t total = readable_bytes_ + writable_bytes_;
    if (len > UINT32_MAX - total) return ChainFault::kLengthOverflow;
    std::byte* host = memory_.translate(addr, len);
    if (host == nullptr) return ChainFault::kOutsideMemory;
    if (len != 0) {
      if (count_ == iov_.size()) return ChainFault::kOverCapacity;
      iov_[count_++] = iovec{host, len};
    }
    if (writable) {
      seen_writable_ = true;
      writable_bytes_ += len;
    } else {
      readable_count_ = count_;
      readable_bytes_ += len;
    }
    return ChainFault::kNone;
  }

  Chain finish(ChainHead head) const noexcept {
    return Chain{head, iov_.first(readable_count_),
                 iov_.subspan(readable_count_, count_ - readable_count_), readable_bytes_,
                 writable_bytes_};
  }

 private:
  const GuestMemory& memory_;
  std::span<iovec> iov_;
  std::size_t count_ = 0;
  std::size_t readable_count_ = 0;
  uint32_t readable_bytes_ = 0;
  uint32_t writable_bytes_ = 0;
  bool seen_writable_ = false;
};

}  // namespace vp::virtio::detail
