// Guest → TAP forwarding on split and packed rings, with a SOCK_SEQPACKET socketpair as the
// TAP, through writev (forward_tx) and through io_uring (forward_tx_uring): every test runs on
// both paths and holds for both. Each test asserts the counters (all of them, exactly), the
// used ring, and what did or did not reach the TAP.

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <csignal>

#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>

#include "dataplane/forward.hpp"
#include "dataplane/tx_uring.hpp"
#include "dataplane_rings.hpp"
#include "net/offloads.hpp"

namespace vp::dataplane {
namespace {

using test::Bytes;
using test::Elem;
using test::UsedElem;
namespace f = vp::net::feature;

constexpr uint64_t kVersion1 = 1ull << 32;

/// `Ring` driven through the io_uring path.
template <class Ring>
struct ViaUring : Ring {
  using Ring::Ring;
  static constexpr bool kUring = true;
  static constexpr const char* kName =
      std::is_same_v<Ring, test::SplitRing> ? "split_io_uring" : "packed_io_uring";
};

template <class Ring>
constexpr bool uses_uring = requires {
  Ring::kUring;
};

template <class Ring>
class DataplaneTx : public ::testing::Test {
 protected:
  void SetUp() override { call_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)); }

  /// Configures the queue with `ring_features` (EVENT_IDX...) and a session for `features`.
  void start(uint64_t features, uint64_t ring_features = 0, uint16_t size = 64) {
    ring_.emplace(ram_, size);
    ASSERT_TRUE(q_.configure(ram_.memory, ring_->config(ring_features)).has_value());
    session_ = make_net_session(features);
  }

  /// A chain whose readable bytes are `content`, cut into elements of the given sizes (the
  /// last one takes the rest).
  uint16_t offer(const Bytes& content, std::vector<std::size_t> cuts = {}) {
    std::vector<Elem> elems;
    std::size_t at = 0;
    for (std::size_t cut : cuts) {
      const uint64_t gpa = ram_.alloc(cut);
      ram_.write(gpa, test::slice(content, at, cut));
      elems.push_back({gpa, static_cast<uint32_t>(cut)});
      at += cut;
    }
    const std::size_t rest = content.size() - at;
    const uint64_t gpa = ram_.alloc(rest);
    ram_.write(gpa, test::slice(content, at, rest));
    elems.push_back({gpa, static_cast<uint32_t>(rest)});
    return ring_->add(elems);
  }

  ForwardResult forward(TxBucket* bucket = nullptr) {
    if constexpr (uses_uring<Ring>) {
      if (!uring_) {
        auto made = TxUring::create(tap_.tap.get());
        EXPECT_TRUE(made.has_value()) << made.error().message;
        if (!made) return {};
        uring_ = std::move(*made);
      }
      const ForwardResult r = forward_tx_uring(q_, *uring_, tap_.tap.get(), call_.get(), session_,
                                               scratch_, counters_, bucket);
      // The socketpair takes RWF_NOWAIT: every write completes within the call.
      EXPECT_EQ(uring_->in_flight(), 0u);
      return r;
    } else {
      return forward_tx(q_, tap_.tap.get(), call_.get(), session_, scratch_, counters_, bucket);
    }
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
  std::unique_ptr<TxUring> uring_;
};

using RingTypes = ::testing::Types<test::SplitRing, test::PackedRing, ViaUring<test::SplitRing>,
                                   ViaUring<test::PackedRing>>;
class RingNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};
TYPED_TEST_SUITE(DataplaneTx, RingTypes, RingNames);

TYPED_TEST(DataplaneTx, single_descriptor_frame_reaches_tap_unchanged) {
  this->start(kVersion1);
  const Bytes msg = test::concat(test::net_hdr(12), test::eth_frame(60));
  const uint16_t id = this->offer(msg);

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.frames, 1u);
  EXPECT_EQ(r.chains, 1u);
  EXPECT_EQ(this->tap_.receive(), msg);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}}));
  NetCounters want;
  want.tx_packets = 1;
  want.tx_bytes = 60;
  want.interrupts = 1;
  EXPECT_EQ(this->counters_, want);
  EXPECT_EQ(this->interrupts_signalled(), 1u);
}

TYPED_TEST(DataplaneTx, header_split_across_elements_is_sent_whole) {
  this->start(kVersion1);
  // 4 header bytes, then 8 header bytes + 10 frame bytes, then 3, then the rest.
  const Bytes msg = test::concat(test::net_hdr(12, 0, 0, 14), test::eth_frame(100, 2));
  const uint16_t id = this->offer(msg, {4, 18, 3});

  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->tap_.receive(), msg);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}}));
  EXPECT_EQ(this->counters_.tx_packets, 1u);
  EXPECT_EQ(this->counters_.tx_bytes, 100u);
}

// Frames that fit NetScratch::kTxFlatSize go out copied into one buffer, longer ones with a
// writev of the guest's elements: both arrive whole and in order, at the boundary too.
TYPED_TEST(DataplaneTx, frames_either_side_of_the_flat_copy_size_are_sent_whole) {
  this->start(kVersion1);
  const std::size_t flat = NetScratch::kTxFlatSize;
  std::vector<Bytes> sent;
  for (const std::size_t total : {flat - 1, flat, flat + 1, std::size_t{9000}}) {
    sent.push_back(
        test::concat(test::net_hdr(12), test::eth_frame(total - 12, static_cast<int>(total))));
    this->offer(sent.back(), {5, 700, 1000});  // header split, the frame in three more
  }
  EXPECT_EQ(this->forward().frames, 4u);
  for (const Bytes& msg : sent) EXPECT_EQ(this->tap_.receive(), msg);
  EXPECT_EQ(this->counters_.tx_packets, 4u);
  EXPECT_EQ(this->counters_.tx_bytes, 3 * flat + 9000 - 4 * 12);
  EXPECT_EQ(this->counters_.tap_write_fails, 0u);
}

TYPED_TEST(DataplaneTx, header_in_its_own_descriptor) {
  this->start(kVersion1);
  const Bytes msg = test::concat(test::net_hdr(12), test::eth_frame(1514, 3));
  const uint16_t id = this->offer(msg, {12});

  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->tap_.receive(), msg);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}}));
  EXPECT_EQ(this->counters_.tx_bytes, 1514u);
}

TYPED_TEST(DataplaneTx, legacy_ten_byte_header) {
  this->start(0);  // neither VERSION_1 nor MRG_RXBUF: 10-byte header
  ASSERT_EQ(this->session_.hdr_len, 10u);
  const Bytes msg = test::concat(test::net_hdr(10), test::eth_frame(64, 4));
  this->offer(msg, {10});

  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->tap_.receive(), msg);
  EXPECT_EQ(this->counters_.tx_bytes, 64u);
}

TYPED_TEST(DataplaneTx, needs_csum_inside_frame_is_sent) {
  this->start(kVersion1 | f::kCsum);
  // csum field at 58..59 of a 60-byte frame: the last position that fits.
  const Bytes msg = test::concat(test::net_hdr(12, 1, 0, 0, 0, 50, 8), test::eth_frame(60));
  const uint16_t id = this->offer(msg);

  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->tap_.receive(), msg);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}}));
  EXPECT_EQ(this->counters_.tx_packets, 1u);
}

TYPED_TEST(DataplaneTx, needs_csum_start_past_frame_is_dropped) {
  this->start(kVersion1 | f::kCsum);
  // csum_start + csum_offset + 2 = 61 > 60 (CVE-2024-11614: never trust csum_start).
  const uint16_t id =
      this->offer(test::concat(test::net_hdr(12, 1, 0, 0, 0, 51, 8), test::eth_frame(60)));
  const uint16_t id2 =
      this->offer(test::concat(test::net_hdr(12, 1, 0, 0, 0, 0xffff, 0xffff), test::eth_frame(60)));

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 0u);
  EXPECT_EQ(r.chains, 2u);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}, {id2, 0}}));
  NetCounters want;
  want.tx_dropped_bad_csum_offsets = 2;
  want.interrupts = 1;
  EXPECT_EQ(this->counters_, want);
}

TYPED_TEST(DataplaneTx, needs_csum_without_csum_feature_is_dropped) {
  this->start(kVersion1);
  const uint16_t id =
      this->offer(test::concat(test::net_hdr(12, 1, 0, 0, 0, 34, 6), test::eth_frame(60)));

  EXPECT_EQ(this->forward().frames, 0u);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}}));
  NetCounters want;
  want.tx_dropped_csum_not_negotiated = 1;
  want.interrupts = 1;
  EXPECT_EQ(this->counters_, want);
}

TYPED_TEST(DataplaneTx, gso_without_negotiation_is_dropped_and_with_it_sent) {
  this->start(kVersion1 | f::kCsum);  // no HOST_TSO4
  const Bytes tso = test::concat(test::net_hdr(12, 1, 1, 54, 1448, 34, 16), test::eth_frame(3000));
  const uint16_t id = this->offer(tso);
  EXPECT_EQ(this->forward().frames, 0u);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}}));
  EXPECT_EQ(this->counters_.tx_dropped_gso_not_negotiated, 1u);

  this->session_ = make_net_session(kVersion1 | f::kCsum | f::kHostTso4);
  this->offer(tso);
  EXPECT_EQ(this->forward().frames, 1u);
  EXPECT_EQ(this->tap_.receive(), tso);
  EXPECT_EQ(this->counters_.tx_packets, 1u);
  EXPECT_EQ(this->counters_.tx_dropped_gso_not_negotiated, 1u);
}

TYPED_TEST(DataplaneTx, short_long_and_writable_chains_are_dropped) {
  this->start(kVersion1);
  const uint16_t short_hdr = this->offer(test::net_hdr(11));
  const uint16_t runt = this->offer(test::concat(test::net_hdr(12), test::eth_frame(14)));
  const uint16_t no_eth = this->offer(test::concat(test::net_hdr(12), Bytes(13)));
  const uint64_t big = this->ram_.alloc(12 + kMaxFrameSize + 1);
  const uint16_t too_long = this->ring_->add({{big, 12 + kMaxFrameSize + 1}});
  const uint64_t w = this->ram_.alloc(100);
  this->ram_.write(w, test::concat(test::net_hdr(12), test::eth_frame(60)));
  const uint16_t writable = this->ring_->add({{w, 72}, {w + 80, 16, true}});

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 1u);  // the 14-byte frame: an Ethernet header and nothing else is fine
  EXPECT_EQ(r.chains, 5u);
  EXPECT_EQ(this->tap_.receive(), test::concat(test::net_hdr(12), test::eth_frame(14)));
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
  EXPECT_EQ(this->ring_->take_all_used(),
            (std::vector<UsedElem>{
                {short_hdr, 0}, {runt, 0}, {no_eth, 0}, {too_long, 0}, {writable, 0}}));
  NetCounters want;
  want.tx_packets = 1;
  want.tx_bytes = 14;
  want.tx_dropped_too_short = 2;
  want.tx_dropped_too_long = 1;
  want.tx_dropped_malformed_chain = 1;
  want.interrupts = 1;
  EXPECT_EQ(this->counters_, want);
}

TYPED_TEST(DataplaneTx, tap_full_rewinds_the_chain_until_the_tap_drains) {
  this->start(kVersion1);
  // Fill the socket until it refuses (EAGAIN), then offer two frames.
  const Bytes filler(1000);
  int queued = 0;
  while (::send(this->tap_.tap.get(), filler.data(), filler.size(), MSG_DONTWAIT) > 0) ++queued;
  ASSERT_GT(queued, 0);
  const Bytes a = test::concat(test::net_hdr(12), test::eth_frame(60, 1));
  const Bytes b = test::concat(test::net_hdr(12), test::eth_frame(60, 2));
  const uint16_t ida = this->offer(a);
  const uint16_t idb = this->offer(b);

  ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kTapFull);
  EXPECT_EQ(r.chains, 0u);
  EXPECT_TRUE(this->ring_->take_all_used().empty());
  NetCounters want;
  want.tx_tap_full = 1;
  EXPECT_EQ(this->counters_, want);
  EXPECT_EQ(this->interrupts_signalled(), 0u);

  // The worker waits for EPOLLOUT; the peer drains; the same chains go out, in order.
  for (int i = 0; i < queued; ++i) ASSERT_EQ(this->tap_.receive(), filler);
  r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.frames, 2u);
  EXPECT_EQ(this->tap_.receive(), a);
  EXPECT_EQ(this->tap_.receive(), b);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{ida, 0}, {idb, 0}}));
  want.tx_packets = 2;
  want.tx_bytes = 120;
  want.interrupts = 1;
  EXPECT_EQ(this->counters_, want);
}

TYPED_TEST(DataplaneTx, batch_gives_one_interrupt) {
  this->start(kVersion1);
  for (int i = 0; i < 5; ++i) this->offer(test::concat(test::net_hdr(12), test::eth_frame(60, i)));

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 5u);
  EXPECT_EQ(this->ring_->take_all_used().size(), 5u);
  EXPECT_EQ(this->counters_.interrupts, 1u);
  EXPECT_EQ(this->interrupts_signalled(), 1u);  // eventfd written once, not five times
}

TYPED_TEST(DataplaneTx, driver_suppressed_interrupts_are_not_sent) {
  this->start(kVersion1);
  this->ring_->suppress_interrupts(true);
  for (int i = 0; i < 3; ++i) this->offer(test::concat(test::net_hdr(12), test::eth_frame(60, i)));

  EXPECT_EQ(this->forward().frames, 3u);
  EXPECT_EQ(this->ring_->take_all_used().size(), 3u);
  NetCounters want;
  want.tx_packets = 3;
  want.tx_bytes = 180;
  want.interrupts_suppressed = 1;
  EXPECT_EQ(this->counters_, want);
  EXPECT_EQ(this->interrupts_signalled(), 0u);
}

TYPED_TEST(DataplaneTx, event_idx_interrupts_only_when_used_event_is_passed) {
  this->start(kVersion1, virtio::kFeatureEventIdx);
  // The first batch of a session has no history to judge against and always interrupts.
  this->offer(test::concat(test::net_hdr(12), test::eth_frame(60, 9)));
  EXPECT_EQ(this->forward().frames, 1u);  // entry 0
  EXPECT_EQ(this->interrupts_signalled(), 1u);

  this->ring_->set_used_event(3);  // interrupt once entry 3 is written
  for (int i = 0; i < 2; ++i) this->offer(test::concat(test::net_hdr(12), test::eth_frame(60, i)));
  EXPECT_EQ(this->forward().frames, 2u);  // entries 1, 2
  EXPECT_EQ(this->interrupts_signalled(), 0u);

  for (int i = 0; i < 3; ++i) this->offer(test::concat(test::net_hdr(12), test::eth_frame(60, i)));
  EXPECT_EQ(this->forward().frames, 3u);  // entries 3, 4, 5: passes 3
  EXPECT_EQ(this->interrupts_signalled(), 1u);

  NetCounters want;
  want.tx_packets = 6;
  want.tx_bytes = 360;
  want.interrupts = 2;
  want.interrupts_suppressed = 1;
  EXPECT_EQ(this->counters_, want);
  EXPECT_TRUE(this->ring_->kicks_requested(true));
}

TYPED_TEST(DataplaneTx, budget_bounds_a_call_and_the_rest_follows) {
  this->start(kVersion1);
  this->session_.budget = 3;
  for (int i = 0; i < 5; ++i) this->offer(test::concat(test::net_hdr(12), test::eth_frame(60, i)));

  ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kBudget);
  EXPECT_EQ(r.frames, 3u);
  EXPECT_EQ(this->ring_->take_all_used().size(), 3u);
  r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.frames, 2u);
  EXPECT_EQ(this->ring_->take_all_used().size(), 2u);
  EXPECT_EQ(this->counters_.tx_packets, 5u);
  EXPECT_EQ(this->counters_.interrupts, 2u);
}

TYPED_TEST(DataplaneTx, idle_queue_asks_for_kicks) {
  this->start(kVersion1);
  EXPECT_EQ(this->forward().status, ForwardStatus::kIdle);
  EXPECT_TRUE(this->ring_->kicks_requested(false));
  EXPECT_EQ(this->counters_, NetCounters{});
}

TYPED_TEST(DataplaneTx, tap_write_failure_drops_and_returns_the_chain) {
  this->start(kVersion1);
  // A TAP has no SIGPIPE; the socket stand-in does. Writes now fail with EPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  this->tap_.peer.reset();
  const uint16_t id = this->offer(test::concat(test::net_hdr(12), test::eth_frame(60)));
  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 0u);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}}));
  EXPECT_EQ(this->counters_.tap_write_fails, 1u);
}

TYPED_TEST(DataplaneTx, disabled_ring_gives_every_chain_back_and_nothing_reaches_the_tap) {
  this->start(kVersion1);
  this->session_.budget = 3;
  std::vector<uint16_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(this->offer(test::concat(test::net_hdr(12), test::eth_frame(60, i))));
  }
  ForwardResult r =
      discard_tx(this->q_, this->call_.get(), this->session_, this->scratch_, this->counters_);
  EXPECT_EQ(r.status, ForwardStatus::kBudget);
  EXPECT_EQ(r.frames, 0u);
  EXPECT_EQ(r.chains, 3u);
  r = discard_tx(this->q_, this->call_.get(), this->session_, this->scratch_, this->counters_);
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.chains, 2u);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
  EXPECT_EQ(
      this->ring_->take_all_used(),
      (std::vector<UsedElem>{{ids[0], 0}, {ids[1], 0}, {ids[2], 0}, {ids[3], 0}, {ids[4], 0}}));
  EXPECT_TRUE(this->ring_->kicks_requested(false));
  NetCounters want;
  want.tx_dropped_ring_disabled = 5;
  want.interrupts = 2;
  EXPECT_EQ(this->counters_, want);
}

TYPED_TEST(DataplaneTx, lock_mac_sends_only_frames_from_the_guest_mac_and_the_checked_bytes) {
  this->start(kVersion1);
  this->session_.lock_mac = true;
  this->session_.guest_mac = {0x02, 0, 0, 0, 0, 0x01};  // eth_frame()'s source
  const Bytes good = test::concat(test::net_hdr(12), test::eth_frame(60, 1));
  Bytes spoofed = test::concat(test::net_hdr(12), test::eth_frame(60, 2));
  spoofed[12 + 11] = std::byte{0x02};  // source 02:00:00:00:00:02: another host
  // The header and the addresses split over descriptors every way the guest may cut them.
  const uint16_t a = this->offer(good, {5, 12, 3});
  const uint16_t b = this->offer(spoofed, {17});
  const uint16_t c = this->offer(good, {24});

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.frames, 2u);
  EXPECT_EQ(this->tap_.receive(), good);
  EXPECT_EQ(this->tap_.receive(), good);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{a, 0}, {b, 0}, {c, 0}}));
  EXPECT_EQ(this->counters_.tx_dropped_spoofed_mac, 1u);
  EXPECT_EQ(this->counters_.tx_packets, 2u);
}

// The io_uring path only: what a slot cannot hold, and stopping with chains held.
using BothRings = ::testing::Types<test::SplitRing, test::PackedRing>;
template <class Ring>
class DataplaneTxUring : public DataplaneTx<ViaUring<Ring>> {};
TYPED_TEST_SUITE(DataplaneTxUring, BothRings, RingNames);

TYPED_TEST(DataplaneTxUring, chain_longer_than_a_slot_goes_out_in_order_with_writev) {
  this->start(kVersion1);
  const Bytes a = test::concat(test::net_hdr(12), test::eth_frame(60, 1));
  const Bytes b = test::concat(test::net_hdr(12), test::eth_frame(400, 2));
  const Bytes c = test::concat(test::net_hdr(12), test::eth_frame(60, 3));
  const uint16_t ida = this->offer(a);
  // 40 elements of 10 bytes, then the rest: more than a TxUring slot's 32 iovecs.
  const uint16_t idb = this->offer(b, std::vector<std::size_t>(40, 10));
  const uint16_t idc = this->offer(c);

  const ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.frames, 3u);
  EXPECT_EQ(this->tap_.receive(), a);
  EXPECT_EQ(this->tap_.receive(), b);
  EXPECT_EQ(this->tap_.receive(), c);
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{ida, 0}, {idb, 0}, {idc, 0}}));
  NetCounters want;
  want.tx_packets = 3;
  want.tx_bytes = 520;
  want.interrupts = 1;
  EXPECT_EQ(this->counters_, want);
}

TYPED_TEST(DataplaneTxUring, stop_with_a_frame_waiting_for_room_gives_its_chain_back_counted) {
  this->start(kVersion1);
  const Bytes filler(1000);
  int queued = 0;
  while (::send(this->tap_.tap.get(), filler.data(), filler.size(), MSG_DONTWAIT) > 0) ++queued;
  ASSERT_GT(queued, 0);
  const uint16_t id = this->offer(test::concat(test::net_hdr(12), test::eth_frame(60, 1)));

  ForwardResult r = this->forward();
  EXPECT_EQ(r.status, ForwardStatus::kTapFull);
  EXPECT_EQ(this->uring_->waiting(), 1u);
  EXPECT_FALSE(this->uring_->idle());
  EXPECT_TRUE(this->ring_->take_all_used().empty());

  // The ring stops (GET_VRING_BASE) before the TAP drains: the chain goes back unsent.
  drain_tx_uring(this->q_, *this->uring_, this->call_.get(), this->counters_);
  EXPECT_TRUE(this->uring_->idle());
  EXPECT_EQ(this->ring_->take_all_used(), (std::vector<UsedElem>{{id, 0}}));
  NetCounters want;
  want.tx_tap_full = 1;
  want.tap_write_fails = 1;
  want.interrupts = 1;
  EXPECT_EQ(this->counters_, want);
  for (int i = 0; i < queued; ++i) ASSERT_EQ(this->tap_.receive(), filler);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
}

TEST(DataplaneTxStopped, unconfigured_queue_reports_stopped) {
  virtio::SplitQueue q;
  NetScratch scratch;
  NetCounters c;
  EXPECT_EQ(forward_tx(q, -1, -1, NetSession{}, scratch, c).status, ForwardStatus::kQueueStopped);
  EXPECT_EQ(c, NetCounters{});
}

// tx-rate=: an empty bucket leaves the chains in the ring (back-pressure); a refill lets
// them go, each frame spending its Ethernet bytes.
TYPED_TEST(DataplaneTx, empty_bucket_leaves_chains_in_the_ring_until_a_refill) {
  this->start(kVersion1);
  // 8000 bytes/s: the bucket holds one largest frame (kMaxFrameSize bytes), less than three
  // 30000-byte frames.
  TxBucket bucket;
  bucket.configure(8'000, 0, 0);
  const Bytes big = test::concat(test::net_hdr(12), test::eth_frame(30'000));
  for (int i = 0; i < 4; ++i) this->offer(big);

  ForwardResult r = this->forward(&bucket);
  EXPECT_EQ(r.status, ForwardStatus::kThrottled);
  // Frames go while the bucket is not empty: 30000, 60000, then a third one takes it below 0.
  EXPECT_EQ(r.frames, 3u);
  EXPECT_EQ(this->counters_.tx_packets, 3u);
  EXPECT_TRUE(bucket.empty());
  EXPECT_EQ(this->ring_->take_all_used().size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(this->tap_.receive(), big);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);

  // Still empty: nothing more leaves, nothing is dropped.
  r = this->forward(&bucket);
  EXPECT_EQ(r.status, ForwardStatus::kThrottled);
  EXPECT_EQ(r.chains, 0u);
  EXPECT_EQ(this->tap_.receive(), std::nullopt);
  EXPECT_GT(bucket.refill_wait_ns(), 1'000'000'000u) << "tens of kB at 8 kB/s take seconds";

  // A second's worth of tokens is not enough (the bucket is ~25 kB in debt); ten are.
  bucket.refill(1'000'000'000);
  EXPECT_EQ(this->forward(&bucket).status, ForwardStatus::kThrottled);
  for (uint64_t s = 2; s <= 12; ++s) bucket.refill(s * 1'000'000'000);
  r = this->forward(&bucket);
  EXPECT_EQ(r.status, ForwardStatus::kIdle);
  EXPECT_EQ(r.frames, 1u);
  EXPECT_EQ(this->tap_.receive(), big);
  NetCounters want;
  want.tx_packets = 4;
  want.tx_bytes = 4 * 30'000;
  want.interrupts = this->counters_.interrupts;
  want.interrupts_suppressed = this->counters_.interrupts_suppressed;
  EXPECT_EQ(this->counters_, want) << "nothing dropped";
}

// A packet-rate bucket counts frames, whatever their size.
TYPED_TEST(DataplaneTx, packet_bucket_lets_its_burst_go_then_holds_the_rest) {
  this->start(kVersion1);
  TxBucket bucket;
  bucket.configure(0, 1'000, 0);  // 1000 pps: 5 ms is 5 packets, the minimum burst 8
  const Bytes msg = test::concat(test::net_hdr(12), test::eth_frame(60));
  for (int i = 0; i < 12; ++i) this->offer(msg);
  ForwardResult r = this->forward(&bucket);
  EXPECT_EQ(r.status, ForwardStatus::kThrottled);
  EXPECT_EQ(r.frames, TxBucket::kMinBurstPackets);
  bucket.refill(4'000'000);  // 4 ms: 4 packets
  r = this->forward(&bucket);
  EXPECT_EQ(r.frames, 4u);
  EXPECT_EQ(this->counters_.tx_packets, 12u);
}

}  // namespace
}  // namespace vp::dataplane
