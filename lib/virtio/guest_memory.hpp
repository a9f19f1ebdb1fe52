#pragma once

// Guest RAM as the frontend describes it (vhost-user SET_MEM_TABLE / ADD_MEM_REG) and the
// one place where a guest address becomes a host pointer. Every translation checks that the
// whole range lies inside one region, so nothing downstream re-checks bounds.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "sys/error.hpp"
#include "sys/fd.hpp"

namespace vp::virtio {

/// One guest RAM region and where this process sees it.
struct MemoryRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t size = 0;
  /// The frontend's virtual address of the first byte (vhost-user ring addresses use it).
  uint64_t user_addr = 0;
  /// First byte of the region in this process; mapped by someone else, not owned.
  std::byte* host = nullptr;
};

/// A fixed-capacity table of regions, sorted by guest-physical address. Nothing allocates
/// after construction; lookups are const and safe to run from several threads as long as
/// nobody calls add/remove/clear meanwhile (the session pauses the workers for that).
class GuestMemory {
 public:
  static constexpr std::size_t kMaxRegions = 64;

  /// Adds a region. Refuses an empty region, a null host pointer or a range that wraps
  /// 2^64 ("invalid-region"), a guest-physical or user range overlapping an existing
  /// region ("overlapping-region"), and more than kMaxRegions ("too-many-regions").
  Result<void> add(const MemoryRegion& region);

  /// Removes the region with exactly this base and size; false if there is none.
  bool remove(uint64_t guest_phys_addr, uint64_t size) noexcept;

  /// Forgets every region (the host mappings are not touched: they are not ours).
  void clear() noexcept { count_ = 0; }

  /// Host pointer for [gpa, gpa + len) if the whole range lies inside one region, else
  /// nullptr. len 0 asks only that gpa itself lie inside a region. Never overflows.
  std::byte* translate(uint64_t gpa, uint64_t len) const noexcept;

  /// Guest-physical address of [uva, uva + len) if it lies inside one region's user range.
  std::optional<uint64_t> uva_to_gpa(uint64_t uva, uint64_t len) const noexcept;

  /// Host pointer for a frontend virtual range, same rules as translate().
  std::byte* translate_uva(uint64_t uva, uint64_t len) const noexcept;

  /// Guest-physical address of the host range [host, host + len) if it lies inside one
  /// region's mapping (the way back from translate(), for the dirty log).
  std::optional<uint64_t> host_to_gpa(const std::byte* host, uint64_t len) const noexcept;

  std::span<const MemoryRegion> regions() const noexcept { return {regions_.data(), count_}; }
  std::size_t region_count() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }

 private:
  std::array<MemoryRegion, kMaxRegions> regions_{};
  std::size_t count_ = 0;
};

/// A shared read-write mapping of `size` bytes of a file at byte `offset` (which need not be
/// page aligned: the mapping starts at the page below it). Unmapped on destruction. The fd
/// may be closed once map() returns.
class MappedRegion {
 public:
  MappedRegion() = default;
  MappedRegion(MappedRegion&& other) noexcept;
  MappedRegion& operator=(MappedRegion&& other) noexcept;
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;
  ~MappedRegion() { reset(); }

  /// Maps with MAP_SHARED | MAP_NORESERVE. Fails with "invalid-region" for a bad fd, a zero
  /// size or an offset/size that overflows, and "system" (naming mmap) if the kernel refuses.
  static Result<MappedRegion> map(const Fd& fd, uint64_t size, uint64_t offset);

  /// The byte at `offset` in the file; nullptr when empty.
  std::byte* data() const noexcept { return data_; }
  uint64_t size() const noexcept { return size_; }
  bool valid() const noexcept { return data_ != nullptr; }

  /// Unmaps (if mapped).
  void reset() noexcept;

 private:
  void* base_ = nullptr;
  std::size_t length_ = 0;
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace vp::virtio
