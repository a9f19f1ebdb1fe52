#include "virtio/packed_queue.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#include "unit_expect.hpp"

// A packed ring built the way a guest driver would (virtio 1.2 §2.8.21), in ordinary memory
// registered as guest RAM at made-up guest-physical addresses.

namespace vp::virtio {
namespace {

using unit::fails_with;
using unit::succeeded;

constexpr uint64_t kRamGpa = 0x40000000;
constexpr uint64_t kRamSize = 2 << 20;
constexpr uint64_t kNextGpa = kRamGpa + kRamSize;  // contiguous in the guest, not on the host
constexpr uint64_t kNextSize = 0x10000;
constexpr uint64_t kBigGpa = 0x100000000;  // PROT_NONE, only translated, never touched
constexpr uint64_t kBigSize = 0x80000000;

constexpr uint64_t kDescGpa = kRamGpa;
constexpr uint64_t kDriverGpa = kRamGpa + 0x80000;
constexpr uint64_t kDeviceGpa = kRamGpa + 0x80010;
constexpr uint64_t kTableGpa = kRamGpa + 0x100000;
constexpr uint64_t kDataGpa = kRamGpa + 0x180000;

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

uint64_t data(uint64_t n) { return kDataGpa + n * 0x1000; }

struct Elem {
  uint64_t addr;
  uint32_t len;
  uint16_t flags = 0;  // WRITE / INDIRECT; NEXT is added by the driver
};

struct UsedDesc {
  uint16_t id;
  uint32_t len;
  uint16_t flags;
  bool operator==(const UsedDesc&) const = default;
};

std::ostream& operator<<(std::ostream& os, const UsedDesc& u) {
  return os << "{id " << u.id << ", len " << u.len << ", flags 0x" << std::hex << u.flags
            << std::dec << "}";
}

constexpr uint16_t used_flags(bool wrap, bool written) {
  return static_cast<uint16_t>((wrap ? kPackedDescFAvail | kPackedDescFUsed : 0) |
                               (written ? kDescFWrite : 0));
}

// The driver's side of a packed ring: wrap counters start at 1 (§2.8.1).
class PackedDriver {
 public:
  PackedDriver(GuestRam& ram, uint16_t size) : ram_(ram), size_(size) {}

  QueueConfig config(uint64_t features = kFeatureIndirectDesc) const {
    return QueueConfig{size_, kDescGpa, kDriverGpa, kDeviceGpa, features};
  }

  uint16_t avail_bits(bool wrap) const {
    return wrap ? kPackedDescFAvail : kPackedDescFUsed;  // AVAIL = wrap, USED = !wrap
  }

  void raw(uint16_t pos, uint64_t addr, uint32_t len, uint16_t id, uint16_t flags) {
    const uint64_t at = kDescGpa + 16 * uint64_t{pos};
    ram_.put<uint64_t>(at, addr);
    ram_.put<uint32_t>(at + 8, len);
    ram_.put<uint16_t>(at + 12, id);
    ram_.put<uint16_t>(at + 14, flags);
  }

  // Makes one buffer available: NEXT on all but the last element, the id only in the last
  // (the others carry junk, §2.8.6), the first descriptor's flags written last.
  void add(std::vector<Elem> elems, uint16_t id) {
    const uint16_t first = next_avail_;
    uint16_t first_flags = 0;
    for (std::size_t i = 0; i < elems.size(); ++i) {
      const bool last = i + 1 == elems.size();
      uint16_t flags = static_cast<uint16_t>(elems[i].flags | avail_bits(avail_wrap_));
      if (!last) flags |= kDescFNext;
      if (i == 0) {
        first_flags = flags;
        raw(next_avail_, elems[i].addr, elems[i].len, last ? id : 0xdead, 0);
      } else {
        raw(next_avail_, elems[i].addr, elems[i].len, last ? id : 0xdead, flags);
      }
      if (++next_avail_ == size_) {
        next_avail_ = 0;
        avail_wrap_ = !avail_wrap_;
      }
    }
    ram_.put<uint16_t>(kDescGpa + 16 * uint64_t{first} + 14, first_flags);
    slots_[id] = static_cast<uint16_t>(elems.size());
    outstanding_ += static_cast<uint16_t>(elems.size());
  }

  UsedDesc at(uint16_t pos) {
    const uint64_t a = kDescGpa + 16 * uint64_t{pos};
    return UsedDesc{ram_.get<uint16_t>(a + 12), ram_.get<uint32_t>(a + 8),
                    ram_.get<uint16_t>(a + 14)};
  }

  // The next used buffer, if the device marked it used (§2.8.22), skipping its list.
  std::optional<UsedDesc> take_used() {
    const UsedDesc d = at(next_used_);
    const bool avail = (d.flags & kPackedDescFAvail) != 0;
    const bool used = (d.flags & kPackedDescFUsed) != 0;
    if (avail != used || used != used_wrap_) return std::nullopt;
    const uint16_t skip = slots_.at(d.id);
    outstanding_ = static_cast<uint16_t>(outstanding_ - skip);
    next_used_ = static_cast<uint16_t>(next_used_ + skip);
    if (next_used_ >= size_) {
      next_used_ = static_cast<uint16_t>(next_used_ - size_);
      used_wrap_ = !used_wrap_;
    }
    return d;
  }

  void table(uint64_t gpa, uint32_t index, uint64_t addr, uint32_t len, uint16_t flags = 0) {
    const uint64_t a = gpa + 16 * uint64_t{index};
    ram_.put<uint64_t>(a, addr);
    ram_.put<uint32_t>(a + 8, len);
    ram_.put<uint16_t>(a + 12, 0xbeef);  // reserved in tables
    ram_.put<uint16_t>(a + 14, flags);
  }

  void set_driver_event(uint16_t flags, uint16_t off_wrap = 0) {
    ram_.put<uint16_t>(kDriverGpa, off_wrap);
    ram_.put<uint16_t>(kDriverGpa + 2, flags);
  }
  uint16_t device_event_flags() { return ram_.get<uint16_t>(kDeviceGpa + 2); }
  uint16_t device_event_off_wrap() { return ram_.get<uint16_t>(kDeviceGpa); }

  uint16_t next_avail() const { return next_avail_; }
  bool avail_wrap() const { return avail_wrap_; }
  uint16_t next_used() const { return next_used_; }
  bool used_wrap() const { return used_wrap_; }
  uint16_t free_slots() const { return static_cast<uint16_t>(size_ - outstanding_); }

 private:
  GuestRam& ram_;
  uint16_t size_;
  uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  uint16_t next_used_ = 0;
  bool used_wrap_ = true;
  uint16_t outstanding_ = 0;
  std::map<uint16_t, uint16_t> slots_;
};

class PackedQueueTest : public ::testing::Test {
 protected:
  static constexpr uint16_t kSize = 8;

  void SetUp() override { ASSERT_TRUE(succeeded(queue_.configure(ram_.memory, driver_.config()))); }

  // Publishes and collects every used buffer the driver can now see.
  std::vector<UsedDesc> published_used() {
    queue_.publish_used();
    std::vector<UsedDesc> out;
    while (auto d = driver_.take_used()) out.push_back(*d);
    return out;
  }

  GuestRam ram_;
  PackedDriver driver_{ram_, kSize};
  PackedQueue queue_;
  std::array<iovec, 16> iov_{};
};

// ---- configure ---------------------------------------------------------------------------

TEST_F(PackedQueueTest, configure_accepts_a_size_that_is_not_a_power_of_two) {
  PackedQueue q;
  QueueConfig c = driver_.config();
  c.size = 5;
  EXPECT_TRUE(succeeded(q.configure(ram_.memory, c)));
  EXPECT_EQ(q.size(), 5);
  EXPECT_TRUE(q.ready());
}

TEST_F(PackedQueueTest, queue_size_zero_or_past_32768_is_refused) {
  PackedQueue q;
  QueueConfig c = driver_.config();
  c.size = 0;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "invalid-queue-size"));
  c.size = 32769;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "invalid-queue-size"));
  c.size = 32768;
  c.driver_addr = kRamGpa + 0x80000;
  c.device_addr = kRamGpa + 0x80004;
  EXPECT_TRUE(succeeded(q.configure(ram_.memory, c)));
}

TEST_F(PackedQueueTest, misaligned_parts_are_refused) {
  PackedQueue q;
  QueueConfig c = driver_.config();
  c.desc_addr += 8;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-misaligned",
                         {"descriptor ring", "guest address"}));
  c = driver_.config();
  c.driver_addr += 2;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-misaligned", {"driver event"}));
  c = driver_.config();
  c.device_addr += 2;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-misaligned", {"device event"}));
  EXPECT_FALSE(q.ready());
}

TEST_F(PackedQueueTest, parts_outside_memory_or_overlapping_are_refused) {
  PackedQueue q;
  QueueConfig c = driver_.config();
  c.desc_addr = kNextGpa + kNextSize - 64;  // 8 descriptors need 128 bytes
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-outside-memory"));
  c = driver_.config();
  c.device_addr = 0x1000;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-outside-memory", {"device"}));
  c = driver_.config();
  c.driver_addr = kDescGpa + 16;
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, c), "ring-overlap"));
}

TEST_F(PackedQueueTest, vring_base_round_trips_and_is_checked_against_the_ring) {
  EXPECT_EQ(queue_.vring_base(), 0x80008000u);  // both indices 0, both wrap counters 1
  EXPECT_TRUE(queue_.set_vring_base(0x00058003));
  EXPECT_EQ(queue_.next_avail(), 3);
  EXPECT_TRUE(queue_.avail_wrap_counter());
  EXPECT_EQ(queue_.next_used(), 5);
  EXPECT_FALSE(queue_.used_wrap_counter());
  EXPECT_EQ(queue_.vring_base(), 0x00058003u);
  EXPECT_FALSE(queue_.set_vring_base(kSize));  // avail index past the ring

  PackedQueue q;
  EXPECT_TRUE(q.set_vring_base(9));  // not configured yet: checked by configure()
  EXPECT_TRUE(fails_with(q.configure(ram_.memory, driver_.config()), "invalid-vring-base"));
}

TEST(PackedBaseFromFrontEnd, a_missing_used_half_is_the_avail_half) {
  EXPECT_EQ(packed_base_from_front_end(0x00008000u), 0x80008000u);  // DPDK virtio-user, new ring
  EXPECT_EQ(packed_base_from_front_end(0x00000005u), 0x00050005u);  // avail (5, wrap 0)
  EXPECT_EQ(packed_base_from_front_end(0x00000000u), 0x00000000u);
  EXPECT_EQ(packed_base_from_front_end(0x80008000u), 0x80008000u);  // QEMU, new ring
  EXPECT_EQ(packed_base_from_front_end(0x00030005u), 0x00030005u);  // used behind avail
  EXPECT_EQ(packed_base_from_front_end(0x80000003u), 0x80000003u);  // used (0, wrap 1)
}

TEST_F(PackedQueueTest, dpdk_base_gives_used_descriptors_the_driver_recognises_past_one_ring) {
  PackedQueue q;
  ASSERT_TRUE(q.set_vring_base(packed_base_from_front_end(0x00008000u)));
  ASSERT_TRUE(succeeded(q.configure(ram_.memory, driver_.config())));
  EXPECT_TRUE(q.used_wrap_counter());
  for (uint16_t i = 0; i < 3 * kSize; ++i) {
    driver_.add({{data(0), 1}}, static_cast<uint16_t>(i % kSize));
    auto chain = q.pop(iov_);
    ASSERT_TRUE(chain) << "buffer " << i;
    ASSERT_TRUE(q.push_used(chain->head, 0));
    q.publish_used();
    ASSERT_TRUE(driver_.take_used().has_value()) << "buffer " << i;
  }
}

// ---- well-formed buffers -----------------------------------------------------------------

TEST_F(PackedQueueTest, empty_ring_pops_nothing) {
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_EQ(queue_.counters().chains_popped, 0u);
}

TEST_F(PackedQueueTest, single_writable_descriptor_and_its_used_descriptor) {
  driver_.add({{data(0), 1500, kDescFWrite}}, 42);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, (ChainHead{42, 1}));
  EXPECT_TRUE(chain->readable.empty());
  ASSERT_EQ(chain->writable.size(), 1u);
  EXPECT_EQ(chain->writable[0].iov_base, ram_.host(data(0)));
  EXPECT_EQ(chain->writable_bytes, 1500u);
  EXPECT_FALSE(queue_.pop(iov_));
  ASSERT_TRUE(queue_.push_used(chain->head, 60));
  // Not visible before publish: the descriptor still looks available.
  EXPECT_EQ(driver_.at(0).flags, kDescFWrite | kPackedDescFAvail);
  EXPECT_EQ(published_used(), (std::vector<UsedDesc>{{42, 60, used_flags(true, true)}}));
  EXPECT_EQ(queue_.counters().chains_popped, 1u);
  EXPECT_EQ(queue_.counters().used_returned, 1u);
}

TEST_F(PackedQueueTest, used_descriptor_without_data_has_no_write_flag) {
  driver_.add({{data(0), 100}}, 7);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  ASSERT_TRUE(queue_.push_used(chain->head, 0));
  EXPECT_EQ(published_used(), (std::vector<UsedDesc>{{7, 0, used_flags(true, false)}}));
}

TEST_F(PackedQueueTest, descriptor_with_the_used_pattern_is_not_available) {
  // SPEC: virtio 1.2 §2.8.1: AVAIL and USED differ in an available descriptor; equal bits
  // (here both matching our wrap counter) mean used, whatever AVAIL says.
  driver_.raw(0, data(0), 10, 1, kPackedDescFAvail | kPackedDescFUsed);
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_EQ(queue_.counters().chains_popped, 0u);
  EXPECT_EQ(queue_.counters().malformed_chains, 0u);
  EXPECT_EQ(queue_.next_avail(), 0);
}

TEST_F(PackedQueueTest, chain_takes_its_buffer_id_from_the_last_descriptor) {
  driver_.add({{data(0), 12}, {data(1), 100}, {data(2), 2048, kDescFWrite}}, 5);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, (ChainHead{5, 3}));
  ASSERT_EQ(chain->readable.size(), 2u);
  ASSERT_EQ(chain->writable.size(), 1u);
  EXPECT_EQ(chain->readable_bytes, 112u);
  EXPECT_EQ(chain->writable_bytes, 2048u);
  EXPECT_EQ(queue_.next_avail(), 3);
  ASSERT_TRUE(queue_.push_used(chain->head, 2048));
  EXPECT_EQ(published_used(), (std::vector<UsedDesc>{{5, 2048, used_flags(true, true)}}));
  EXPECT_EQ(queue_.next_used(), 3);  // skipped the whole list
}

TEST_F(PackedQueueTest, indirect_table_supplies_the_elements_in_order) {
  driver_.table(kTableGpa, 0, data(0), 12);
  driver_.table(kTableGpa, 1, data(1), 1000);
  driver_.table(kTableGpa, 2, data(2), 1500, kDescFWrite);
  driver_.add({{kTableGpa, 48, kDescFIndirect}}, 9);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, (ChainHead{9, 1}));
  ASSERT_EQ(chain->readable.size(), 2u);
  ASSERT_EQ(chain->writable.size(), 1u);
  EXPECT_EQ(chain->writable[0].iov_base, ram_.host(data(2)));
  EXPECT_EQ(chain->readable_bytes, 1012u);
}

TEST_F(PackedQueueTest, reserved_flags_inside_an_indirect_table_are_ignored) {
  // SPEC: virtio 1.2 §2.8.7: only WRITE is valid in table entries; NEXT and INDIRECT there
  // are reserved and ignored, so a nested table is never followed: the entry is plain data.
  driver_.table(kTableGpa, 0, data(0), 10, kDescFIndirect | kDescFNext);
  driver_.table(kTableGpa, 1, data(1), 20, kDescFWrite);
  driver_.add({{kTableGpa, 32, kDescFIndirect}}, 1);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  ASSERT_EQ(chain->readable.size(), 1u);
  EXPECT_EQ(chain->readable[0].iov_base, ram_.host(data(0)));
  EXPECT_EQ(chain->readable_bytes, 10u);
  EXPECT_EQ(chain->writable_bytes, 20u);
}

TEST_F(PackedQueueTest, misaligned_indirect_table_is_read_correctly) {
  const uint64_t table = kTableGpa + 4;
  driver_.table(table, 0, data(0), 77);
  driver_.table(table, 1, data(1), 88, kDescFWrite);
  driver_.add({{table, 32, kDescFIndirect}}, 2);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->readable[0].iov_base, ram_.host(data(0)));
  EXPECT_EQ(chain->readable_bytes, 77u);
  EXPECT_EQ(chain->writable_bytes, 88u);
}

TEST_F(PackedQueueTest, batch_is_exposed_by_the_first_descriptor_last) {
  for (uint16_t id = 0; id < 3; ++id) driver_.add({{data(id), 100, kDescFWrite}}, id);
  std::vector<ChainHead> heads;
  while (auto chain = queue_.pop(iov_)) heads.push_back(chain->head);
  ASSERT_EQ(heads.size(), 3u);
  for (const ChainHead& h : heads) ASSERT_TRUE(queue_.push_used(h, 10));
  // The later two are written; the first still reads as available, so the driver sees none.
  EXPECT_EQ(driver_.at(1).flags, used_flags(true, true));
  EXPECT_EQ(driver_.at(2).flags, used_flags(true, true));
  EXPECT_EQ(driver_.at(0).flags, kDescFWrite | kPackedDescFAvail);
  EXPECT_FALSE(driver_.take_used());
  EXPECT_EQ(published_used().size(), 3u);
}

TEST_F(PackedQueueTest, buffers_completed_out_of_order) {
  driver_.add({{data(0), 10}, {data(1), 10, kDescFWrite}}, 10);  // 2 slots
  driver_.add({{data(2), 10, kDescFWrite}}, 11);                 // 1 slot
  auto a = queue_.pop(iov_);
  ASSERT_TRUE(a);
  auto b = queue_.pop(iov_);
  ASSERT_TRUE(b);
  ASSERT_TRUE(queue_.push_used(b->head, 1));
  ASSERT_TRUE(queue_.push_used(a->head, 2));
  // B lands in the first slot; the driver skips B's one slot and finds A.
  EXPECT_EQ(published_used(), (std::vector<UsedDesc>{{11, 1, used_flags(true, true)},
                                                     {10, 2, used_flags(true, true)}}));
  EXPECT_EQ(queue_.next_used(), 3);
}

TEST_F(PackedQueueTest, wrap_counters_stay_in_step_over_many_rounds) {
  PackedQueue q;
  constexpr uint16_t kOdd = 5;  // not a power of 2: wraps at odd places
  PackedDriver driver(ram_, kOdd);
  QueueConfig c = driver.config();
  ASSERT_TRUE(succeeded(q.configure(ram_.memory, c)));
  uint16_t next_id = 0;
  for (uint32_t round = 0; round < 3000; ++round) {
    // Fill the ring with lists of 1-3 descriptors while they fit.
    std::map<uint16_t, uint32_t> expect_len;
    for (;;) {
      const uint16_t n = static_cast<uint16_t>(1 + (round + next_id) % 3);
      if (n > driver.free_slots()) break;
      std::vector<Elem> elems;
      for (uint16_t i = 0; i < n; ++i) elems.push_back({data(i), 100u + i, kDescFWrite});
      const uint16_t id = next_id++ % 64;
      driver.add(elems, id);
      expect_len[id] = 100u * n + n * (n - 1u) / 2;
    }
    std::vector<Chain> chains;
    while (auto chain = q.pop(iov_)) chains.push_back(*chain);
    ASSERT_EQ(chains.size(), expect_len.size()) << "round " << round;
    // Complete in reverse every other round.
    if (round % 2 == 1) std::reverse(chains.begin(), chains.end());
    for (const Chain& chain : chains) ASSERT_TRUE(q.push_used(chain.head, chain.writable_bytes));
    q.publish_used();
    std::size_t seen = 0;
    while (auto used = driver.take_used()) {
      ASSERT_EQ(used->len, expect_len.at(used->id)) << "round " << round;
      ASSERT_NE(used->flags & kDescFWrite, 0) << "round " << round;
      ++seen;
    }
    ASSERT_EQ(seen, chains.size()) << "round " << round;
    ASSERT_EQ(q.next_avail(), driver.next_avail());
    ASSERT_EQ(q.avail_wrap_counter(), driver.avail_wrap());
    ASSERT_EQ(q.next_used(), driver.next_used());
    ASSERT_EQ(q.used_wrap_counter(), driver.used_wrap());
  }
  EXPECT_EQ(q.counters().malformed_chains, 0u);
  EXPECT_FALSE(q.broken());
}

TEST_F(PackedQueueTest, unpop_across_the_ring_end_restores_the_wrap_counter) {
  for (uint16_t id = 0; id < 6; ++id) driver_.add({{data(0), 1}}, id);
  while (auto chain = queue_.pop(iov_)) ASSERT_TRUE(queue_.push_used(chain->head, 0));
  EXPECT_EQ(published_used().size(), 6u);  // both sides now at slot 6, lap 1
  driver_.add({{data(1), 10}, {data(2), 10}, {data(3), 10, kDescFWrite}}, 3);  // slots 6, 7, 0
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(queue_.next_avail(), 1);
  EXPECT_FALSE(queue_.avail_wrap_counter());
  EXPECT_TRUE(queue_.unpop());
  EXPECT_FALSE(queue_.unpop());
  EXPECT_EQ(queue_.next_avail(), 6);
  EXPECT_TRUE(queue_.avail_wrap_counter());
  auto again = queue_.pop(iov_);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->head, (ChainHead{3, 3}));
}

TEST_F(PackedQueueTest, vring_base_carries_the_ring_over_to_a_new_queue) {
  for (uint16_t id = 0; id < 7; ++id) driver_.add({{data(0), 1}}, id);
  while (auto chain = queue_.pop(iov_)) ASSERT_TRUE(queue_.push_used(chain->head, 0));
  EXPECT_EQ(published_used().size(), 7u);  // the driver may reuse those slots now
  PackedQueue next;                        // e.g. the backend reconnected
  ASSERT_TRUE(next.set_vring_base(queue_.vring_base()));
  ASSERT_TRUE(succeeded(next.configure(ram_.memory, driver_.config())));
  EXPECT_EQ(next.vring_base(), queue_.vring_base());
  driver_.add({{data(1), 10, kDescFWrite}, {data(2), 10, kDescFWrite}}, 9);  // slots 7, 0
  auto chain = next.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, (ChainHead{9, 2}));
  ASSERT_TRUE(next.push_used(chain->head, 20));
  next.publish_used();
  std::vector<uint16_t> ids;
  while (auto used = driver_.take_used()) ids.push_back(used->id);
  EXPECT_EQ(ids, (std::vector<uint16_t>{9}));
  EXPECT_EQ(next.next_used(), 1);
  EXPECT_FALSE(next.used_wrap_counter());
}

TEST_F(PackedQueueTest, push_used_for_more_slots_than_in_flight_is_refused) {
  EXPECT_FALSE(queue_.push_used(ChainHead{0, 1}, 0));
  driver_.add({{data(0), 10}}, 0);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_FALSE(queue_.push_used(ChainHead{0, 2}, 0));
  EXPECT_FALSE(queue_.push_used(ChainHead{0, 0}, 0));
  EXPECT_EQ(queue_.counters().used_rejected, 3u);
  EXPECT_TRUE(queue_.push_used(chain->head, 0));
}

// ---- hostile buffers: returned with length 0, counted, never handed out ------------------

class PackedQueueHostileTest : public PackedQueueTest {
 protected:
  // Pops once: nothing handed out, buffer `id` back with length 0 after skipping `slots`,
  // and exactly `counter` (plus malformed_chains for a fault) moved by one.
  void expect_refused(uint16_t id, uint16_t slots, uint64_t QueueCounters::*counter,
                      bool malformed = true) {
    const QueueCounters before = queue_.counters();
    const uint16_t used_before = queue_.next_used();
    const bool wrap = queue_.used_wrap_counter();
    EXPECT_FALSE(queue_.pop(iov_));
    const QueueCounters& after = queue_.counters();
    EXPECT_EQ(after.*counter - before.*counter, 1u);
    EXPECT_EQ(after.malformed_chains - before.malformed_chains, malformed ? 1u : 0u);
    EXPECT_EQ(after.chains_popped, before.chains_popped);
    EXPECT_EQ(published_used(), (std::vector<UsedDesc>{{id, 0, used_flags(wrap, false)}}));
    EXPECT_EQ(queue_.next_used(), (used_before + slots) % kSize);
    EXPECT_FALSE(queue_.broken());
  }
};

TEST_F(PackedQueueHostileTest, address_past_guest_memory) {
  driver_.add({{kNextGpa + kNextSize, 10}}, 4);
  expect_refused(4, 1, &QueueCounters::desc_outside_memory);
}

TEST_F(PackedQueueHostileTest, bad_element_in_the_middle_of_a_list_returns_the_whole_list) {
  driver_.add({{data(0), 10}, {kNextGpa + kNextSize - 4, 10}, {data(1), 10, kDescFWrite}}, 6);
  expect_refused(6, 3, &QueueCounters::desc_outside_memory);
}

TEST_F(PackedQueueHostileTest, address_straddling_two_regions) {
  driver_.add({{kNextGpa - 8, 16}}, 1);
  expect_refused(1, 1, &QueueCounters::desc_outside_memory);
}

TEST_F(PackedQueueHostileTest, address_plus_length_wraps) {
  driver_.add({{0xfffffffffffffff0, 0x20}}, 1);
  expect_refused(1, 1, &QueueCounters::desc_outside_memory);
}

TEST_F(PackedQueueHostileTest, total_length_past_32_bits) {
  if (!ram_.has_big_region()) GTEST_SKIP() << "could not reserve 2 GiB of address space";
  driver_.add({{kBigGpa, 0x80000000}, {kBigGpa, 0x80000000, kDescFWrite}}, 2);
  expect_refused(2, 2, &QueueCounters::chain_length_overflow);
}

TEST_F(PackedQueueHostileTest, writable_then_readable) {
  driver_.add({{data(0), 10, kDescFWrite}, {data(1), 10}}, 3);
  expect_refused(3, 2, &QueueCounters::readable_after_writable);
}

TEST_F(PackedQueueHostileTest, writable_then_readable_inside_an_indirect_table) {
  driver_.table(kTableGpa, 0, data(0), 10, kDescFWrite);
  driver_.table(kTableGpa, 1, data(1), 10);
  driver_.add({{kTableGpa, 32, kDescFIndirect}}, 3);
  expect_refused(3, 1, &QueueCounters::readable_after_writable);
}

TEST_F(PackedQueueHostileTest, indirect_table_length_not_a_multiple_of_16) {
  driver_.table(kTableGpa, 0, data(0), 10);
  driver_.add({{kTableGpa, 20, kDescFIndirect}}, 3);
  expect_refused(3, 1, &QueueCounters::bad_indirect);
}

TEST_F(PackedQueueHostileTest, zero_length_indirect_table) {
  driver_.add({{kTableGpa, 0, kDescFIndirect}}, 3);
  expect_refused(3, 1, &QueueCounters::bad_indirect);
}

TEST_F(PackedQueueHostileTest, indirect_table_longer_than_the_queue) {
  for (uint32_t i = 0; i <= kSize; ++i) driver_.table(kTableGpa, i, data(i), 10);
  driver_.add({{kTableGpa, 16 * (kSize + 1), kDescFIndirect}}, 3);
  expect_refused(3, 1, &QueueCounters::bad_indirect);
}

TEST_F(PackedQueueHostileTest, indirect_table_outside_memory) {
  driver_.add({{kNextGpa + kNextSize - 16, 32, kDescFIndirect}}, 3);
  expect_refused(3, 1, &QueueCounters::bad_indirect);
}

TEST_F(PackedQueueHostileTest, indirect_descriptor_inside_a_next_list) {
  // SPEC: virtio 1.2 §2.8.19: never an INDIRECT descriptor in a list linked by NEXT.
  driver_.table(kTableGpa, 0, data(1), 10);
  driver_.add({{data(0), 10}, {kTableGpa, 16, kDescFIndirect}}, 3);
  expect_refused(3, 2, &QueueCounters::bad_indirect);
}

TEST_F(PackedQueueHostileTest, indirect_descriptor_with_next) {
  driver_.table(kTableGpa, 0, data(1), 10);
  driver_.add({{kTableGpa, 16, kDescFIndirect}, {data(0), 10}}, 3);
  expect_refused(3, 2, &QueueCounters::bad_indirect);
}

TEST_F(PackedQueueHostileTest, indirect_without_the_feature) {
  PackedQueue q;
  ASSERT_TRUE(succeeded(q.configure(ram_.memory, driver_.config(/*features=*/0))));
  driver_.table(kTableGpa, 0, data(1), 10);
  driver_.add({{kTableGpa, 16, kDescFIndirect}}, 3);
  EXPECT_FALSE(q.pop(iov_));
  EXPECT_EQ(q.counters().bad_indirect, 1u);
  q.publish_used();
  EXPECT_EQ(driver_.take_used(), (UsedDesc{3, 0, used_flags(true, false)}));
}

TEST_F(PackedQueueHostileTest, more_elements_than_the_iovec_array_holds) {
  driver_.add({{data(0), 10}, {data(1), 10}, {data(2), 10}}, 3);
  std::array<iovec, 2> small{};
  EXPECT_FALSE(queue_.pop(small));
  EXPECT_EQ(queue_.counters().chains_over_capacity, 1u);
  EXPECT_EQ(queue_.counters().malformed_chains, 0u);
  EXPECT_EQ(published_used(), (std::vector<UsedDesc>{{3, 0, used_flags(true, false)}}));
}

TEST_F(PackedQueueHostileTest, malformed_buffer_is_skipped_and_the_next_one_returned) {
  driver_.add({{kNextGpa + kNextSize, 10}}, 1);
  driver_.add({{data(0), 10, kDescFWrite}}, 2);
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head.id, 2);
  ASSERT_TRUE(queue_.push_used(chain->head, 10));
  EXPECT_EQ(published_used(), (std::vector<UsedDesc>{{1, 0, used_flags(true, false)},
                                                     {2, 10, used_flags(true, true)}}));
}

// ---- broken queue ------------------------------------------------------------------------

TEST_F(PackedQueueTest, list_without_an_end_breaks_the_queue) {
  // Every descriptor of the ring available and chained: no last descriptor, no buffer id.
  std::vector<Elem> elems(kSize, Elem{data(0), 10});
  driver_.add(elems, 0);
  driver_.raw(kSize - 1, data(0), 10, 0,
              static_cast<uint16_t>(kDescFNext | driver_.avail_bits(true)));
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_EQ(queue_.broken_reason(), BrokenReason::kChainWithoutEnd);
  EXPECT_EQ(queue_.counters().broken_queue_events, 1u);
  EXPECT_EQ(queue_.counters().malformed_chains, 0u);
  EXPECT_TRUE(published_used().empty());
  EXPECT_EQ(queue_.next_avail(), 0);
}

TEST_F(PackedQueueTest, list_continuing_into_an_unavailable_descriptor_breaks_the_queue) {
  driver_.raw(1, data(1), 10, 7, 0);  // never made available
  driver_.raw(0, data(0), 10, 7, static_cast<uint16_t>(kDescFNext | driver_.avail_bits(true)));
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_EQ(queue_.broken_reason(), BrokenReason::kPartialChain);
  EXPECT_EQ(queue_.counters().broken_queue_events, 1u);
  EXPECT_TRUE(published_used().empty());
}

TEST_F(PackedQueueTest, descriptors_reoffered_while_in_flight_break_the_queue) {
  for (uint16_t id = 0; id < kSize; ++id) driver_.add({{data(id), 10}}, id);
  for (uint16_t i = 0; i < kSize; ++i) ASSERT_TRUE(queue_.pop(iov_));
  // A hostile driver marks slot 0 available for the next lap while we still own it.
  driver_.raw(0, data(0), 10, 0, driver_.avail_bits(false));
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_EQ(queue_.broken_reason(), BrokenReason::kTooManyInFlight);
}

TEST_F(PackedQueueTest, broken_queue_refuses_everything_until_reset) {
  driver_.raw(0, data(0), 10, 7, static_cast<uint16_t>(kDescFNext | driver_.avail_bits(true)));
  EXPECT_FALSE(queue_.pop(iov_));
  ASSERT_TRUE(queue_.broken());
  driver_.raw(1, data(1), 10, 7, driver_.avail_bits(true));  // now the list would be whole
  EXPECT_FALSE(queue_.pop(iov_));
  EXPECT_FALSE(queue_.push_used(ChainHead{7, 2}, 0));
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_FALSE(queue_.needs_notification());
  EXPECT_EQ(queue_.counters().broken_queue_events, 1u);
  EXPECT_EQ(queue_.counters().chains_popped, 0u);

  queue_.reset();
  ASSERT_TRUE(succeeded(queue_.configure(ram_.memory, driver_.config())));
  auto chain = queue_.pop(iov_);
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, (ChainHead{7, 2}));
}

// ---- notifications -----------------------------------------------------------------------

class PackedQueueNotifyTest : public PackedQueueTest {
 protected:
  void use_event_idx() {
    ASSERT_TRUE(succeeded(
        queue_.configure(ram_.memory, driver_.config(kFeatureIndirectDesc | kFeatureEventIdx))));
  }
  void complete(uint16_t n) {
    for (uint16_t i = 0; i < n; ++i) driver_.add({{data(i), 10, kDescFWrite}}, i);
    for (uint16_t i = 0; i < n; ++i) {
      auto chain = queue_.pop(iov_);
      ASSERT_TRUE(chain);
      ASSERT_TRUE(queue_.push_used(chain->head, 10));
    }
    queue_.publish_used();
    while (driver_.take_used()) {
    }
  }
  static uint16_t off_wrap(uint16_t pos, bool wrap) {
    return static_cast<uint16_t>(pos | (wrap ? 0x8000 : 0));
  }
};

TEST_F(PackedQueueNotifyTest, driver_flags_enable_and_disable) {
  driver_.set_driver_event(kRingEventFlagsEnable);
  complete(1);
  EXPECT_TRUE(queue_.needs_notification());
  EXPECT_FALSE(queue_.needs_notification());  // nothing new
  driver_.set_driver_event(kRingEventFlagsDisable);
  complete(1);
  EXPECT_FALSE(queue_.needs_notification());
}

TEST_F(PackedQueueNotifyTest, desc_flag_without_event_idx_means_enable) {
  driver_.set_driver_event(kRingEventFlagsDesc, off_wrap(7, true));
  complete(1);
  EXPECT_TRUE(queue_.needs_notification());
}

TEST_F(PackedQueueNotifyTest, event_offset_decides_with_event_idx) {
  use_event_idx();
  driver_.set_driver_event(kRingEventFlagsDesc, off_wrap(2, true));
  complete(1);                               // first judgement always notifies
  EXPECT_TRUE(queue_.needs_notification());  // 0 -> 1
  complete(1);                               // 1 -> 2: slot 2 not yet used
  EXPECT_FALSE(queue_.needs_notification());
  complete(2);  // 2 -> 4 covers slot 2
  EXPECT_TRUE(queue_.needs_notification());
  complete(1);  // 4 -> 5
  EXPECT_FALSE(queue_.needs_notification());
}

TEST_F(PackedQueueNotifyTest, event_offset_across_the_ring_end) {
  use_event_idx();
  driver_.set_driver_event(kRingEventFlagsEnable);
  complete(6);  // used position 6, wrap 1
  EXPECT_TRUE(queue_.needs_notification());
  // Next batch covers slots 6, 7 (lap 1) and 0, 1 (lap 0): ends at 2 with wrap 0.
  driver_.set_driver_event(kRingEventFlagsDesc, off_wrap(1, false));
  complete(4);
  EXPECT_EQ(queue_.next_used(), 2);
  EXPECT_FALSE(queue_.used_wrap_counter());
  EXPECT_TRUE(queue_.needs_notification());
  // Slot 2 of the previous lap is long behind: no notification for 2 -> 4.
  driver_.set_driver_event(kRingEventFlagsDesc, off_wrap(2, true));
  complete(2);
  EXPECT_FALSE(queue_.needs_notification());
  // Slot 7 of the previous lap also behind even though 7 > 4 numerically.
  driver_.set_driver_event(kRingEventFlagsDesc, off_wrap(7, true));
  complete(1);
  EXPECT_FALSE(queue_.needs_notification());
  // Slot 5 of this lap, written by 5 -> 6.
  driver_.set_driver_event(kRingEventFlagsDesc, off_wrap(5, false));
  complete(1);
  EXPECT_TRUE(queue_.needs_notification());
}

TEST_F(PackedQueueNotifyTest, event_in_the_previous_lap_before_the_batch_is_not_signalled) {
  use_event_idx();
  driver_.set_driver_event(kRingEventFlagsEnable);
  complete(6);  // used position 6, lap 1
  EXPECT_TRUE(queue_.needs_notification());
  // Slot 3 of lap 1 was used by the previous batch; this one covers 6, 7, 0, 1.
  driver_.set_driver_event(kRingEventFlagsDesc, off_wrap(3, true));
  complete(4);
  EXPECT_FALSE(queue_.needs_notification());
}

TEST_F(PackedQueueNotifyTest, enable_writes_the_device_event_structure) {
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_EQ(driver_.device_event_flags(), kRingEventFlagsEnable);
  queue_.disable_notifications();
  EXPECT_EQ(driver_.device_event_flags(), kRingEventFlagsDisable);
  driver_.add({{data(0), 10}}, 0);
  EXPECT_TRUE(queue_.enable_notifications());
}

TEST_F(PackedQueueNotifyTest, enable_with_event_idx_names_the_next_avail_position) {
  use_event_idx();
  complete(3);
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_EQ(driver_.device_event_flags(), kRingEventFlagsDesc);
  EXPECT_EQ(driver_.device_event_off_wrap(), off_wrap(3, true));
  complete(6);  // next avail 1, wrap 0
  EXPECT_FALSE(queue_.enable_notifications());
  EXPECT_EQ(driver_.device_event_off_wrap(), off_wrap(1, false));
}

// ---- the shared shape --------------------------------------------------------------------

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

TEST_F(PackedQueueTest, drives_through_the_virtqueue_concept) {
  driver_.add({{data(0), 10, kDescFWrite}}, 20);
  driver_.add({{data(1), 5}, {data(2), 20, kDescFWrite}}, 21);
  EXPECT_EQ(echo_all(queue_, iov_), 2u);
  EXPECT_EQ(published_used(), (std::vector<UsedDesc>{{20, 10, used_flags(true, true)},
                                                     {21, 20, used_flags(true, true)}}));
}

}  // namespace
}  // namespace vp::virtio
