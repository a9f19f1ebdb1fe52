// TAP → guest forwarding on split and packed rings, with a SOCK_SEQPACKET socketpair as the
// TAP (a short read truncates a message and returns the truncated length, as tun does).
// Each test asserts the counters exactly, the used ring, what the guest buffers hold, and
// that buffers not filled went back to the ring (the next frame lands in them).

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <cstdint>
#include <optional>

#include "dataplane/forward.hpp"
#include "dataplane/queue_rewind.hpp"
#include "dataplane_rings.hpp"

namespace vp::dataplane {
namespace {

using test::Bytes;
using test::UsedElem;

constexpr uint64_t kVersion1 = 1ull << 32;

template <class Ring>
class DataplaneRx : public ::testing::Test {
 public:
  void SetUp() override { call_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)); }

  void start(uint64_t features, uint64_t ring_features = 0, uint16_t size = 256) {
    ring_.emplace(ram_, size);
    ASSERT_TRUE(q_.configure(ram_.memory, ring_->config(ring_features)).has_value());
    session_ = make_net_session(features);
  }

  /// Offers a device-writable buffer of `len` bytes; remembers where it is.
  uint16_t offer(uint32_t len) {
    const uint64_t gpa = ram_.alloc(len);
    const uint16_t id = ring_->add({{gpa, len, true}});
    where_[id] = gpa;
    return id;
  }
  Bytes buffer(uint16_t id, std::size_t len) { return ram_.read(where_.at(id), len); }
  /// A guest that negotiated no GSO: the worker lowers max_rx_frame to MTU + 18, so the pool
  /// popped ahead of a read need only cover that (default: 64 KiB GSO frames).
  void without_gso(uint32_t max_frame = 1518) { session_.max_rx_frame = max_frame; }

  ForwardResult forward() {
    return forward_rx(q_, tap_.tap.get(), call_.get(), session_, scratch_, counters_, &hold_);
  }
  uint64_t interrupts_signalled() {
    eventfd_t v = 0;
    return ::eventfd_read(call_.get(), &v) == 0 ? v : 0;
  }

  test::GuestRam ram_;
  std::optional<Ring> ring_;
  typename Ring::Queue q_;
  test::FakeTap tap_;
  Fd call_;
  NetSession session_;
  NetScratch scratch_;
  NetCounters counters_;
  RxHold hold_;
  std::map<uint16_t, uint64_t> where_;
};

using RingTypes = ::testing::Types<test::SplitRing, test::PackedRing>;
class RingNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};
TYPED_TEST_SUITE(DataplaneRx, RingTypes, RingNames);

// What tun writes: the header with num_buffers left as it was (0 here).
Bytes tap_message(std::size_t hdr_len, std::size_t frame_len, int seed = 1) {
  return test::concat(test::net_hdr(hdr_len), test::eth_frame(frame_len, seed));
}

TYPED_TEST(DataplaneRx, frame_fits_one_buffer_and_num_buffers_is_one) {
  this->start(kVersion1);
  const uint16_t id = this->offer(1526);
  const Bytes msg = tap_message(12, 100);
  this->tap_.send(msg);

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 112}}));
  Bytes want = msg;
  want[10] = std::byte{1};  // SPEC: num_buffers is 1 without MRG_RXBUF (VERSION_1 header)
  EXPECT_EQ(this->buffer(id, 112), want);
  NetCounters c;
  c.rx_packets = 1;
  c.rx_bytes = 100;
  c.interrupts = 1;
  EXPECT_EQ(this->counters_, c);
  EXPECT_EQ(this->interrupts_signalled(), 1u);
}

TYPED_TEST(DataplaneRx, legacy_header_is_ten_bytes_and_untouched) {
  this->start(0);
  const uint16_t id = this->offer(1526);
  const Bytes msg = tap_message(10, 60);
  this->tap_.send(msg);

  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 70}}));
  EXPECT_EQ(this->buffer(id, 70), msg);
  EXPECT_EQ(this->buffer(id, 71)[70], std::byte{0xee});  // nothing written past the frame
}

TYPED_TEST(DataplaneRx, frame_exactly_filling_the_buffer_is_delivered) {
  this->start(kVersion1);
  const uint16_t id = this->offer(12 + 50);
  this->tap_.send(tap_message(12, 50));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 62}}));
  EXPECT_EQ(this->counters_.rx_dropped_too_big, 0u);
}

TYPED_TEST(DataplaneRx, frame_larger_than_the_buffer_is_dropped_and_the_buffer_kept) {
  this->start(kVersion1);
  const uint16_t id = this->offer(12 + 50);
  this->tap_.send(tap_message(12, 51));  // one byte too many: would be truncated
  this->tap_.send(tap_message(12, 40, 7));

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 1u);
  // The big frame was read and dropped; the same buffer took the next one.
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 52}}));
  Bytes want = tap_message(12, 40, 7);
  want[10] = std::byte{1};
  EXPECT_EQ(this->buffer(id, 52), want);
  NetCounters c;
  c.rx_packets = 1;
  c.rx_bytes = 40;
  c.rx_dropped_too_big = 1;
  c.interrupts = 1;
  EXPECT_EQ(this->counters_, c);
}

TYPED_TEST(DataplaneRx, too_big_frame_with_no_other_frame_leaves_the_buffer_available) {
  this->start(kVersion1);
  const uint16_t id = this->offer(12 + 50);
  this->tap_.send(tap_message(12, 200));
  const ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.chains, 0u);
  EXPECT_TRUE(this->ring_->take_all_used().empty());
  EXPECT_EQ(this->counters_.rx_dropped_too_big, 1u);
  // Not leaked: a later frame lands in it.
  this->tap_.send(tap_message(12, 30));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 42}}));
}

TYPED_TEST(DataplaneRx, mergeable_frame_spans_buffers_and_unused_ones_go_back) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  this->without_gso(3000);
  std::vector<uint16_t> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(this->offer(1000));
  const Bytes msg = tap_message(12, 2500);  // 2512 bytes: 1000 + 1000 + 512
  this->tap_.send(msg);

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 1u);
  EXPECT_EQ(r.chains, 3u);
  EXPECT_EQ(this->ring_->take_all_used(),
            (std::vector<UsedElem>{{ids[0], 1000}, {ids[1], 1000}, {ids[2], 512}}));
  Bytes want = msg;
  want[10] = std::byte{3};  // num_buffers
  EXPECT_EQ(test::concat(test::concat(this->buffer(ids[0], 1000), this->buffer(ids[1], 1000)),
                         this->buffer(ids[2], 512)),
            want);
  NetCounters c;
  c.rx_packets = 1;
  c.rx_bytes = 2500;
  c.interrupts = 1;
  EXPECT_EQ(this->counters_, c);

  // The buffer popped ahead went back: the next frame starts in the fourth.
  this->tap_.send(tap_message(12, 100, 5));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{ids[3], 112}}));
  EXPECT_EQ(this->buffer(ids[3], 12)[10], std::byte{1});
}

TYPED_TEST(DataplaneRx, mergeable_pool_covering_the_largest_frame_is_rewound) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  std::vector<uint16_t> ids;
  for (int i = 0; i < 80; ++i) ids.push_back(this->offer(1000));  // 80000 > 12 + 65553
  this->tap_.send(tap_message(12, 100));
  this->tap_.send(tap_message(12, 1500, 2));  // 1512: two buffers

  EXPECT_EQ(this->forward().frames, 2u);
  EXPECT_EQ(this->ring_->take_all_used(),
            (std::vector<UsedElem>{{ids[0], 112}, {ids[1], 1000}, {ids[2], 512}}));
  EXPECT_EQ(this->buffer(ids[1], 12)[10], std::byte{2});
  if constexpr (std::is_same_v<TypeParam, test::SplitRing>) {
    EXPECT_EQ(this->q_.vring_base(), 3u);  // last_avail: exactly the buffers used
  }
  // A 64 KiB frame still finds the rest of the buffers.
  this->tap_.send(tap_message(12, 65000, 3));
  EXPECT_EQ(this->forward().frames, 1u);
  const std::vector<UsedElem> used = this->ring_->take_all_used();
  ASSERT_EQ(used.size(), 66u);  // 65012 bytes in 1000-byte buffers
  EXPECT_EQ(used.front(), (UsedElem{ids[3], 1000}));
  EXPECT_EQ(used.back(), (UsedElem{ids[68], 12}));
  EXPECT_EQ(this->buffer(ids[3], 12)[10], std::byte{66});
  EXPECT_EQ(this->counters_.rx_packets, 3u);
  EXPECT_EQ(this->counters_.rx_bytes, 66600u);
}

TYPED_TEST(DataplaneRx, mergeable_frames_in_one_call_take_consecutive_buffers) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  this->without_gso();
  std::vector<uint16_t> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(this->offer(512));
  this->tap_.send(tap_message(12, 600, 1));   // 612: 2 buffers
  this->tap_.send(tap_message(12, 100, 2));   // 112: 1
  this->tap_.send(tap_message(12, 1100, 3));  // 1112: 3

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 3u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{ids[0], 512},
                                                                 {ids[1], 100},
                                                                 {ids[2], 112},
                                                                 {ids[3], 512},
                                                                 {ids[4], 512},
                                                                 {ids[5], 88}}));
  EXPECT_EQ(this->buffer(ids[0], 12)[10], std::byte{2});
  EXPECT_EQ(this->buffer(ids[2], 12)[10], std::byte{1});
  EXPECT_EQ(this->buffer(ids[3], 12)[10], std::byte{3});
  EXPECT_EQ(this->counters_.interrupts, 1u);
  EXPECT_EQ(this->interrupts_signalled(), 1u);
}

TYPED_TEST(DataplaneRx, mergeable_frame_larger_than_all_buffers_is_dropped) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  this->without_gso();
  std::vector<uint16_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(this->offer(1000));
  this->tap_.send(tap_message(12, 3000));  // 3012 > 3000 offered
  this->tap_.send(tap_message(12, 100, 2));

  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{ids[0], 112}}));
  EXPECT_EQ(this->counters_.rx_dropped_too_big, 1u);
  EXPECT_EQ(this->counters_.rx_packets, 1u);
}

TYPED_TEST(DataplaneRx, no_buffer_leaves_the_frame_in_the_tap_and_asks_for_kicks) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  this->without_gso();
  const Bytes msg = tap_message(12, 100);
  this->tap_.send(msg);

  ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kNoBuffers);
  EXPECT_EQ(this->tap_.waiting(), msg.size());  // still there, untouched
  EXPECT_TRUE(this->ring_->kicks_requested(false));
  NetCounters c;
  c.no_rx_avail_buffer = 1;
  EXPECT_EQ(this->counters_, c);

  // The guest adds a buffer and kicks: the frame goes in.
  const uint16_t id = this->offer(2000);
  r = this->forward();
  EXPECT_EQ(r.frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 112}}));
  EXPECT_EQ(this->tap_.waiting(), std::nullopt);
}

TYPED_TEST(DataplaneRx, empty_tap_and_empty_ring_is_idle_not_counted) {
  this->start(kVersion1);
  EXPECT_EQ(this->forward().status, ForwardStatus::kIdle);
  EXPECT_EQ(this->counters_, NetCounters{});
}

template <class Fixture>
void empty_tap_gives_every_popped_buffer_back(Fixture& t, bool mrg) {
  t.start(kVersion1 | (mrg ? kFeatureMrgRxbuf : 0));
  t.without_gso();
  std::vector<uint16_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(t.offer(2000));
  const ForwardResult r = t.forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.chains, 0u);
  EXPECT_TRUE(t.ring_->take_all_used().empty());
  EXPECT_EQ(t.counters_, NetCounters{});
  // All five are still there, in order.
  for (int i = 0; i < 5; ++i) t.tap_.send(tap_message(12, 60));
  EXPECT_EQ(t.forward().frames, 5u);
  const std::vector<UsedElem> used = t.ring_->take_all_used();
  ASSERT_EQ(used.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(used[i], (UsedElem{ids[i], 72}));
}

TYPED_TEST(DataplaneRx, empty_tap_gives_the_popped_buffer_back) {
  empty_tap_gives_every_popped_buffer_back(*this, false);
}

TYPED_TEST(DataplaneRx, empty_tap_gives_every_mergeable_buffer_back) {
  empty_tap_gives_every_popped_buffer_back(*this, true);
}

TYPED_TEST(DataplaneRx, readable_buffer_is_returned_empty_and_the_next_one_used) {
  this->start(kVersion1);
  const uint64_t gpa = this->ram_.alloc(1000);
  const uint16_t bad = this->ring_->add({{gpa, 1000, false}});
  const uint16_t good = this->offer(1000);
  this->tap_.send(tap_message(12, 60));

  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{bad, 0}, {good, 72}}));
  NetCounters c;
  c.rx_packets = 1;
  c.rx_bytes = 60;
  c.rx_malformed_chain = 1;
  c.interrupts = 1;
  EXPECT_EQ(this->counters_, c);
}

TYPED_TEST(DataplaneRx, buffer_shorter_than_the_header_is_returned_empty) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  this->without_gso();
  const uint16_t tiny = this->offer(11);
  const uint16_t good = this->offer(2000);
  this->tap_.send(tap_message(12, 60));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{tiny, 0}, {good, 72}}));
  EXPECT_EQ(this->counters_.rx_malformed_chain, 1u);
}

TYPED_TEST(DataplaneRx, buffer_popped_before_a_returned_one_cannot_be_rewound) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  this->without_gso();
  const uint16_t a = this->offer(1000);
  const uint64_t gpa = this->ram_.alloc(1000);
  const uint16_t bad = this->ring_->add({{gpa, 1000, false}});
  const uint16_t c = this->offer(1000);
  const uint16_t d = this->offer(1000);

  // Nothing to read: a went back before bad was returned, so it cannot be rewound and goes
  // back empty; c and d are rewound.
  ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{bad, 0}, {a, 0}}));
  NetCounters want;
  want.rx_malformed_chain = 1;
  want.rx_buffers_returned_empty = 1;
  want.interrupts = 1;
  EXPECT_EQ(this->counters_, want);

  this->tap_.send(tap_message(12, 1500));  // 1512: c and d
  r = this->forward();
  EXPECT_EQ(r.frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{c, 1000}, {d, 512}}));
}

TYPED_TEST(DataplaneRx, pinned_buffer_is_filled_first_when_a_frame_comes) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  this->without_gso();
  const uint16_t a = this->offer(1000);
  const uint64_t gpa = this->ram_.alloc(1000);
  const uint16_t bad = this->ring_->add({{gpa, 1000, false}});
  const uint16_t c = this->offer(2000);
  this->tap_.send(tap_message(12, 60));

  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{bad, 0}, {a, 72}}));
  EXPECT_EQ(this->counters_.rx_buffers_returned_empty, 0u);
  this->tap_.send(tap_message(12, 60));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{c, 72}}));
}

TYPED_TEST(DataplaneRx, batch_of_frames_gives_one_interrupt_and_suppression_none) {
  this->start(kVersion1);
  for (int i = 0; i < 6; ++i) this->offer(1526);
  for (int i = 0; i < 4; ++i) this->tap_.send(tap_message(12, 60, i));
  EXPECT_EQ(this->forward().frames, 4u);
  EXPECT_EQ(this->interrupts_signalled(), 1u);

  this->ring_->suppress_interrupts(true);
  for (int i = 0; i < 2; ++i) this->tap_.send(tap_message(12, 60, i));
  EXPECT_EQ(this->forward().frames, 2u);
  EXPECT_EQ(this->interrupts_signalled(), 0u);
  NetCounters c;
  c.rx_packets = 6;
  c.rx_bytes = 360;
  c.interrupts = 1;
  c.interrupts_suppressed = 1;
  EXPECT_EQ(this->counters_, c);
}

// Frames of several buffers fill a ring within one call: the driver must see them (and be
// notified) every quarter of the ring, not only when the call ends, or it refills nothing
// meanwhile.
TYPED_TEST(DataplaneRx, mergeable_frames_filling_the_ring_are_published_every_quarter_ring) {
  this->start(kVersion1 | kFeatureMrgRxbuf, 0, 16);
  this->without_gso(3000);
  std::vector<uint16_t> ids;
  for (int i = 0; i < 16; ++i) ids.push_back(this->offer(1000));
  for (int i = 0; i < 8; ++i) this->tap_.send(tap_message(12, 1500, i));  // 1512: two each

  EXPECT_EQ(this->forward().frames, 8u);
  const std::vector<UsedElem> used = this->ring_->take_all_used();
  ASSERT_EQ(used.size(), 16u);
  for (std::size_t i = 0; i < used.size(); ++i) {
    EXPECT_EQ(used[i], (UsedElem{ids[i], i % 2 == 0 ? 1000u : 512u}));
  }
  // 16 used entries published 4 at a time: 4 interrupts in one call.
  EXPECT_EQ(this->interrupts_signalled(), 4u);
  EXPECT_EQ(this->counters_.interrupts, 4u);
  EXPECT_EQ(this->counters_.rx_packets, 8u);
}

TYPED_TEST(DataplaneRx, budget_bounds_a_call) {
  this->start(kVersion1);
  this->session_.budget = 2;
  for (int i = 0; i < 4; ++i) this->offer(1526);
  for (int i = 0; i < 3; ++i) this->tap_.send(tap_message(12, 60, i));
  ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kBudget);
  EXPECT_EQ(r.frames, 2u);
  r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used().size(), 3u);
}

TYPED_TEST(DataplaneRx, runt_read_is_dropped) {
  this->start(kVersion1);
  const uint16_t id = this->offer(1526);
  this->tap_.send(tap_message(12, 13));  // shorter than an Ethernet header
  this->tap_.send(tap_message(12, 14));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 26}}));
  EXPECT_EQ(this->counters_.rx_dropped_runt, 1u);
}

// A 40 KB frame read while the guest is refilling (32 KiB posted, less than the largest
// frame) is kept, not dropped: tun cannot say how long a frame is before it is read, and a
// read cannot be undone. It is delivered first once the guest has posted enough.
TYPED_TEST(DataplaneRx, mergeable_frame_larger_than_a_refilling_pool_is_held_not_dropped) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  for (int i = 0; i < 8; ++i) this->offer(4096);
  const Bytes msg = tap_message(12, 40000);
  this->tap_.send(msg);

  ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kNoBuffers);
  EXPECT_EQ(r.frames, 0u);
  EXPECT_EQ(this->hold_.len, msg.size());
  EXPECT_TRUE(this->ring_->take_all_used().empty()) << "the 8 buffers went back unused";
  EXPECT_TRUE(this->ring_->kicks_requested(false));
  NetCounters c;
  c.no_rx_avail_buffer = 1;
  c.rx_frames_held = 1;
  EXPECT_EQ(this->counters_, c);

  // Nothing more while the guest has not posted enough.
  this->offer(4096);
  EXPECT_EQ(this->forward().status, ForwardStatus::kNoBuffers);
  EXPECT_TRUE(this->ring_->take_all_used().empty());

  // The guest refills and kicks: the held frame goes in first, from its first buffer on,
  // then the frame that waited in the TAP meanwhile.
  for (int i = 0; i < 8; ++i) this->offer(4096);
  this->tap_.send(tap_message(12, 100, 4));
  r = this->forward();
  EXPECT_EQ(r.frames, 2u);
  const std::vector<UsedElem> used = this->ring_->take_all_used();
  ASSERT_EQ(used.size(), 11u);  // 40012 bytes in 10 buffers of 4096, then 112 in one
  EXPECT_EQ(used.front(), (UsedElem{0, 4096}));
  EXPECT_EQ(used[9], (UsedElem{9, 40012 - 9 * 4096}));
  EXPECT_EQ(used[10], (UsedElem{10, 112}));
  Bytes got;
  for (uint16_t id = 0; id < 10; ++id) got = test::concat(got, this->buffer(id, used[id].len));
  Bytes want = msg;
  want[10] = std::byte{10};  // num_buffers
  EXPECT_EQ(got, want) << "delivered whole and unchanged";
  EXPECT_EQ(this->hold_.len, 0u);
  EXPECT_EQ(this->counters_.rx_dropped_too_big, 0u);
  EXPECT_EQ(this->counters_.rx_packets, 2u);
  EXPECT_EQ(this->counters_.rx_bytes, 40100u);
}

// Small frames do not wait for the guest to post 64 KiB: they go into what it posted.
TYPED_TEST(DataplaneRx, mergeable_small_frames_flow_while_the_guest_refills) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  for (int i = 0; i < 4; ++i) this->offer(4096);
  for (int i = 0; i < 3; ++i) this->tap_.send(tap_message(12, 100, i));
  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 3u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{0, 112}, {1, 112}, {2, 112}}));
  EXPECT_EQ(this->hold_.len, 0u);
  EXPECT_EQ(this->counters_.rx_frames_held, 0u);
}

// With a hold, a read needs guest buffers only for the size of recent frames (at least a
// full 1522-byte frame): after small frames, a 64 KB frame overflows into the hold and is
// delivered whole from there; from then on reads cover it again, until a long run of small
// frames brings the size back down.
TYPED_TEST(DataplaneRx, mergeable_reads_are_sized_to_recent_frames) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  for (int i = 0; i < 250; ++i) this->offer(4096);
  EXPECT_EQ(this->hold_.expect, 0u) << "nothing learnt: cover the largest frame";

  this->tap_.send(tap_message(12, 50));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->hold_.expect, 12u + 1522u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{0, 62}}));

  // The first large frame after small ones: read into one buffer and the hold, then
  // delivered from the hold into 16 buffers, unchanged.
  const Bytes big = tap_message(12, 65000, 7);
  this->tap_.send(big);
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->counters_.rx_frames_held, 1u);
  EXPECT_EQ(this->hold_.len, 0u);
  EXPECT_EQ(this->hold_.expect, big.size());
  std::vector<UsedElem> used = this->ring_->take_all_used();
  ASSERT_EQ(used.size(), 16u);  // 65012 bytes in 4096-byte buffers
  Bytes got;
  for (const UsedElem& u : used) got = test::concat(got, this->buffer(u.id, u.len));
  Bytes want = big;
  want[10] = std::byte{16};  // num_buffers
  EXPECT_EQ(got, want);

  // The next one is read straight into guest buffers.
  this->tap_.send(tap_message(12, 65000, 8));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->counters_.rx_frames_held, 1u);
  EXPECT_EQ(this->ring_->take_all_used().size(), 16u);

  // A small frame lowers the size by an eighth of the gap, not at once.
  this->tap_.send(tap_message(12, 50, 9));
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->hold_.expect, 65012u - (65012u - 1534u) / 8);
  // After enough of them it is back at a full-size frame.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 50; ++i) this->tap_.send(tap_message(12, 50, i));
    EXPECT_EQ(this->forward().frames, 50u);
  }
  EXPECT_EQ(this->hold_.expect, 12u + 1522u);
  EXPECT_EQ(this->counters_.rx_packets, 104u);
  EXPECT_EQ(this->counters_.rx_dropped_too_big, 0u);
}

// Without a hold (a caller that has none), such a frame is dropped and counted, as tun would.
TYPED_TEST(DataplaneRx, mergeable_frame_larger_than_the_pool_without_a_hold_is_dropped) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  for (int i = 0; i < 8; ++i) this->offer(4096);
  this->tap_.send(tap_message(12, 40000));
  const ForwardResult r = forward_rx(this->q_, this->tap_.tap.get(), this->call_.get(),
                                     this->session_, this->scratch_, this->counters_);
  EXPECT_EQ(r.frames, 0u);
  EXPECT_EQ(this->counters_.rx_dropped_too_big, 1u);
  EXPECT_EQ(this->tap_.waiting(), std::nullopt);
}

// A ring too small ever to hold the largest frame: the guest cannot add more, so vpd reads
// with what it has; frames that fit are delivered, one that does not is dropped and counted.
TYPED_TEST(DataplaneRx, mergeable_pool_holding_the_whole_ring_is_read_from) {
  this->start(kVersion1 | kFeatureMrgRxbuf, 0, 8);
  for (int i = 0; i < 8; ++i) this->offer(1000);
  this->tap_.send(tap_message(12, 20000));  // more than the whole ring
  this->tap_.send(tap_message(12, 1500, 2));

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 1u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{0, 1000}, {1, 512}}));
  EXPECT_EQ(this->counters_.rx_dropped_too_big, 1u);
  EXPECT_EQ(this->counters_.no_rx_avail_buffer, 0u);
  EXPECT_EQ(this->tap_.waiting(), std::nullopt);
}

TYPED_TEST(DataplaneRx, tap_error_is_reported_and_buffers_go_back) {
  this->start(kVersion1 | kFeatureMrgRxbuf);
  this->without_gso();
  const uint16_t id = this->offer(2000);
  this->tap_.peer.reset();  // the stand-in's "TAP went away": readv returns 0 (EOF)
  const ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kTapError);
  EXPECT_EQ(this->counters_.tap_read_fails, 1u);
  EXPECT_TRUE(this->ring_->take_all_used().empty());
  if constexpr (std::is_same_v<TypeParam, test::SplitRing>) {
    EXPECT_EQ(this->q_.vring_base(), 0u);
  }
  (void)id;
}

// rewind_popped on a packed ring across the wrap: the chains come back in order with the
// right wrap counter.
TEST(DataplaneRewind, packed_rewind_across_the_ring_end) {
  test::GuestRam ram;
  test::PackedRing ring(ram, 4);
  virtio::PackedQueue q;
  ASSERT_TRUE(q.configure(ram.memory, ring.config(0)).has_value());
  iovec iov[8];
  // Go round once so that the next chains straddle position 0.
  for (int i = 0; i < 3; ++i) {
    ring.add({{ram.alloc(64), 64, true}});
    auto chain = q.pop(iov);
    ASSERT_TRUE(chain.has_value());
    q.push_used(chain->head, 0);
  }
  q.publish_used();
  ring.take_all_used();
  const uint16_t x = ring.add({{ram.alloc(64), 64, true}});                             // slot 3
  const uint16_t y = ring.add({{ram.alloc(64), 64, true}, {ram.alloc(64), 64, true}});  // 0-1
  auto cx = q.pop(iov);
  auto cy = q.pop(iov);
  ASSERT_TRUE(cx && cy);
  EXPECT_EQ(q.next_avail(), 2u);
  EXPECT_FALSE(q.avail_wrap_counter());
  ASSERT_TRUE(rewind_popped(q, cx->head.slots + cy->head.slots));
  EXPECT_EQ(q.next_avail(), 3u);
  EXPECT_TRUE(q.avail_wrap_counter());
  auto again = q.pop(iov);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->head.id, x);
  again = q.pop(iov);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->head.id, y);
  EXPECT_EQ(again->head.slots, 2u);
  EXPECT_FALSE(rewind_popped(q, 5));  // more than the ring
}

}  // namespace
}  // namespace vp::dataplane
