#include "virtio/dirty_log.hpp"

#include <gtest/gtest.h>
#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "virtio/guest_memory.hpp"
#include "virtio/split_queue.hpp"

namespace vp::virtio {
namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// A log of 4 bytes: 32 pages, guest-physical [0, 128 KiB).
class DirtyLogTest : public ::testing::Test {
 protected:
  std::vector<uint64_t> marked() const {
    std::vector<uint64_t> pages;
    for (uint64_t p = 0; p < 8 * bits_.size(); ++p) {
      if ((std::to_integer<unsigned>(bits_[p / 8]) >> (p % 8) & 1) != 0) pages.push_back(p);
    }
    return pages;
  }

  // One guard byte past the log, which marking must never touch.
  std::array<std::byte, 5> bits_{};
  DirtyLog log_{bits_.data(), 4};
};

TEST_F(DirtyLogTest, one_byte_sets_the_bit_of_its_page_in_byte_page_over_8) {
  EXPECT_EQ(log_.pages(), 32u);
  const LogMark m = log_.mark(0x5123, 1);  // page 5: byte 0, bit 5
  EXPECT_EQ(m.marked, 1u);
  EXPECT_EQ(m.beyond, 0u);
  EXPECT_EQ(bits_[0], std::byte{0x20});
  log_.mark(9 * kLogPageSize, 1);  // page 9: byte 1, bit 1
  EXPECT_EQ(bits_[1], std::byte{0x02});
  EXPECT_TRUE(log_.is_marked(5));
  EXPECT_TRUE(log_.is_marked(9));
  EXPECT_FALSE(log_.is_marked(6));
  EXPECT_EQ(marked(), (std::vector<uint64_t>{5, 9}));
}

TEST_F(DirtyLogTest, marking_keeps_the_bits_already_set) {
  bits_[0] = std::byte{0x81};
  log_.mark(3 * kLogPageSize + 100, 8);
  EXPECT_EQ(bits_[0], std::byte{0x89});
}

TEST_F(DirtyLogTest, a_range_marks_every_page_it_touches_and_no_other) {
  // From the last byte of page 6 to the first byte of page 9: pages 6, 7, 8, 9.
  const LogMark m = log_.mark(7 * kLogPageSize - 1, 2 * kLogPageSize + 2);
  EXPECT_EQ(m.marked, 4u);
  EXPECT_EQ(marked(), (std::vector<uint64_t>{6, 7, 8, 9}));
}

TEST_F(DirtyLogTest, a_range_ending_on_a_page_boundary_does_not_mark_the_next_page) {
  log_.mark(2 * kLogPageSize, kLogPageSize);
  EXPECT_EQ(marked(), (std::vector<uint64_t>{2}));
}

TEST_F(DirtyLogTest, zero_length_marks_nothing) {
  const LogMark m = log_.mark(0x3000, 0);
  EXPECT_EQ(m.marked, 0u);
  EXPECT_TRUE(marked().empty());
}

TEST_F(DirtyLogTest, pages_past_the_log_are_counted_not_written) {
  // Pages 30..33: 30 and 31 are in the log, 32 and 33 past it.
  const LogMark m = log_.mark(30 * kLogPageSize, 4 * kLogPageSize);
  EXPECT_EQ(m.marked, 2u);
  EXPECT_EQ(m.beyond, 2u);
  EXPECT_EQ(marked(), (std::vector<uint64_t>{30, 31}));
  EXPECT_EQ(bits_[4], std::byte{0});  // the guard byte
  const LogMark far = log_.mark(1ull << 40, 10);
  EXPECT_EQ(far.marked, 0u);
  EXPECT_EQ(far.beyond, 1u);
  EXPECT_FALSE(log_.is_marked(32));
}

TEST_F(DirtyLogTest, a_range_running_past_2_to_the_64_ends_there) {
  const LogMark m = log_.mark(kU64Max - 10, 100);
  EXPECT_EQ(m.marked, 0u);
  EXPECT_EQ(m.beyond, 1u);
  EXPECT_TRUE(marked().empty());
}

TEST(DirtyLog, an_empty_log_marks_nothing) {
  const DirtyLog log;
  EXPECT_FALSE(log.valid());
  EXPECT_EQ(log.mark(0, 4096).marked, 0u);
}

TEST(DirtyLog, bytes_for_covers_the_last_page_of_the_range) {
  EXPECT_EQ(DirtyLog::bytes_for(0), 0u);
  EXPECT_EQ(DirtyLog::bytes_for(1), 1u);
  EXPECT_EQ(DirtyLog::bytes_for(8 * kLogPageSize), 1u);
  EXPECT_EQ(DirtyLog::bytes_for(8 * kLogPageSize + 1), 2u);
  // 16 MiB at 1 GiB: 266240 pages (the last at 0x40fff000), 33280 bytes.
  EXPECT_EQ(DirtyLog::bytes_for(0x40000000 + (16 << 20)), 33280u);
}

TEST(GuestMemoryHostToGpa, a_host_range_maps_back_to_its_guest_address) {
  alignas(64) static std::byte low[0x4000];
  alignas(64) static std::byte high[0x2000];
  GuestMemory memory;
  ASSERT_TRUE(memory.add({0x10000, sizeof low, 0x7000000, low}));
  ASSERT_TRUE(memory.add({0x100000000, sizeof high, 0x8000000, high}));
  EXPECT_EQ(memory.host_to_gpa(low + 0x123, 16), 0x10123u);
  EXPECT_EQ(memory.host_to_gpa(high + 0x1ff0, 0x10), 0x100001ff0u);
  EXPECT_FALSE(memory.host_to_gpa(high + 0x1ff0, 0x11));  // past the region's end
  std::byte elsewhere[16];
  EXPECT_FALSE(memory.host_to_gpa(elsewhere, 16));
}

// A split queue logs its used ring at log_guest_addr and the buffers it is told it wrote,
// by their guest addresses; with no log set it writes no bit.
TEST(SplitQueueLog, used_entries_and_written_buffers_are_marked_by_guest_address) {
  constexpr uint64_t kGpa = 0x100000;
  constexpr uint64_t kSize = 0x10000;  // 16 pages: 0x100..0x10f
  alignas(4096) static std::byte ram[kSize];
  GuestMemory memory;
  ASSERT_TRUE(memory.add({kGpa, kSize, 0x5000000, ram}));
  // Split ring of 4 at page 0x100 (descriptors), 0x101 (avail), 0x102 (used); buffer at 0x108.
  const QueueConfig config{4, kGpa, kGpa + 0x1000, kGpa + 0x2000, 0};
  auto put16 = [&](uint64_t gpa, uint16_t v) { std::memcpy(ram + (gpa - kGpa), &v, 2); };
  auto put32 = [&](uint64_t gpa, uint32_t v) { std::memcpy(ram + (gpa - kGpa), &v, 4); };
  auto put64 = [&](uint64_t gpa, uint64_t v) { std::memcpy(ram + (gpa - kGpa), &v, 8); };
  // Descriptor 0: 0x1800 bytes at 0x108800, device-writable: spans pages 0x108 and 0x109.
  put64(kGpa, kGpa + 0x8800);
  put32(kGpa + 8, 0x1800);
  put16(kGpa + 12, kDescFWrite);
  put16(kGpa + 0x1000 + 4, 0);  // avail ring[0] = head 0
  put16(kGpa + 0x1000 + 2, 1);  // avail idx = 1

  // The log covers 0x200 pages; its size goes past guest memory on purpose.
  std::array<std::byte, 0x40> bits{};
  const DirtyLog log(bits.data(), bits.size());
  auto pages = [&] {
    std::vector<uint64_t> out;
    for (uint64_t p = 0; p < log.pages(); ++p) {
      if (log.is_marked(p)) out.push_back(p);
    }
    return out;
  };

  for (const bool logging : {false, true}) {
    bits.fill(std::byte{0});
    SplitQueue q;
    ASSERT_TRUE(q.configure(memory, config));
    // log_guest_addr deliberately elsewhere than the used ring (page 0x1f0): the log follows
    // it, as the spec says.
    if (logging) q.set_log(RingLog{&log, true, 0x1f0000});
    EXPECT_EQ(q.logging(), logging);
    std::array<iovec, 4> iov{};
    auto chain = q.pop(iov);
    ASSERT_TRUE(chain);
    q.log_written(chain->writable, 0x1000);  // wrote 0x1000 bytes from 0x108800
    ASSERT_TRUE(q.push_used(chain->head, 0x1000));
    q.publish_used();
    if (!logging) {
      EXPECT_TRUE(pages().empty());
      EXPECT_EQ(q.counters().dirty_pages_logged, 0u);
      continue;
    }
    // The buffer's two pages and the used ring's page at log_guest_addr; not the ring's own.
    EXPECT_EQ(pages(), (std::vector<uint64_t>{0x108, 0x109, 0x1f0}));
    EXPECT_EQ(q.counters().dirty_pages_logged, 4u);  // 2 (buffer) + elem + idx
    // reset() forgets the log.
    q.reset();
    EXPECT_FALSE(q.logging());
  }
}

}  // namespace
}  // namespace vp::virtio
