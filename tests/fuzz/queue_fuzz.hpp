#pragma once

// Descriptor walking over a fuzzer-built guest memory, for the split and the packed ring
// (split_queue_fuzz.cpp, packed_queue_fuzz.cpp). The guest owns all of memory: rings,
// descriptors, indirect tables, and it may rewrite them between any two device steps. The
// device side plays a data plane: pop, touch every byte of every element (ASan sees each
// region as an exact heap block, so a translation past its end is caught), give back, publish,
// re-arm notifications, stop and restart the ring (GET/SET_VRING_BASE).
//
// Input: u16 size, u8 features, 3 x (u8 where, u16 offset) ring parts, u32 vring base,
// u8 iovec capacity, u16 image length + image (region A, then B), then operations (u8 op
// and its arguments) until the input ends.

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "fuzz_check.hpp"
#include "fuzz_input.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace vp::fuzz {

inline constexpr uint64_t kGpaA = 0x10000;
inline constexpr uint64_t kSizeA = 32 * 1024;
inline constexpr uint64_t kGpaB = 0x100000;  // a gap of unmapped guest-physical space before
inline constexpr uint64_t kSizeB = 16 * 1024;

struct FuzzRam {
  FuzzRam() : a(new std::byte[kSizeA]()), b(new std::byte[kSizeB]()) {
    FUZZ_CHECK(memory.add({kGpaA, kSizeA, 0x7f0000000000, a.get()}).has_value());
    FUZZ_CHECK(memory.add({kGpaB, kSizeB, 0x7f0000100000, b.get()}).has_value());
  }
  // Where a guest write at `offset` of the combined image lands.
  std::byte* image(uint32_t offset) noexcept {
    offset %= static_cast<uint32_t>(kSizeA + kSizeB);
    return offset < kSizeA ? a.get() + offset : b.get() + (offset - kSizeA);
  }
  uint32_t room(uint32_t offset) const noexcept {
    offset %= static_cast<uint32_t>(kSizeA + kSizeB);
    return static_cast<uint32_t>(offset < kSizeA ? kSizeA - offset : kSizeA + kSizeB - offset);
  }
  bool inside(const iovec& v) const noexcept {
    auto in = [&](const std::byte* base, uint64_t size) {
      const auto* p = static_cast<const std::byte*>(v.iov_base);
      return p >= base && p <= base + size && v.iov_len <= static_cast<size_t>(base + size - p);
    };
    return in(a.get(), kSizeA) || in(b.get(), kSizeB);
  }
  void write(uint32_t offset, std::span<const uint8_t> bytes) noexcept {
    const uint32_t n = bytes.size() < room(offset) ? static_cast<uint32_t>(bytes.size()) : room(offset);
    if (n) std::memcpy(image(offset), bytes.data(), n);
  }

  std::unique_ptr<std::byte[]> a;
  std::unique_ptr<std::byte[]> b;
  virtio::GuestMemory memory;
};

// A ring part's guest address: in A, in B, in the gap, or anything at all.
inline uint64_t ring_gpa(Input& in) {
  const uint8_t where = in.u8();
  const uint16_t offset = in.u16();
  switch (where & 3) {
    case 0:
      return kGpaA + offset % kSizeA;
    case 1:
      return kGpaB + offset % kSizeB;
    case 2:
      return kGpaA + kSizeA - (offset & 0xff);  // near A's end
    default:
      return (uint64_t{offset} << 48) | (uint64_t{where} << 8) | offset;
  }
}

inline volatile uint8_t sink;

template <class Queue>
void run_queue(const uint8_t* data, size_t size, bool packed) {
  Input in(data, size);
  FuzzRam ram;

  const uint16_t raw_size = in.u16();
  uint32_t qsize;
  if (raw_size & 0x8000) {
    qsize = raw_size & 0x7fff;  // anything, including 0 and non-powers of 2
  } else if (packed) {
    qsize = 1 + raw_size % 256;
  } else {
    qsize = 1u << (raw_size % 9);
  }
  const uint8_t feature_bits = in.u8();
  virtio::QueueConfig config;
  config.size = qsize;
  config.features = ((feature_bits & 1) ? virtio::kFeatureIndirectDesc : 0) |
                    ((feature_bits & 2) ? virtio::kFeatureEventIdx : 0) |
                    (packed ? virtio::kFeatureRingPacked : 0);
  config.desc_addr = ring_gpa(in);
  config.driver_addr = ring_gpa(in);
  config.device_addr = ring_gpa(in);
  const uint32_t base = in.u32();
  const size_t capacity = 1 + in.u8() % 64;
  const uint16_t image_len = in.u16();
  ram.write(0, in.bytes(image_len));

  Queue q;
  (void)q.set_vring_base(base);
  if (!q.configure(ram.memory, config)) return;

  std::vector<iovec> iov(capacity);
  struct InFlight {
    virtio::ChainHead head;
    uint32_t writable;
  };
  std::deque<InFlight> in_flight;
  bool last_was_pop = false;

  auto give_back_all = [&] {
    while (!in_flight.empty()) {
      const bool ok = q.push_used(in_flight.front().head, in_flight.front().writable);
      FUZZ_CHECK(ok || !q.ready());
      in_flight.pop_front();
    }
    q.publish_used();
    (void)q.needs_notification();
  };

  while (!in.empty()) {
    const uint8_t op = in.u8();
    bool popped = false;
    switch (op % 10) {
      case 0:
      case 1:
      case 2:
      case 3: {
        auto chain = q.pop(iov);
        if (!chain) break;
        popped = true;
        // The chain's spans are the caller's array, readable first, within capacity.
        FUZZ_CHECK(chain->readable.size() + chain->writable.size() <= capacity);
        FUZZ_CHECK(chain->readable.empty() || chain->readable.data() == iov.data());
        uint64_t readable = 0;
        uint64_t writable = 0;
        for (const iovec& v : chain->readable) {
          FUZZ_CHECK(ram.inside(v));
          readable += v.iov_len;
          const auto* p = static_cast<const uint8_t*>(v.iov_base);
          for (size_t i = 0; i < v.iov_len; ++i) sink = p[i];
        }
        for (const iovec& v : chain->writable) {
          FUZZ_CHECK(ram.inside(v));
          writable += v.iov_len;
          std::memset(v.iov_base, 0xab, v.iov_len);
        }
        FUZZ_CHECK(readable == chain->readable_bytes);
        FUZZ_CHECK(writable == chain->writable_bytes);
        in_flight.push_back({chain->head, chain->writable_bytes});
        break;
      }
      case 4:
        if (!in_flight.empty()) {
          const uint32_t len = in.u32();
          const InFlight f = in_flight.front();
          in_flight.pop_front();
          const bool ok = q.push_used(f.head, f.writable ? len % (f.writable + 1) : 0);
          FUZZ_CHECK(ok || !q.ready());
        }
        break;
      case 5:
        if (last_was_pop && !in_flight.empty()) {
          if (q.unpop()) in_flight.pop_back();
        }
        break;
      case 6:
        q.publish_used();
        (void)q.needs_notification();
        break;
      case 7:
        if (in.u8() & 1) {
          (void)q.enable_notifications();
        } else {
          q.disable_notifications();
        }
        break;
      case 8: {  // the guest writes memory between device steps
        const uint16_t offset = in.u16();
        const uint8_t len = in.u8();
        ram.write(offset, in.bytes(len));
        break;
      }
      case 9: {  // stop and restart, as GET_VRING_BASE then SET_VRING_BASE + start
        give_back_all();
        const uint32_t saved = q.vring_base();
        q.reset();
        (void)q.set_vring_base((in.u8() & 1) ? saved : in.u32());
        if (!q.configure(ram.memory, config)) return;
        break;
      }
    }
    last_was_pop = popped;
  }
  give_back_all();
}

}  // namespace vp::fuzz
