#include "virtio/guest_memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <utility>

#include "sys/str.hpp"

namespace vp::virtio {

namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// [a, a + as) and [b, b + bs) share a byte; both ends are known not to wrap.
bool overlaps(uint64_t a, uint64_t as, uint64_t b, uint64_t bs) noexcept {
  return a < b + bs && b < a + as;
}

// Offset of [addr, addr + len) inside [base, base + size), if it fits entirely. Written
// with subtractions only, so no operand can wrap.
std::optional<uint64_t> offset_inside(uint64_t base, uint64_t size, uint64_t addr,
                                      uint64_t len) noexcept {
  if (addr < base) return std::nullopt;
  const uint64_t offset = addr - base;
  if (offset >= size) return std::nullopt;  // len 0 still needs addr inside the region
  if (len > size - offset) return std::nullopt;
  return offset;
}

}  // namespace

Result<void> GuestMemory::add(const MemoryRegion& region) {
  if (region.size == 0 || region.host == nullptr) {
    return fail("invalid-region", str("memory region at guest address ", region.guest_phys_addr,
                                      " is empty or not mapped"));
  }
  if (region.size > kU64Max - region.guest_phys_addr || region.size > kU64Max - region.user_addr) {
    return fail("invalid-region", str("memory region at guest address ", region.guest_phys_addr,
                                      " of ", region.size, " bytes wraps the address space"));
  }
  for (const MemoryRegion& r : regions()) {
    if (overlaps(r.guest_phys_addr, r.size, region.guest_phys_addr, region.size) ||
        overlaps(r.user_addr, r.size, region.user_addr, region.size)) {
      return fail("overlapping-region",
                  str("memory region at guest address ", region.guest_phys_addr,
                      " overlaps the region at ", r.guest_phys_addr));
    }
  }
  if (count_ == kMaxRegions) {
    return fail("too-many-regions", str("at most ", kMaxRegions, " memory regions are supported"));
  }
  // Keep the table sorted by guest-physical address for the binary search in translate().
  auto* end = regions_.data() + count_;
  auto* pos =
      std::upper_bound(regions_.data(), end, region.guest_phys_addr,
                       [](uint64_t gpa, const MemoryRegion& r) { return gpa < r.guest_phys_addr; });
  std::move_backward(pos, end, end + 1);
  *pos = region;
  ++count_;
  return {};
}

bool GuestMemory::remove(uint64_t guest_phys_addr, uint64_t size) noexcept {
  auto* end = regions_.data() + count_;
  auto* it = std::find_if(regions_.data(), end, [&](const MemoryRegion& r) {
    return r.guest_phys_addr == guest_phys_addr && r.size == size;
  });
  if (it == end) return false;
  std::move(it + 1, end, it);
  --count_;
  return true;
}

std::byte* GuestMemory::translate(uint64_t gpa, uint64_t len) const noexcept {
  const MemoryRegion* begin = regions_.data();
  const MemoryRegion* end = begin + count_;
  // The last region starting at or below gpa is the only one that can hold it.
  const MemoryRegion* it = std::upper_bound(
      begin, end, gpa, [](uint64_t a, const MemoryRegion& r) { return a < r.guest_phys_addr; });
  if (it == begin) return nullptr;
  --it;
  const auto offset = offset_inside(it->guest_phys_addr, it->size, gpa, len);
  if (!offset) return nullptr;
  return it->host + *offset;
}

std::optional<uint64_t> GuestMemory::uva_to_gpa(uint64_t uva, uint64_t len) const noexcept {
  for (const MemoryRegion& r : regions()) {
    if (const auto offset = offset_inside(r.user_addr, r.size, uva, len)) {
      return r.guest_phys_addr + *offset;
    }
  }
  return std::nullopt;
}

std::byte* GuestMemory::translate_uva(uint64_t uva, uint64_t len) const noexcept {
  for (const MemoryRegion& r : regions()) {
    if (const auto offset = offset_inside(r.user_addr, r.size, uva, len)) return r.host + *offset;
  }
  return nullptr;
}

std::optional<uint64_t> GuestMemory::host_to_gpa(const std::byte* host,
                                                 uint64_t len) const noexcept {
  const auto address = reinterpret_cast<uintptr_t>(host);
  for (const MemoryRegion& r : regions()) {
    if (const auto offset =
            offset_inside(reinterpret_cast<uintptr_t>(r.host), r.size, address, len)) {
      return r.guest_phys_addr + *offset;
    }
  }
  return std::nullopt;
}

MappedRegion::MappedRegion(MappedRegion&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      length_(std::exchange(other.length_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedRegion& MappedRegion::operator=(MappedRegion&& other) noexcept {
  if (this != &other) {
    reset();
    base_ = std::exchange(other.base_, nullptr);
    length_ = std::exchange(other.length_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedRegion::reset() noexcept {
  if (base_ != nullptr) ::munmap(base_, length_);
  base_ = nullptr;
  length_ = 0;
  data_ = nullptr;
  size_ = 0;
}

Result<MappedRegion> MappedRegion::map(const Fd& fd, uint64_t size, uint64_t offset) {
  if (!fd.valid() || size == 0) {
    return fail("invalid-region", "a memory region needs a valid fd and a non-zero size");
  }
  const long page_size = ::sysconf(_SC_PAGESIZE);
  const uint64_t page = page_size > 0 ? static_cast<uint64_t>(page_size) : 4096;
  const uint64_t aligned = offset & ~(page - 1);
  const uint64_t delta = offset - aligned;
  if (size > std::numeric_limits<std::size_t>::max() - delta ||
      aligned > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
    return fail("invalid-region",
                str("memory region of ", size, " bytes at file offset ", offset, " is too large"));
  }
  const std::size_t length = static_cast<std::size_t>(size + delta);
  void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(),
                      static_cast<off_t>(aligned));
  if (base == MAP_FAILED) return sys_fail("mmap", errno);
  MappedRegion region;
  region.base_ = base;
  region.length_ = length;
  region.data_ = static_cast<std::byte*>(base) + delta;
  region.size_ = size;
  return region;
}

}  // namespace vp::virtio
