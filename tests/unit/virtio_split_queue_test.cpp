#include "virtio/split_queue.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "unit_expect.hpp"

// Rings are built the way a guest driver would, in ordinary memory registered as guest RAM
// at made-up guest-physical addresses; every hostile case asserts the counter delta, what the
// used ring says, and that no chain reached the caller.

namespace vp::virtio {
namespace {

using unit::fails_with;
using unit::succeeded;

constexpr uint64_t kRamGpa = 0x40000000;
constexpr uint64_t kRamSize = 2 << 20;
// A second region right after the first in guest-physical space, separately allocated.
constexpr uint64_t kNextGpa = kRamGpa + kRamSize;
constexpr uint64_t kNextSize = 0x10000;
// A large region reserved PROT_NONE: only ever translated, never touched. It lets a chain's
// lengths add up past 4 GiB without backing memory.
constexpr uint64_t kBigGpa = 0x100000000;
constexpr uint64_t kBigSize = 0x80000000;

constexpr uint64_t kDescGpa = kRamGpa;
constexpr uint64_t kAvailGpa = kRamGpa + 0x80000;
constexpr uint64_t kUsedGpa = kRamGpa + 0xa0000;
constexpr uint64_t kTableGpa = kRamGpa + 0x100000;  // indirect tables
constexpr uint64_t kDataGpa = kRamGpa + 0x180000;   // packet buffers

// Page-aligned, zeroed, and seen by the compiler as one object of `bytes` bytes.
struct AlignedDelete {
  void operator()(std::byte* p) const { ::operator delete (p, std::align_val_t{4096}); }
};
using Buffer = std::unique_ptr<std::byte, AlignedDelete>;
Buffer allocate(std::size_t bytes) {
  auto* p = static_cast<std::byte*>(::operator new (bytes, std::align_val_t{4096}));
  std::memset(p, 0, bytes);
  return Buffer(p);
}

class GuestRam {
 public:
  GuestRam() : ram_(allocate(kRamSize)), next_(allocate(kNextSize)) {
    void* big =
        ::mmap(nullptr, kBigSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (big != MAP_FAILED) big_ = big;
    EXPECT_TRUE(succeeded(memory.add({kRamGpa, kRamSize, 0x7f0000000000, ram_.get()})));
    EXPECT_TRUE(succeeded(memory.add({kNextGpa, kNextSize, 0x7f1000000000, next_.get()})));
    if (big_ != nullptr) {
      EXPECT_TRUE(succeeded(
          memory.add({kBigGpa, kBigSize, 0x7f2000000000, static_cast<std::byte*>(big_)})));
    }
  }
  ~GuestRam() {
    if (big_ != nullptr) ::munmap(big_, kBigSize);
  }
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;

  std::byte* host(uint64_t gpa) { return ram_.get() + (gpa - kRamGpa); }
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
  bool has_big_region() const { return big_ != nullptr; }

  GuestMemory memory;

 private:
  Buffer ram_;
  Buffer next_;
  void* big_ = nullptr;
};

struct Used {
  uint32_t id;
  uint32_t len;
  bool operator==(const Used&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Used& u) {
  return os << "{id " << u.id << ", len " << u.len << "}";
}

// The driver's side of a split ring (virtio 1.2 §2.7.13), little-endian host assumed.
class SplitDriver {
 public:
  SplitDriver(GuestRam& ram, uint16_t size) : ram_(ram), size_(size) {}

  QueueConfig config(uint64_t features = kFeatureIndirectDesc) const {
    return QueueConfig{size_, kDescGpa, kAvailGpa, kUsedGpa, features};
  }

  void desc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags = 0, uint16_t next = 0) {
    table_desc(kDescGpa, index, addr, len, flags, next);
  }
  void table_desc(uint64_t table, uint32_t index, uint64_t addr, uint32_t len, uint16_t flags = 0,
                  uint16_t next = 0) {
    const uint64_t at = table + 16 * uint64_t{index};
    ram_.put<uint64_t>(at, addr);
    ram_.put<uint32_t>(at + 8, len);
    ram_.put<uint16_t>(at + 12, flags);
    ram_.put<uint16_t>(at + 14, next);
  }

  // Puts a head in the next avail slot and publishes it.
  void offer(uint16_t head) {
    ram_.put<uint16_t>(kAvailGpa + 4 + 2 * uint64_t(avail_idx_ % size_), head);
    set_avail_idx(static_cast<uint16_t>(avail_idx_ + 1));
  }
  void set_avail_idx(uint16_t idx) {
    avail_idx_ = idx;
    ram_.put<uint16_t>(kAvailGpa + 2, idx);
  }
  void set_avail_flags(uint16_t flags) { ram_.put<uint16_t>(kAvailGpa, flags); }
  void set_used_event(uint16_t idx) {
    ram_.put<uint16_t>(kAvailGpa + 4 + 2 * uint64_t{size_}, idx);
  }

  uint16_t used_idx() { return ram_.get<uint16_t>(kUsedGpa + 2); }
  void set_used_idx(uint16_t idx) { ram_.put<uint16_t>(kUsedGpa + 2, idx); }
  uint16_t used_flags() { return ram_.get<uint16_t>(kUsedGpa); }
  uint16_t avail_event() { return ram_.get<uint16_t>(kUsedGpa + 4 + 8 * uint64_t{size_}); }
  Used used(uint16_t idx) {
    const uint64_t at = kUsedGpa + 4 + 8 * uint64_t(idx % size_);
    return Used{ram_.get<uint32_t>(at), ram_.get<uint32_t>(at + 4)};
  }

 private:
  GuestRam& ram_;
  uint16_t size_;
  uint16_t avail_idx_ = 0;
};

uint64_t data(uint64_t n) { return kDataGpa + n * 0x1000; }

class SplitQueueTest : public ::testing::Test {
 protected:
  static constexpr uint16_t kSize = 8;

  void SetUp() override { ASSERT_TRUE(succeeded(queue_.configure(ram_.memory, driver_.config()))); }

  // Publishes and returns what the used ring then says, starting at used index `from`.
  std::vector<Used> published_used(uint16_t from = 0) {
    queue_.publish_used();
    std::vector<Used> out;
    for (uint16_t i = from; i != driver_.used_idx(); ++i) out.push_back(driver_.used(i));
    return out;
  }

  GuestRam ram_;
  SplitDriver driver_{ram_, kSize};
  SplitQueue queue_;
  std::array<iovec, 16> iov_{};
};

// ---- configure ---------------------------------------------------------------------------

TEST_F(SplitQueueTest, configure_accepts_aligned_rings_inside_memory) {
  EXPECT_TRUE(queue_.ready());
  EXPECT_FALSE(queue_.broken());
  EXPECT_EQ(queue_.size(), kSize);
}

TEST_F(SplitQueueTest, queue_size_not_a_power_of_two_is_refused) {
  SplitQueue q;
  QueueConfig c = driver_.config();
  c.size = 6;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "invalid-queue-size", {"power of 2"}));
  EXPECT_FALSE(q.ready());
  EXPECT_FALSE(q.pop(iov_));
}

TEST_F(SplitQueueTest, queue_size_zero_is_refused) {
  SplitQueue q;
  QueueConfig c = driver_.config();
  c.size = 0;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "invalid-queue-size"));
}

TEST_F(SplitQueueTest, queue_size_past_32768_is_refused_and_32768_accepted) {
  SplitQueue q;
  QueueConfig c = driver_.config();
  c.size = 65536;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "invalid-queue-size"));
  c.size = 32768;
  c.device_addr = kRamGpa + 0x100000;  // 6 + 8 * 32768 bytes need more room
  EXPECT_TRUE(succeeded(q.configure(ram_.memory, c)));
  EXPECT_EQ(q.size(), 32768);
}

TEST_F(SplitQueueTest, rings_outside_guest_memory_are_refused) {
  SplitQueue q;
  QueueConfig c = driver_.config();
  c.desc_addr = 0x1000;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-outside-memory", {"descriptor"}));
  c = driver_.config();
  c.device_addr = kNextGpa + kNextSize - 16;  // starts inside, runs past the end
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-outside-memory", {"used ring"}));
  c = driver_.config();
  c.driver_addr = kNextGpa - 8;  // straddles the two regions
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-outside-memory", {"available"}));
  EXPECT_FALSE(q.ready());
}

TEST_F(SplitQueueTest, misaligned_rings_are_refused) {
  SplitQueue q;
  QueueConfig c = driver_.config();
  c.desc_addr += 8;  // needs 16
  EXPECT_TRUE(
      fails_with(q.configure(ram_.memory, c), "ring-misaligned", {"guest address", "16-byte"}));
  c = driver_.config();
  c.driver_addr += 1;  // needs 2
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-misaligned", {"available"}));
  c = driver_.config();
  c.device_addr += 2;  // needs 4
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-misaligned", {"used"}));
}

TEST_F(SplitQueueTest, ring_aligned_in_the_guest_but_not_on_the_host_is_refused) {
  // A region mapped at a host address that breaks the guest's alignment (an odd mmap offset):
  // ring fields are accessed atomically, so the host pointer must be aligned too.
  GuestMemory shifted;
  ASSERT_TRUE(
      succeeded(shifted.add({kRamGpa, kRamSize - 8, 0x7f0000000000, ram_.host(kRamGpa) + 8})));
  SplitQueue q;
  EXPECT_TRUE(fails_with(q.configure(shifted, driver_.config()), "ring-misaligned", {"host"}));
}

TEST_F(SplitQueueTest, overlapping_rings_are_refused) {
  SplitQueue q;
  QueueConfig c = driver_.config();
  c.driver_addr = kDescGpa + 16 * kSize - 4;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-overlap"));
}

TEST_F(SplitQueueTest, configure_reads_the_used_index_and_keeps_last_avail) {
  SplitQueue q;
  q.set_last_avail(300);
  driver_.set_used_idx(298);
  ASSERT_TRUE(succeeded(q.configure(ram_.memory, driver_.config())));
  EXPECT_EQ(q.last_avail(), 300);
  EXPECT_EQ(q.used_idx(), 298);
  EXPECT_EQ(q.vring_base(), 300u);
  EXPECT_TRUE(q.set_vring_base(0xabcd0005));  // reserved upper half ignored
  EXPECT_EQ(q.last_avail(), 5);
}

// ---- well-formed chains ------------------------------------------------------------------

TEST_F(SplitQueueTest, empty_ring_pops_nothing) {
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_EQ(queue_.counters().chains_popped, 0u);
}

TEST_F(SplitQueueTest, single_readable_descriptor) {
  driver_.desc(3, data(0), 1500);
  driver_.offer(3);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, (ChainHead{3, 1}));
  ASSERT_EQ(chain->readable.size(), 1u);
  EXPECT_EQ(chain->readable[0].iov_base, ram_.host(data(0)));
  EXPECT_EQ(chain->readable[0].iov_len, 1500u);
  EXPECT_TRUE(chain->writable.empty());
  EXPECT_EQ(chain->readable_bytes, 1500u);
  EXPECT_EQ(chain->writable_bytes, 0u);
  EXPECT_EQ(queue_.counters().chains_popped, 1u);
  EXPECT_FALSE(queue_.pop(iov_));
}

TEST_F(SplitQueueTest, readable_then_writable_chain_splits_into_two_lists) {
  driver_.desc(0, data(0), 12, kDescFNext, 5);
  driver_.desc(5, data(1), 100, kDescFNext, 2);
  driver_.desc(2, data(2), 2048, kDescFNext | kDescFWrite, 7);
  driver_.desc(7, data(3), 64, kDescFWrite);
  driver_.offer(0);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  ASSERT_EQ(chain->readable.size(), 2u);
  ASSERT_EQ(chain->writable.size(), 2u);
  EXPECT_EQ(chain->readable[1].iov_base, ram_.host(data(1)));
  EXPECT_EQ(chain->writable[0].iov_base, ram_.host(data(2)));
  EXPECT_EQ(chain->writable[1].iov_len, 64u);
  EXPECT_EQ(chain->readable_bytes, 112u);
  EXPECT_EQ(chain->writable_bytes, 2112u);
}

TEST_F(SplitQueueTest, zero_length_element_is_checked_but_not_listed) {
  driver_.desc(0, data(0), 0, kDescFNext, 1);
  driver_.desc(1, data(1), 10, kDescFWrite);
  driver_.offer(0);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_TRUE(chain->readable.empty());
  ASSERT_EQ(chain->writable.size(), 1u);
  EXPECT_EQ(chain->writable_bytes, 10u);
}

TEST_F(SplitQueueTest, chain_using_every_descriptor_is_accepted) {
  for (uint16_t i = 0; i < kSize; ++i) {
    driver_.desc(i, data(i), 10, i + 1 < kSize ? kDescFNext : 0, static_cast<uint16_t>(i + 1));
  }
  driver_.offer(0);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->readable.size(), kSize);
  EXPECT_EQ(chain->readable_bytes, 10u * kSize);
}

TEST_F(SplitQueueTest, indirect_table_supplies_the_elements) {
  driver_.table_desc(kTableGpa, 0, data(0), 12, kDescFNext, 2);
  driver_.table_desc(kTableGpa, 2, data(1), 1000, kDescFNext, 1);
  driver_.table_desc(kTableGpa, 1, data(2), 1500, kDescFWrite);
  driver_.desc(4, kTableGpa, 3 * 16, kDescFIndirect | kDescFWrite);  // WRITE here is ignored
  driver_.offer(4);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head.id, 4);
  ASSERT_EQ(chain->readable.size(), 2u);
  ASSERT_EQ(chain->writable.size(), 1u);
  EXPECT_EQ(chain->readable[1].iov_base, ram_.host(data(1)));
  EXPECT_EQ(chain->writable[0].iov_base, ram_.host(data(2)));
  EXPECT_EQ(chain->readable_bytes, 1012u);
  EXPECT_EQ(chain->writable_bytes, 1500u);
}

TEST_F(SplitQueueTest, direct_descriptors_followed_by_an_indirect_one) {
  // SPEC: virtio 1.2 §2.7.5.3.2: the device must handle this layout.
  driver_.table_desc(kTableGpa, 0, data(1), 200, kDescFWrite);
  driver_.desc(0, data(0), 12, kDescFNext, 1);
  driver_.desc(1, kTableGpa, 16, kDescFIndirect);
  driver_.offer(0);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->readable_bytes, 12u);
  EXPECT_EQ(chain->writable_bytes, 200u);
}

TEST_F(SplitQueueTest, misaligned_indirect_table_is_read_correctly) {
  const uint64_t table = kTableGpa + 4;  // the spec promises no alignment for tables
  driver_.table_desc(table, 0, data(0), 77, kDescFNext, 1);
  driver_.table_desc(table, 1, data(1), 88, kDescFWrite);
  driver_.desc(0, table, 32, kDescFIndirect);
  driver_.offer(0);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->readable[0].iov_base, ram_.host(data(0)));
  EXPECT_EQ(chain->readable_bytes, 77u);
  EXPECT_EQ(chain->writable_bytes, 88u);
}

TEST_F(SplitQueueTest, used_entry_is_visible_only_after_publish) {
  driver_.desc(6, data(0), 100, kDescFWrite);
  driver_.offer(6);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  ASSERT_TRUE(queue_.push_used(chain->head, 42));
  EXPECT_EQ(driver_.used_idx(), 0);
  EXPECT_EQ(published_used(), (std::vector<Used>{{6, 42}}));
  EXPECT_EQ(driver_.used_idx(), 1);
  EXPECT_EQ(queue_.counters().used_returned, 1u);
}

TEST_F(SplitQueueTest, batch_completed_out_of_order_is_published_at_once) {
  for (uint16_t i = 0; i < 3; ++i) {
    driver_.desc(i, data(i), 100, kDescFWrite);
    driver_.offer(i);
  }
  std::vector<ChainHead> heads;
  while (auto chain = queue_.pop(iov_)) heads.push_back(chain->head);
  ASSERT_EQ(heads.size(), 3u);
  ASSERT_TRUE(queue_.push_used(heads[2], 3));
  ASSERT_TRUE(queue_.push_used(heads[0], 1));
  ASSERT_TRUE(queue_.push_used(heads[1], 2));
  EXPECT_EQ(driver_.used_idx(), 0);
  EXPECT_EQ(published_used(), (std::vector<Used>{{2, 3}, {0, 1}, {1, 2}}));
}

TEST_F(SplitQueueTest, sixteen_bit_indices_wrap_around) {
  SplitQueue q;
  q.set_last_avail(65534);
  driver_.set_avail_idx(65534);
  driver_.set_used_idx(65534);
  ASSERT_TRUE(succeeded(q.configure(ram_.memory, driver_.config())));
  for (uint16_t i = 0; i < 4; ++i) {
    driver_.desc(i, data(i), 10, kDescFWrite);
    driver_.offer(i);
  }
  for (uint16_t i = 0; i < 4; ++i) {
    auto chain = q.pop(iov_);
    ASSERT_TRUE(chain);
    EXPECT_EQ(chain->head.id, i);
    ASSERT_TRUE(q.push_used(chain->head, i));
  }
  EXPECT_FALSE(q.pop(iov_));
  q.publish_used();
  EXPECT_EQ(q.last_avail(), 2);
  EXPECT_EQ(driver_.used_idx(), 2);
  EXPECT_EQ(driver_.used(65535), (Used{1, 1}));
  EXPECT_EQ(driver_.used(0), (Used{2, 2}));
}

TEST_F(SplitQueueTest, many_rounds_keep_rings_in_step) {
  uint16_t expected_used = 0;
  for (uint32_t round = 0; round < 20000; ++round) {
    const uint16_t n = static_cast<uint16_t>(1 + round % kSize);
    for (uint16_t i = 0; i < n; ++i) {
      driver_.desc(i, data(i), round % 1000 + 1, kDescFWrite);
      driver_.offer(i);
    }
    for (uint16_t i = 0; i < n; ++i) {
      auto chain = queue_.pop(iov_);
      ASSERT_TRUE(chain) << "round " << round;
      ASSERT_EQ(chain->head.id, i);
      ASSERT_TRUE(queue_.push_used(chain->head, chain->writable_bytes));
    }
    ASSERT_FALSE(queue_.pop(iov_));
    queue_.publish_used();
    expected_used = static_cast<uint16_t>(expected_used + n);
    ASSERT_EQ(driver_.used_idx(), expected_used);
    ASSERT_EQ(driver_.used(static_cast<uint16_t>(expected_used - 1)),
              (Used{n - 1u, round % 1000 + 1}));
  }
  EXPECT_EQ(queue_.counters().malformed_chains, 0u);
  EXPECT_FALSE(queue_.broken());
}

TEST_F(SplitQueueTest, unpop_gives_the_same_chain_again) {
  driver_.desc(1, data(0), 64, kDescFWrite);
  driver_.offer(1);
  auto first = queue_.pop(iov_);
  ASSERT_TRUE(first);
  EXPECT_TRUE(queue_.unpop());
  EXPECT_FALSE(queue_.unpop());
  EXPECT_EQ(queue_.last_avail(), 0);
  auto again = queue_.pop(iov_);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->head.id, 1);
  ASSERT_TRUE(queue_.push_used(again->head, 0));
  EXPECT_FALSE(queue_.unpop());
}

TEST_F(SplitQueueTest, push_used_without_a_chain_in_flight_is_refused) {
  EXPECT_FALSE(queue_.push_used(ChainHead{0, 1}, 0));
  driver_.desc(0, data(0), 64);
  driver_.offer(0);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_FALSE(queue_.push_used(ChainHead{kSize, 1}, 0));  // past the table
  EXPECT_EQ(queue_.counters().used_rejected, 2u);
  EXPECT_TRUE(published_used().empty());
}

// ---- hostile chains: returned with length 0, counted, never handed out -------------------

class SplitQueueHostileTest : public SplitQueueTest {
 protected:
  // Pops once and expects nothing handed out, `head` back on the used ring with length 0,
  // and exactly the given counter moved by one (plus malformed_chains when it is a fault).
  void expect_refused(uint16_t head, uint64_t QueueCounters::*counter, bool malformed = true) {
    const QueueCounters before = queue_.counters();
    const uint16_t used_before = driver_.used_idx();
    EXPECT_FALSE(queue_.pop(iov_));
    const QueueCounters& after = queue_.counters();
    EXPECT_EQ(after.*counter - before.*counter, 1u);
    EXPECT_EQ(after.malformed_chains - before.malformed_chains, malformed ? 1u : 0u);
    EXPECT_EQ(after.chains_popped, before.chains_popped);
    EXPECT_EQ(published_used(used_before), (std::vector<Used>{{head, 0}}));
    EXPECT_FALSE(queue_.broken());
  }
};

TEST_F(SplitQueueHostileTest, next_index_past_the_queue) {
  driver_.desc(0, data(0), 10, kDescFNext, kSize);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::desc_index_out_of_range);
}

TEST_F(SplitQueueHostileTest, loop_in_next_chain) {
  driver_.desc(2, data(0), 10, kDescFNext, 3);
  driver_.desc(3, data(1), 10, kDescFNext, 2);
  driver_.offer(2);
  expect_refused(2, &QueueCounters::desc_chain_too_long);
}

TEST_F(SplitQueueHostileTest, self_referencing_descriptor) {
  driver_.desc(5, data(0), 10, kDescFNext, 5);
  driver_.offer(5);
  expect_refused(5, &QueueCounters::desc_chain_too_long);
}

TEST_F(SplitQueueHostileTest, chain_longer_than_the_queue) {
  // Every descriptor once, then back to the first: one hop more than the table holds.
  for (uint16_t i = 0; i < kSize; ++i) {
    driver_.desc(i, data(i), 10, kDescFNext, static_cast<uint16_t>((i + 1) % kSize));
  }
  driver_.offer(0);
  expect_refused(0, &QueueCounters::desc_chain_too_long);
}

TEST_F(SplitQueueHostileTest, address_past_guest_memory) {
  driver_.desc(1, kNextGpa + kNextSize, 10);
  driver_.offer(1);
  expect_refused(1, &QueueCounters::desc_outside_memory);
}

TEST_F(SplitQueueHostileTest, element_running_past_the_end_of_memory) {
  driver_.desc(0, data(0), 10, kDescFNext, 1);
  driver_.desc(1, kNextGpa + kNextSize - 8, 16, kDescFWrite);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::desc_outside_memory);
}

TEST_F(SplitQueueHostileTest, address_straddling_two_regions) {
  driver_.desc(0, kNextGpa - 100, 200);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::desc_outside_memory);
}

TEST_F(SplitQueueHostileTest, address_plus_length_wraps) {
  driver_.desc(0, 0xfffffffffffff000, 0x2000);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::desc_outside_memory);
}

TEST_F(SplitQueueHostileTest, total_length_past_32_bits) {
  if (!ram_.has_big_region()) GTEST_SKIP() << "could not reserve 2 GiB of address space";
  // Two elements of 2 GiB each (the same range twice) add up to 2^32.
  driver_.desc(0, kBigGpa, 0x80000000, kDescFNext, 1);
  driver_.desc(1, kBigGpa, 0x80000000, kDescFWrite);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::chain_length_overflow);
}

TEST_F(SplitQueueHostileTest, writable_then_readable) {
  driver_.desc(0, data(0), 10, kDescFWrite | kDescFNext, 1);
  driver_.desc(1, data(1), 10);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::readable_after_writable);
}

TEST_F(SplitQueueHostileTest, indirect_inside_indirect) {
  driver_.table_desc(kTableGpa + 0x100, 0, data(0), 10);
  driver_.table_desc(kTableGpa, 0, kTableGpa + 0x100, 16, kDescFIndirect);
  driver_.desc(0, kTableGpa, 16, kDescFIndirect);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::bad_indirect);
}

TEST_F(SplitQueueHostileTest, indirect_descriptor_with_next) {
  driver_.table_desc(kTableGpa, 0, data(0), 10);
  driver_.desc(0, kTableGpa, 16, kDescFIndirect | kDescFNext, 1);
  driver_.desc(1, data(1), 10);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::bad_indirect);
}

TEST_F(SplitQueueHostileTest, indirect_table_length_not_a_multiple_of_16) {
  driver_.table_desc(kTableGpa, 0, data(0), 10);
  driver_.desc(0, kTableGpa, 24, kDescFIndirect);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::bad_indirect);
}

TEST_F(SplitQueueHostileTest, zero_length_indirect_table) {
  driver_.desc(0, kTableGpa, 0, kDescFIndirect);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::bad_indirect);
}

TEST_F(SplitQueueHostileTest, indirect_table_longer_than_the_queue) {
  for (uint32_t i = 0; i <= kSize; ++i) {
    driver_.table_desc(kTableGpa, i, data(i), 10, kDescFNext, static_cast<uint16_t>(i + 1));
  }
  driver_.desc(0, kTableGpa, 16 * (kSize + 1), kDescFIndirect);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::bad_indirect);
}

TEST_F(SplitQueueHostileTest, indirect_table_outside_memory) {
  driver_.desc(0, kNextGpa + kNextSize - 16, 32, kDescFIndirect);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::bad_indirect);
}

TEST_F(SplitQueueHostileTest, indirect_without_the_feature) {
  SplitQueue q;
  ASSERT_TRUE(succeeded(q.configure(ram_.memory, driver_.config(/*features=*/0))));
  driver_.table_desc(kTableGpa, 0, data(0), 10);
  driver_.desc(0, kTableGpa, 16, kDescFIndirect);
  driver_.offer(0);
  EXPECT_FALSE(q.pop(iov_));
  EXPECT_EQ(q.counters().bad_indirect, 1u);
  q.publish_used();
  EXPECT_EQ(driver_.used(0), (Used{0, 0}));
}

TEST_F(SplitQueueHostileTest, indirect_next_past_its_table) {
  driver_.table_desc(kTableGpa, 0, data(0), 10, kDescFNext, 2);  // table has 2 entries
  driver_.table_desc(kTableGpa, 1, data(1), 10);
  driver_.desc(0, kTableGpa, 32, kDescFIndirect);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::desc_index_out_of_range);
}

TEST_F(SplitQueueHostileTest, loop_inside_an_indirect_table) {
  driver_.table_desc(kTableGpa, 0, data(0), 10, kDescFNext, 1);
  driver_.table_desc(kTableGpa, 1, data(1), 10, kDescFNext, 0);
  driver_.desc(0, kTableGpa, 32, kDescFIndirect);
  driver_.offer(0);
  expect_refused(0, &QueueCounters::desc_chain_too_long);
}

TEST_F(SplitQueueHostileTest, more_elements_than_the_iovec_array_holds) {
  driver_.desc(0, data(0), 10, kDescFNext, 1);
  driver_.desc(1, data(1), 10, kDescFNext, 2);
  driver_.desc(2, data(2), 10);
  driver_.offer(0);
  std::array<iovec, 2> small{};
  EXPECT_FALSE(queue_.pop(small));
  EXPECT_EQ(queue_.counters().chains_over_capacity, 1u);
  EXPECT_EQ(queue_.counters().malformed_chains, 0u);
  EXPECT_EQ(published_used(), (std::vector<Used>{{0, 0}}));
}

TEST_F(SplitQueueHostileTest, malformed_chain_is_skipped_and_the_next_one_returned) {
  driver_.desc(0, kNextGpa + kNextSize, 10);  // bad
  driver_.desc(1, data(1), 10);               // good
  driver_.offer(0);
  driver_.offer(1);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head.id, 1);
  EXPECT_EQ(queue_.counters().desc_outside_memory, 1u);
  ASSERT_TRUE(queue_.push_used(chain->head, 0));
  EXPECT_EQ(published_used(), (std::vector<Used>{{0, 0}, {1, 0}}));
}

// ---- broken queue ------------------------------------------------------------------------

TEST_F(SplitQueueTest, avail_index_jumping_past_the_queue_size_breaks_the_queue) {
  driver_.desc(0, data(0), 10);
  driver_.set_avail_idx(kSize + 1);
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_TRUE(queue_.broken());
  EXPECT_EQ(queue_.broken_reason(), BrokenReason::kAvailIndexJump);
  EXPECT_EQ(queue_.counters().broken_queue_events, 1u);
  EXPECT_EQ(queue_.counters().malformed_chains, 0u);
  EXPECT_TRUE(published_used().empty());

  // Everything is refused from now on, even after the driver "fixes" the index.
  driver_.set_avail_idx(1);
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_FALSE(queue_.push_used(ChainHead{0, 1}, 0));
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_FALSE(queue_.needs_notification());
  EXPECT_FALSE(queue_.unpop());
  EXPECT_EQ(queue_.counters().broken_queue_events, 1u);
  EXPECT_EQ(queue_.counters().chains_popped, 0u);
  EXPECT_EQ(driver_.used_idx(), 0);

  // Until reset and configured again.
  queue_.reset();
  ASSERT_TRUE(succeeded(queue_.configure(ram_.memory, driver_.config())));
  EXPECT_TRUE(queue_.pop(iov_));
}

TEST_F(SplitQueueTest, avail_index_exactly_queue_size_ahead_is_fine) {
  for (uint16_t i = 0; i < kSize; ++i) {
    driver_.desc(i, data(i), 10);
    driver_.offer(i);
  }
  for (uint16_t i = 0; i < kSize; ++i) ASSERT_TRUE(queue_.pop(iov_));
  EXPECT_FALSE(queue_.broken());
}

TEST_F(SplitQueueTest, head_index_past_the_queue_breaks_it) {
  // There is no head to give back, so the ring itself is unusable.
  driver_.offer(kSize);
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_EQ(queue_.broken_reason(), BrokenReason::kHeadOutOfRange);
  EXPECT_EQ(queue_.counters().broken_queue_events, 1u);
  EXPECT_TRUE(published_used().empty());
}

TEST_F(SplitQueueTest, more_chains_outstanding_than_the_queue_size_breaks_it) {
  for (uint16_t i = 0; i < kSize; ++i) {
    driver_.desc(i, data(i), 10);
    driver_.offer(i);
  }
  for (uint16_t i = 0; i < kSize; ++i) ASSERT_TRUE(queue_.pop(iov_));
  driver_.offer(0);  // head 0 again while we still hold it
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_EQ(queue_.broken_reason(), BrokenReason::kTooManyInFlight);
}

// ---- notifications -----------------------------------------------------------------------

TEST(NeedEvent, matches_vring_need_event) {
  EXPECT_TRUE(need_event(0, 1, 0));          // first entry passes used_event 0
  EXPECT_FALSE(need_event(5, 5, 0));         // entry 5 not written yet
  EXPECT_TRUE(need_event(5, 6, 0));          // ... now it is
  EXPECT_FALSE(need_event(2, 6, 3));         // event already passed before this batch
  EXPECT_TRUE(need_event(3, 6, 3));          // the batch's first entry
  EXPECT_TRUE(need_event(65535, 1, 65534));  // across the 16-bit wrap
  EXPECT_FALSE(need_event(1, 1, 65534));
  EXPECT_FALSE(need_event(7, 7, 7));  // empty batch
}

class SplitQueueNotifyTest : public SplitQueueTest {
 protected:
  void complete(uint16_t n) {
    for (uint16_t i = 0; i < n; ++i) {
      driver_.desc(i, data(i), 10, kDescFWrite);
      driver_.offer(i);
    }
    for (uint16_t i = 0; i < n; ++i) {
      auto chain = queue_.pop(iov_);
      ASSERT_TRUE(chain);
      ASSERT_TRUE(queue_.push_used(chain->head, 10));
    }
    queue_.publish_used();
  }
};

TEST_F(SplitQueueNotifyTest, without_event_idx_avail_flags_decide) {
  complete(1);
  EXPECT_TRUE(queue_.needs_notification());
  EXPECT_FALSE(queue_.needs_notification());  // nothing new since
  driver_.set_avail_flags(1);                 // VIRTQ_AVAIL_F_NO_INTERRUPT
  complete(1);
  EXPECT_FALSE(queue_.needs_notification());
}

TEST_F(SplitQueueNotifyTest, nothing_published_means_no_notification) {
  EXPECT_FALSE(queue_.needs_notification());
  driver_.desc(0, data(0), 10);
  driver_.offer(0);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  ASSERT_TRUE(queue_.push_used(chain->head, 0));
  EXPECT_FALSE(queue_.needs_notification());  // pushed but not published
}

TEST_F(SplitQueueNotifyTest, event_idx_notifies_only_when_used_event_is_passed) {
  ASSERT_TRUE(succeeded(
      queue_.configure(ram_.memory, driver_.config(kFeatureIndirectDesc | kFeatureEventIdx))));
  driver_.set_avail_flags(1);  // must be ignored with EVENT_IDX
  driver_.set_used_event(0);
  complete(1);  // used idx 0 -> 1 passes 0
  EXPECT_TRUE(queue_.needs_notification());
  complete(2);  // 1 -> 3, used_event still 0
  EXPECT_FALSE(queue_.needs_notification());
  driver_.set_used_event(5);
  complete(2);  // 3 -> 5: entry 5 not yet written
  EXPECT_FALSE(queue_.needs_notification());
  complete(1);  // 5 -> 6
  EXPECT_TRUE(queue_.needs_notification());
  complete(1);  // 6 -> 7
  EXPECT_FALSE(queue_.needs_notification());
}

TEST_F(SplitQueueNotifyTest, event_idx_across_the_16_bit_wrap) {
  SplitQueue q;
  q.set_last_avail(65533);
  driver_.set_avail_idx(65533);
  driver_.set_used_idx(65533);
  ASSERT_TRUE(succeeded(q.configure(ram_.memory, driver_.config(kFeatureEventIdx))));
  auto round = [&](uint16_t n) {
    for (uint16_t i = 0; i < n; ++i) {
      driver_.desc(i, data(i), 10, kDescFWrite);
      driver_.offer(i);
    }
    for (uint16_t i = 0; i < n; ++i) {
      auto chain = q.pop(iov_);
      ASSERT_TRUE(chain);
      ASSERT_TRUE(q.push_used(chain->head, 1));
    }
    q.publish_used();
  };
  driver_.set_used_event(65533);
  round(1);  // 65533 -> 65534
  EXPECT_TRUE(q.needs_notification());
  driver_.set_used_event(65535);
  round(3);  // 65534 -> 1 writes entry 65535
  EXPECT_EQ(driver_.used_idx(), 1);
  EXPECT_TRUE(q.needs_notification());
  round(1);  // 1 -> 2, used_event 65535 already passed
  EXPECT_FALSE(q.needs_notification());
  driver_.set_used_event(65534);
  round(1);  // 2 -> 3; 65534 is far behind
  EXPECT_FALSE(q.needs_notification());
}

TEST_F(SplitQueueNotifyTest, enable_with_event_idx_arms_avail_event_and_reports_waiting_buffers) {
  ASSERT_TRUE(succeeded(queue_.configure(ram_.memory, driver_.config(kFeatureEventIdx))));
  complete(3);
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_EQ(driver_.avail_event(), 3);
  driver_.desc(0, data(0), 10);
  driver_.offer(0);
  EXPECT_TRUE(queue_.enable_notifications());  // a buffer arrived: keep going
  queue_.disable_notifications();
  EXPECT_EQ(driver_.used_flags(), 0);  // flags stay 0 with EVENT_IDX (§2.7.10.2)
}

TEST_F(SplitQueueNotifyTest, without_event_idx_used_flags_carry_no_notify) {
  queue_.disable_notifications();
  EXPECT_EQ(driver_.used_flags(), 1);
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_EQ(driver_.used_flags(), 0);
  driver_.desc(0, data(0), 10);
  driver_.offer(0);
  EXPECT_TRUE(queue_.enable_notifications());
}

TEST_F(SplitQueueNotifyTest, enable_notifications_notices_a_broken_avail_index) {
  driver_.set_avail_idx(kSize + 3);
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_EQ(queue_.broken_reason(), BrokenReason::kAvailIndexJump);
}

// ---- the shared shape --------------------------------------------------------------------

// Echoes every available chain back with its writable length, through the concept only.
template <Virtqueue Q>
uint32_t echo_all(Q& q, std::span<iovec> iov) {
  uint32_t n = 0;
  while (auto chain = q.pop(iov)) {
    q.push_used(chain->head, chain->writable_bytes);
    ++n;
  }
  q.publish_used();
  return n;
}

TEST_F(SplitQueueTest, drives_through_the_virtqueue_concept) {
  driver_.desc(0, data(0), 10, kDescFWrite);
  driver_.desc(1, data(1), 20, kDescFWrite);
  driver_.offer(0);
  driver_.offer(1);
  EXPECT_EQ(echo_all(queue_, iov_), 2u);
  EXPECT_EQ(published_used(), (std::vector<Used>{{0, 10}, {1, 20}}));
}

}  // namespace
}  // namespace vp::virtio
