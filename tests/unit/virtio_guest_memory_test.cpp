#include "virtio/guest_memory.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "unit_expect.hpp"

namespace vp::virtio {
namespace {

using unit::fails_with;
using unit::succeeded;

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// Two regions that are contiguous in guest-physical space but come from separate host
// allocations, as with QEMU's RAM below and above the PCI hole.
class GuestMemoryTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kLowGpa = 0x10000;
  static constexpr uint64_t kLowSize = 0x4000;
  static constexpr uint64_t kHighGpa = kLowGpa + kLowSize;
  static constexpr uint64_t kHighSize = 0x2000;
  static constexpr uint64_t kLowUva = 0x7f0000000000;
  static constexpr uint64_t kHighUva = 0x7f1000000000;

  void SetUp() override {
    ASSERT_TRUE(succeeded(memory_.add({kLowGpa, kLowSize, kLowUva, low_.data()})));
    ASSERT_TRUE(succeeded(memory_.add({kHighGpa, kHighSize, kHighUva, high_.data()})));
  }

  std::vector<std::byte> low_ = std::vector<std::byte>(kLowSize);
  std::vector<std::byte> high_ = std::vector<std::byte>(kHighSize);
  GuestMemory memory_;
};

TEST_F(GuestMemoryTest, range_inside_one_region_translates_to_its_host_bytes) {
  EXPECT_EQ(memory_.translate(kLowGpa, 16), low_.data());
  EXPECT_EQ(memory_.translate(kLowGpa + 0x100, 0x100), low_.data() + 0x100);
  EXPECT_EQ(memory_.translate(kHighGpa + 8, 8), high_.data() + 8);
}

TEST_F(GuestMemoryTest, range_ending_exactly_at_region_end_is_accepted) {
  EXPECT_EQ(memory_.translate(kLowGpa, kLowSize), low_.data());
  EXPECT_EQ(memory_.translate(kHighGpa + kHighSize - 1, 1), high_.data() + kHighSize - 1);
}

TEST_F(GuestMemoryTest, range_one_byte_past_the_last_region_is_refused) {
  EXPECT_EQ(memory_.translate(kHighGpa + kHighSize - 4, 5), nullptr);
  EXPECT_EQ(memory_.translate(kHighGpa + kHighSize, 1), nullptr);
}

TEST_F(GuestMemoryTest, range_straddling_two_contiguous_regions_is_refused) {
  // Contiguous in the guest, not on the host: one pointer cannot describe it.
  EXPECT_EQ(memory_.translate(kHighGpa - 8, 16), nullptr);
  EXPECT_EQ(memory_.translate(kLowGpa, kLowSize + 1), nullptr);
}

TEST_F(GuestMemoryTest, zero_length_needs_its_address_inside_a_region) {
  EXPECT_EQ(memory_.translate(kLowGpa + 5, 0), low_.data() + 5);
  EXPECT_EQ(memory_.translate(kHighGpa + kHighSize, 0), nullptr);
  EXPECT_EQ(memory_.translate(0, 0), nullptr);
}

TEST_F(GuestMemoryTest, address_below_and_between_regions_is_refused) {
  EXPECT_EQ(memory_.translate(kLowGpa - 1, 1), nullptr);
  EXPECT_EQ(memory_.translate(0, 1), nullptr);
  GuestMemory gapped;
  ASSERT_TRUE(succeeded(gapped.add({0x1000, 0x1000, 0, low_.data()})));
  ASSERT_TRUE(succeeded(gapped.add({0x3000, 0x1000, 0x10000, high_.data()})));
  EXPECT_EQ(gapped.translate(0x2000, 1), nullptr);
  EXPECT_EQ(gapped.translate(0x2fff, 2), nullptr);
  EXPECT_EQ(gapped.translate(0x3000, 1), high_.data());
}

TEST_F(GuestMemoryTest, address_plus_length_wrapping_2_pow_64_is_refused) {
  GuestMemory top;
  ASSERT_TRUE(succeeded(top.add({kU64Max - 0xfff, 0xfff, 0, low_.data()})));
  EXPECT_EQ(top.translate(kU64Max - 0x10, 0x20), nullptr);
  EXPECT_EQ(top.translate(kU64Max - 0x10, kU64Max), nullptr);
  EXPECT_EQ(memory_.translate(kLowGpa + 1, kU64Max), nullptr);
  EXPECT_EQ(memory_.translate(kU64Max, 1), nullptr);
}

TEST_F(GuestMemoryTest, overlapping_guest_range_is_refused) {
  std::vector<std::byte> other(0x1000);
  EXPECT_TRUE(fails_with(memory_.add({kLowGpa + 0x1000, 0x1000, 0x1000, other.data()}),
                         "overlapping-region", {"overlaps"}));
  EXPECT_TRUE(fails_with(memory_.add({kLowGpa - 0x800, 0x1000, 0x1000, other.data()}),
                         "overlapping-region"));
  EXPECT_EQ(memory_.region_count(), 2u);
}

TEST_F(GuestMemoryTest, overlapping_user_range_is_refused) {
  std::vector<std::byte> other(0x1000);
  EXPECT_TRUE(fails_with(memory_.add({0x100000, 0x1000, kLowUva + 0x10, other.data()}),
                         "overlapping-region"));
}

TEST_F(GuestMemoryTest, empty_unmapped_or_wrapping_region_is_refused) {
  std::vector<std::byte> other(0x1000);
  EXPECT_TRUE(fails_with(memory_.add({0x100000, 0, 0x1000, other.data()}), "invalid-region"));
  EXPECT_TRUE(fails_with(memory_.add({0x100000, 0x1000, 0x1000, nullptr}), "invalid-region"));
  EXPECT_TRUE(fails_with(memory_.add({kU64Max - 0x10, 0x1000, 0x1000, other.data()}),
                         "invalid-region", {"wraps"}));
  EXPECT_TRUE(
      fails_with(memory_.add({0x100000, 0x1000, kU64Max - 0x10, other.data()}), "invalid-region"));
}

TEST(GuestMemory, table_holds_at_most_kMaxRegions) {
  std::vector<std::byte> backing(0x1000);
  GuestMemory memory;
  for (uint64_t i = 0; i < GuestMemory::kMaxRegions; ++i) {
    ASSERT_TRUE(succeeded(memory.add({i * 0x1000, 0x1000, i * 0x1000, backing.data()})));
  }
  const uint64_t next = GuestMemory::kMaxRegions * 0x1000;
  EXPECT_TRUE(fails_with(memory.add({next, 0x1000, next, backing.data()}), "too-many-regions"));
  EXPECT_EQ(memory.region_count(), GuestMemory::kMaxRegions);
  EXPECT_EQ(memory.translate((GuestMemory::kMaxRegions - 1) * 0x1000 + 4, 4), backing.data() + 4);
}

TEST(GuestMemory, regions_added_out_of_order_are_kept_sorted_and_found) {
  std::vector<std::byte> a(0x1000), b(0x1000), c(0x1000);
  GuestMemory memory;
  ASSERT_TRUE(succeeded(memory.add({0x30000, 0x1000, 0x3000, c.data()})));
  ASSERT_TRUE(succeeded(memory.add({0x10000, 0x1000, 0x1000, a.data()})));
  ASSERT_TRUE(succeeded(memory.add({0x20000, 0x1000, 0x2000, b.data()})));
  const auto regions = memory.regions();
  ASSERT_EQ(regions.size(), 3u);
  EXPECT_EQ(regions[0].guest_phys_addr, 0x10000u);
  EXPECT_EQ(regions[1].guest_phys_addr, 0x20000u);
  EXPECT_EQ(regions[2].guest_phys_addr, 0x30000u);
  EXPECT_EQ(memory.translate(0x10010, 1), a.data() + 0x10);
  EXPECT_EQ(memory.translate(0x20010, 1), b.data() + 0x10);
  EXPECT_EQ(memory.translate(0x30010, 1), c.data() + 0x10);
}

TEST_F(GuestMemoryTest, removed_region_no_longer_translates) {
  EXPECT_FALSE(memory_.remove(kLowGpa, kLowSize + 1));
  EXPECT_TRUE(memory_.remove(kLowGpa, kLowSize));
  EXPECT_EQ(memory_.region_count(), 1u);
  EXPECT_EQ(memory_.translate(kLowGpa, 1), nullptr);
  EXPECT_EQ(memory_.translate(kHighGpa, 1), high_.data());
  memory_.clear();
  EXPECT_TRUE(memory_.empty());
  EXPECT_EQ(memory_.translate(kHighGpa, 1), nullptr);
}

TEST_F(GuestMemoryTest, user_address_maps_to_guest_physical_and_host) {
  EXPECT_EQ(memory_.uva_to_gpa(kLowUva + 0x20, 0x10), kLowGpa + 0x20);
  EXPECT_EQ(memory_.uva_to_gpa(kHighUva, kHighSize), kHighGpa);
  EXPECT_EQ(memory_.translate_uva(kHighUva + 4, 4), high_.data() + 4);
}

TEST_F(GuestMemoryTest, user_range_outside_or_past_a_region_is_refused) {
  EXPECT_EQ(memory_.uva_to_gpa(kLowUva + kLowSize - 4, 8), std::nullopt);
  EXPECT_EQ(memory_.uva_to_gpa(kLowUva - 1, 1), std::nullopt);
  EXPECT_EQ(memory_.uva_to_gpa(kLowUva + 1, kU64Max), std::nullopt);
  EXPECT_EQ(memory_.translate_uva(kHighUva + kHighSize, 0), nullptr);
}

// A memfd stands in for the frontend's guest RAM fd.
class MappedRegionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_.reset(::memfd_create("vpd-guest-ram", MFD_CLOEXEC));
    ASSERT_TRUE(fd_.valid());
    ASSERT_EQ(::ftruncate(fd_.get(), 3 * page_), 0);
  }
  const long page_ = ::sysconf(_SC_PAGESIZE);
  Fd fd_;
};

TEST_F(MappedRegionTest, unaligned_offset_maps_the_bytes_at_that_offset) {
  const char text[] = "guest bytes";
  const off_t offset = page_ + 10;
  ASSERT_EQ(::pwrite(fd_.get(), text, sizeof text, offset), static_cast<ssize_t>(sizeof text));
  auto region = MappedRegion::map(fd_, 100, static_cast<uint64_t>(offset));
  ASSERT_TRUE(succeeded(region));
  EXPECT_EQ(region->size(), 100u);
  EXPECT_EQ(std::memcmp(region->data(), text, sizeof text), 0);

  // Shared: writes through the mapping reach the file.
  std::memcpy(region->data() + 20, "vpd", 3);
  char back[3] = {};
  ASSERT_EQ(::pread(fd_.get(), back, 3, offset + 20), 3);
  EXPECT_EQ(std::memcmp(back, "vpd", 3), 0);
}

TEST_F(MappedRegionTest, moved_mapping_stays_valid_and_source_is_empty) {
  auto region = MappedRegion::map(fd_, static_cast<uint64_t>(page_), 0);
  ASSERT_TRUE(succeeded(region));
  std::byte* data = region->data();
  MappedRegion moved = std::move(*region);
  EXPECT_FALSE(region->valid());
  EXPECT_EQ(moved.data(), data);
  data[0] = std::byte{42};
  MappedRegion assigned;
  assigned = std::move(moved);
  EXPECT_EQ(assigned.data()[0], std::byte{42});
  assigned.reset();
  EXPECT_FALSE(assigned.valid());
}

TEST_F(MappedRegionTest, mapped_region_serves_as_guest_memory) {
  auto region = MappedRegion::map(fd_, 2 * static_cast<uint64_t>(page_), 0);
  ASSERT_TRUE(succeeded(region));
  GuestMemory memory;
  ASSERT_TRUE(succeeded(memory.add({0x80000000, region->size(), 0x7f0000000000, region->data()})));
  std::byte* p = memory.translate(0x80000000 + 8, 8);
  ASSERT_EQ(p, region->data() + 8);
  p[0] = std::byte{7};
  char c = 0;
  ASSERT_EQ(::pread(fd_.get(), &c, 1, 8), 1);
  EXPECT_EQ(c, 7);
}

TEST_F(MappedRegionTest, bad_fd_or_zero_size_is_refused) {
  EXPECT_TRUE(fails_with(MappedRegion::map(Fd(), 4096, 0), "invalid-region"));
  EXPECT_TRUE(fails_with(MappedRegion::map(fd_, 0, 0), "invalid-region"));
  EXPECT_TRUE(fails_with(MappedRegion::map(fd_, kU64Max, 4095), "invalid-region"));
}

TEST(MappedRegion, unmappable_fd_fails_naming_mmap) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  Fd read_end(pipe_fds[0]);
  Fd write_end(pipe_fds[1]);
  EXPECT_TRUE(fails_with(MappedRegion::map(read_end, 4096, 0), "system", {"mmap"}));
}

}  // namespace
}  // namespace vp::virtio
