#pragma once

// The dirty-page log of a live migration: a bitmap in memory the vhost-user front-end shares
// (SET_LOG_BASE), one bit per 4 KiB page of guest-physical memory, that the device sets for
// every page it writes while the front-end copies guest RAM to the migration target.
//
// SPEC: QEMU docs/interop/vhost-user.rst, "Migration": page = addr / VHOST_LOG_PAGE (0x1000),
// log[page / 8] |= 1 << page % 8, where addr is a guest-physical address; atomic operations,
// because the front-end reads and clears the log concurrently. A bit is set after the write it
// stands for: the front-end clears a bit before it copies the page, so a bit set too early
// could be cleared and the page copied before the write lands, and the write would be lost.

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace vp::virtio {

/// VHOST_LOG_PAGE: the granule of the dirty log.
inline constexpr uint64_t kLogPageSize = 0x1000;

/// What one mark() did: pages whose bit it set, and pages past the end of the log (not
/// marked; the front-end sized the log too small for the address).
struct LogMark {
  uint64_t marked = 0;
  uint64_t beyond = 0;
};

/// A view of a log bitmap (not owned: the session maps it). Marking is const and thread-safe:
/// several workers may mark the same log at once. Nothing allocates, locks or logs.
class DirtyLog {
 public:
  DirtyLog() = default;
  DirtyLog(std::byte* bitmap, uint64_t bytes) noexcept : bitmap_(bitmap), bytes_(bytes) {}

  bool valid() const noexcept { return bitmap_ != nullptr && bytes_ != 0; }
  uint64_t bytes() const noexcept { return bytes_; }
  /// Pages the log has a bit for: guest-physical [0, pages() * kLogPageSize).
  uint64_t pages() const noexcept { return bytes_ > UINT64_MAX / 8 ? UINT64_MAX : bytes_ * 8; }

  /// Log bytes needed to cover guest-physical [0, end) (end = one past the highest byte).
  static constexpr uint64_t bytes_for(uint64_t end) noexcept {
    const uint64_t pages = end / kLogPageSize + (end % kLogPageSize != 0 ? 1 : 0);
    return pages / 8 + (pages % 8 != 0 ? 1 : 0);
  }

  /// Sets the bit of every page [gpa, gpa + len) touches (none for len 0), with release
  /// ordering so the write it records is visible before the bit is. Pages past the log are
  /// skipped and counted in `beyond`; a range that runs past 2^64 ends there.
  LogMark mark(uint64_t gpa, uint64_t len) const noexcept {
    LogMark out;
    if (len == 0 || bitmap_ == nullptr) return out;
    const uint64_t first = gpa / kLogPageSize;
    uint64_t last_byte = 0;
    if (__builtin_add_overflow(gpa, len - 1, &last_byte)) last_byte = UINT64_MAX;
    const uint64_t last = last_byte / kLogPageSize;
    const uint64_t limit = pages();
    if (first >= limit) {
      out.beyond = last - first + 1;
      return out;
    }
    const uint64_t end = last < limit ? last : limit - 1;
    out.beyond = last - end;
    for (uint64_t page = first; page <= end; ++page) {
      auto& byte = *reinterpret_cast<uint8_t*>(bitmap_ + page / 8);
      std::atomic_ref<uint8_t>(byte).fetch_or(static_cast<uint8_t>(1u << (page % 8)),
                                              std::memory_order_release);
    }
    out.marked = end - first + 1;
    return out;
  }

  /// Whether page `page`'s bit is set (tests and diagnostics; false past the log).
  bool is_marked(uint64_t page) const noexcept {
    if (bitmap_ == nullptr || page >= pages()) return false;
    auto& byte = *reinterpret_cast<uint8_t*>(bitmap_ + page / 8);
    return (std::atomic_ref<uint8_t>(byte).load(std::memory_order_relaxed) >> (page % 8) & 1) != 0;
  }

 private:
  std::byte* bitmap_ = nullptr;
  uint64_t bytes_ = 0;
};

/// How a queue logs its writes while migration runs; set by the vhost-user engine when the
/// ring starts (with every ring of the session stopped around a change of the log).
struct RingLog {
  /// The log, or nullptr when logging is off (LOG_ALL not acked or no log base).
  const DirtyLog* log = nullptr;
  /// VHOST_VRING_F_LOG was set: writes to the used ring (split) or the device event area
  /// (packed) are logged at used_log_addr plus their offset in it.
  bool log_used = false;
  /// SET_VRING_ADDR log_guest_addr: a guest-physical address, not necessarily inside
  /// guest memory (the log's bounds check covers it).
  uint64_t used_log_addr = 0;
};

}  // namespace vp::virtio
